"""The chunk-server serves only chunk files inside its store, and verifies them when asked.

A real ``pycasync chunk-server`` subprocess over a store where one chunk name
is a symlink to /etc/passwd, one an empty file, one a truncated chunk and one
another chunk's content, one a 20 GB sparse file and one a FIFO. The
symlink, the sparse file and the FIFO never get a 200 (in any mode, with the
server's peak RSS bounded and no hang; /etc/passwd is never in a body); the damaged ones get no 200 with
``--skip-verify-read=false`` (desync answers 500); good chunks always get a
200 with the stored bytes. Behind a cache, a damaged cached copy is replaced
from the upstream store when verifying.
"""

from __future__ import annotations

import http.client
import os

import pytest

from casync_format import compress
from tests.support.cli import Server, ok

BAD = ["symlink", "empty", "truncated", "other", "sparse", "fifo"]
NOT_FILES = ("symlink", "sparse", "fifo")  # refused before a byte is read, in every mode


def _files(store: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(store) for n in names if n.endswith(".cacnk"))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def hostile(env: dict[str, str], tmp_path: os.PathLike[str]) -> tuple[str, dict[str, str], list[str]]:
    """(store, {kind: chunk id} of the planted entries, ids of the untouched good chunks)."""
    src, store, index = (os.path.join(tmp_path, n) for n in ("blob", "store", "blob.caibx"))
    with open(src, "wb") as f:
        f.write(os.urandom(300_000))
    ok(env, "make", "-s", store, "-m", "4:16:64", index, src)
    files = _files(store)
    assert len(files) >= len(BAD) + 3
    planted: dict[str, str] = {}
    for kind, path in zip(BAD, files):
        planted[kind] = os.path.basename(path)[:64]
        if kind == "symlink":
            os.unlink(path)
            os.symlink("/etc/passwd", path)
        elif kind == "sparse":
            os.truncate(path, 20 << 30)
        elif kind == "fifo":
            os.unlink(path)
            os.mkfifo(path)
        elif kind == "empty":
            open(path, "wb").close()
        elif kind == "truncated":
            blob = _read(path)
            with open(path, "wb") as f:
                f.write(blob[: len(blob) - 9])
        else:
            blob = _read(files[-1])
            with open(path, "wb") as f:
                f.write(blob)
    good = [os.path.basename(p)[:64] for p in files[len(BAD):]]
    return store, planted, good


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _path(chunk: str, uncompressed: bool) -> str:
    return f"/{chunk[:4]}/{chunk}" + ("" if uncompressed else ".cacnk")


@pytest.mark.parametrize("flags", [[], ["--skip-verify-read=false"], ["--skip-verify-read"],
                                   ["-u"], ["-u", "--skip-verify-read=false"]], ids=" ".join)
def test_chunk_server_serves_only_valid_chunk_files(
    env: dict[str, str], hostile: tuple[str, dict[str, str], list[str]], flags: list[str]
) -> None:
    store, planted, good = hostile
    uncompressed = "-u" in flags
    verifying = "--skip-verify-read=false" in flags or (uncompressed and "--skip-verify-read" not in flags)
    passwd = _read("/etc/passwd")
    server = Server(env, "-s", store, *flags)
    try:
        for chunk in good:
            status, body = _get(server.port, _path(chunk, uncompressed))
            assert status == 200
            stored = _read(os.path.join(store, chunk[:4], chunk + ".cacnk"))
            assert body == (compress.decompress(stored, 1 << 20) if uncompressed else stored)
        for kind in NOT_FILES:
            status, body = _get(server.port, _path(planted[kind], uncompressed))
            assert status == 500 and passwd[:32] not in body, kind
            status, _ = _get(server.port, _path(planted[kind], uncompressed), "HEAD")
            assert status == 404, kind  # no chunk file is there
        assert _peak_rss_kib(server.proc.pid) < 300 * 1024
        for kind in ("empty", "truncated", "other"):
            status, _ = _get(server.port, _path(planted[kind], uncompressed))
            if verifying:
                assert status == 500, kind
            else:
                assert status == 200, kind  # desync's default: served as stored
    finally:
        assert server.stop() == 0


def test_verifying_caching_proxy_replaces_a_damaged_cached_chunk(
    env: dict[str, str], tmp_path: os.PathLike[str], hostile: tuple[str, dict[str, str], list[str]]
) -> None:
    store, _planted, good = hostile
    cache = os.path.join(tmp_path, "cache")
    chunk = good[0]
    name = os.path.join(chunk[:4], chunk + ".cacnk")
    os.makedirs(os.path.join(cache, chunk[:4]))
    with open(os.path.join(cache, name), "wb") as f:
        f.write(_read(os.path.join(store, name)) + b"junk")
    linked = good[1]
    os.makedirs(os.path.join(cache, linked[:4]), exist_ok=True)
    os.symlink("/etc/passwd", os.path.join(cache, linked[:4], linked + ".cacnk"))
    server = Server(env, "-s", store, "-c", cache, "--skip-verify-read=false")
    try:
        for cid in (chunk, linked):
            status, body = _get(server.port, _path(cid, False))
            assert status == 200 and body == _read(os.path.join(store, cid[:4], cid + ".cacnk"))
    finally:
        assert server.stop() == 0
    assert _read(os.path.join(cache, name)) == _read(os.path.join(store, name))  # repaired
    assert not os.path.islink(os.path.join(cache, linked[:4], linked + ".cacnk"))
