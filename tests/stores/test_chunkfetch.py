"""The fetch accelerator (``fetch_chunk_file``, :data:`casync_store.stores._chunkfile.fetch`).

It reads, decompresses, verifies and writes one chunk in one C call, and must
take only the path where everything is right: a verified chunk is written
byte for byte, an all-zero one is skipped when asked, and every other case (a
missing, linked, oversized or non-regular file, a blob that is not a zstd
frame of the index's size, a digest that differs, a failing write) returns a
nonzero step with nothing written, so extract's Python path decides and
reports. End to end, ``pycasync extract`` gives the same output, statistics
and errors with the accelerator and with ``PYCASYNC_PUREPYTHON=1``. The C half
skips where the extension lacks the function (built without libzstd's or
OpenSSL's headers) and fails under ``PYCASYNC_REQUIRE_C=1``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from casync_format import _accel, compress
from casync_format.digest import SHA256, SHA512_256
from casync_store.stores import _chunkfile
from casync_store.stores.local import MAX_CHUNK_FILE, LocalStore
from tests.support import rng_bytes
from tests.support.cli import ok, run

__all__: list[str] = []

C = _accel.c_module("chunk-fetch")
SENTINEL = b"\xa5"


def _fetch() -> Any:
    if C is None or compress.ZSTD_BACKEND is None:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but casync_format._chunker lacks fetch_chunk_file")
        pytest.skip("fetch_chunk_file is not built (or no zstd binding to make test chunks)")
    return C.fetch_chunk_file


def test_bound_to_c_when_built() -> None:
    assert _chunkfile.fetch is (None if C is None else C.fetch_chunk_file)
    assert {SHA512_256.name: 1, SHA256.name: 2} == _chunkfile.DIGEST_ALGOS


@pytest.fixture()
def target(tmp_path: Path) -> int:
    """An output file of sentinel bytes, open for writing."""
    path = tmp_path / "out"
    path.write_bytes(SENTINEL * 300_000)
    fd = os.open(path, os.O_RDWR)
    yield fd
    os.close(fd)


def _put(directory: Path, name: str, blob: bytes) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_bytes(blob)


def _region(fd: int, offset: int, size: int) -> bytes:
    return os.pread(fd, size, offset)


def test_writes_the_verified_chunk(tmp_path: Path, target: int) -> None:
    fetch = _fetch()
    data = rng_bytes(70_000, 5)
    blob = compress.compress(data, "zstd")
    _put(tmp_path / "abcd", "c.cacnk", blob)
    for algo, digest in ((1, SHA512_256), (2, SHA256)):
        os.pwrite(target, SENTINEL * len(data), 1000)
        got = fetch(str(tmp_path / "abcd"), "c.cacnk", MAX_CHUNK_FILE, len(data), digest(data), algo, target,
                    1000, False)
        assert got == (0, len(data), len(blob))
        assert _region(target, 1000, len(data)) == data
        assert _region(target, 0, 1000) == SENTINEL * 1000  # nothing outside the chunk's place
        assert _region(target, 1000 + len(data), 10) == SENTINEL * 10
    # algo 0 (a store set to skip verification) takes any id
    assert fetch(str(tmp_path / "abcd"), "c.cacnk", MAX_CHUNK_FILE, len(data), bytes(32), 0, target, 0,
                 False)[0] == 0


def test_zero_chunk_skipped_only_when_asked(tmp_path: Path, target: int) -> None:
    fetch = _fetch()
    zero = bytes(65536)
    blob = compress.compress(zero, "zstd")
    _put(tmp_path / "abcd", "z.cacnk", blob)
    args = (str(tmp_path / "abcd"), "z.cacnk", MAX_CHUNK_FILE, len(zero), SHA512_256(zero), 1, target, 5)
    assert fetch(*args, True) == (0, 0, len(blob))
    assert _region(target, 5, len(zero)) == SENTINEL * len(zero)
    assert fetch(*args, False) == (0, len(zero), len(blob))
    assert _region(target, 5, len(zero)) == zero


def _cases(root: Path) -> dict[str, tuple[str, str, int, bytes, int]]:
    """name -> (directory, file, size, id, expected step) of every case that must not be written."""
    data = rng_bytes(20_000, 9)
    good = compress.compress(data, "zstd")
    other = rng_bytes(20_000, 10)
    d = root / "abcd"
    _put(d, "good.cacnk", good)
    _put(d, "other.cacnk", compress.compress(other, "zstd"))  # a valid frame of another chunk's data
    _put(d, "truncated.cacnk", good[: len(good) // 2])
    _put(d, "gzip.cacnk", compress.compress(data, "gzip"))
    _put(d, "empty.cacnk", b"")
    _put(d, "trailing.cacnk", good + b"junk")
    _put(d, "big.cacnk", b"\0" * 5000)
    (d / "dir.cacnk").mkdir()
    os.mkfifo(d / "fifo.cacnk")
    os.symlink("good.cacnk", d / "link.cacnk")
    os.symlink("abcd", root / "linkdir")
    cid = SHA512_256(data)
    return {
        "missing": (str(d), "nope.cacnk", len(data), cid, 2),
        "no directory": (str(root / "ffff"), "good.cacnk", len(data), cid, 1),
        "linked directory": (str(root / "linkdir"), "good.cacnk", len(data), cid, 1),
        "link": (str(d), "link.cacnk", len(data), cid, 2),
        "directory": (str(d), "dir.cacnk", len(data), cid, 3),
        "fifo": (str(d), "fifo.cacnk", len(data), cid, 3),
        "oversized": (str(d), "big.cacnk", len(data), cid, 4),
        "other chunk": (str(d), "other.cacnk", len(data), cid, 7),
        "shorter than the index says": (str(d), "good.cacnk", len(data) + 1, cid, 6),
        "longer than the index says": (str(d), "good.cacnk", len(data) - 1, cid, 6),
        "truncated frame": (str(d), "truncated.cacnk", len(data), cid, 6),
        "not zstd": (str(d), "gzip.cacnk", len(data), cid, 6),
        "empty": (str(d), "empty.cacnk", len(data), cid, 6),
        "trailing bytes": (str(d), "trailing.cacnk", len(data), cid, 6),
    }


def test_every_other_case_writes_nothing(tmp_path: Path, target: int) -> None:
    fetch = _fetch()
    cases = _cases(tmp_path)
    for name, (directory, file, size, cid, step) in cases.items():
        got = fetch(directory, file, 4096 if name == "oversized" else MAX_CHUNK_FILE, size, cid, 1, target, 7,
                    False)
        assert got[0] == step and got[1] == 0, name
        assert _region(target, 0, 30_000) == SENTINEL * 30_000, name
    directory, file, size, cid, _ = cases["missing"]
    good = (directory, "good.cacnk", MAX_CHUNK_FILE, size, cid, 1)
    read_only = os.open(os.devnull, os.O_RDONLY)
    try:
        assert fetch(*good, read_only, 0, False)[0] == 8  # the write fails
    finally:
        os.close(read_only)
    assert fetch(*good, target, 7, False)[0] == 0


@pytest.mark.parametrize("bad", [{"size": 0}, {"offset": -1}, {"cid": b"x" * 31}, {"algo": 3}, {"limit": -1}])
def test_bad_arguments_raise(tmp_path: Path, target: int, bad: dict[str, Any]) -> None:
    fetch = _fetch()
    args = {"limit": MAX_CHUNK_FILE, "size": 10, "cid": bytes(32), "algo": 1, "offset": 0, **bad}
    with pytest.raises(ValueError, match="fetch_chunk_file"):
        fetch(str(tmp_path), "x", args["limit"], args["size"], args["cid"], args["algo"], target,
              args["offset"], False)


def test_threads_each_get_their_own_context(tmp_path: Path, target: int) -> None:
    """Eight threads decompressing at once (one zstd context per thread) write every chunk right."""
    fetch = _fetch()
    chunks = [rng_bytes(4000 + 97 * i, 100 + i) for i in range(40)]
    for i, data in enumerate(chunks):
        _put(tmp_path / "abcd", f"{i}.cacnk", compress.compress(data, "zstd"))
    offsets = [sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
    failures: list[object] = []

    def worker(k: int) -> None:
        for _ in range(5):
            for i in range(k, len(chunks), 8):
                got = fetch(str(tmp_path / "abcd"), f"{i}.cacnk", MAX_CHUNK_FILE, len(chunks[i]),
                            SHA512_256(chunks[i]), 1, target, offsets[i], False)
                if got[0] != 0:
                    failures.append((i, got))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert _region(target, 0, offsets[-1] + len(chunks[-1])) == b"".join(chunks)


class _CountingStore(LocalStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.raw_reads = 0

    def get_raw(self, chunk_id: bytes) -> bytes:
        self.raw_reads += 1
        return super().get_raw(chunk_id)


def test_a_subclass_with_its_own_read_path_is_not_bypassed(tmp_path: Path, target: int) -> None:
    data = rng_bytes(5000, 1)
    plain, counting = LocalStore(str(tmp_path / "s")), _CountingStore(str(tmp_path / "s"))
    plain.put_raw(SHA512_256(data), compress.compress(data, "zstd") if compress.ZSTD_BACKEND else b"")
    assert counting.fetch_into(SHA512_256(data), SHA512_256, len(data), target, 0, False) is None
    assert LocalStore(str(tmp_path / "s"), uncompressed=True).fetch_into(
        SHA512_256(data), SHA512_256, len(data), target, 0, False) is None
    expected = None if _chunkfile.fetch is None else (len(data), plain, -1)
    got = plain.fetch_into(SHA512_256(data), SHA512_256, len(data), target, 0, False)
    assert (got if got is None else (got[0], got[1], -1)) == expected


def _extract_both(tmp_path: Path, store: str, index: str) -> dict[str, Any]:
    """``pycasync extract`` with the accelerator and with PYCASYNC_PUREPYTHON=1.

    Per run: the exit status, the statistics (or the error), the output's hash.
    """
    runs = {}
    for label, extra in (("c", {}), ("python", {"PYCASYNC_PUREPYTHON": "1"})):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
        env.update(extra)
        out = tmp_path / f"out-{label}"
        proc = run(env, "extract", "-s", store, "--print-stats", index, str(out))
        output = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else None
        if proc.returncode == 0:  # --print-stats: the statistics as JSON
            said = json.loads(proc.stdout)
            said.pop("seconds", None)
        else:
            said = proc.stderr.decode().replace(str(out), "OUT")
        runs[label] = (proc.returncode, said, output)
    return runs


def test_extract_same_with_and_without_the_accelerator(tmp_path: Path) -> None:
    data = rng_bytes(600_000, 4) + bytes(300_000) + rng_bytes(600_000, 4)  # repeats and zeros too
    (tmp_path / "blob").write_bytes(data)
    store, index = str(tmp_path / "store"), str(tmp_path / "blob.caibx")
    ok(dict(os.environ), "make", "-s", store, "-m", "16:64:256", index, str(tmp_path / "blob"))
    runs = _extract_both(tmp_path, store, index)
    assert runs["c"] == runs["python"]
    assert runs["c"][0] == 0 and runs["c"][2] == hashlib.sha256(data).hexdigest()
    assert runs["c"][1]["chunks-from-store"] > 5
    # One chunk file swapped for another's: both stop with the same one-line error and leave the
    # earlier output as it was.
    files = sorted(Path(store).rglob("*.cacnk"))
    files[0].write_bytes(files[1].read_bytes())
    runs = _extract_both(tmp_path, store, index)
    assert runs["c"] == runs["python"]
    code, stderr, output = runs["c"]
    assert code == 1 and output == hashlib.sha256(data).hexdigest()
    assert files[0].stem in stderr and len(stderr.strip().splitlines()) == 1
