"""desync's own command test cases (``cmd/desync/*_test.go``), run against pycasync's CLI.

Each row is one case of desync's tests with its arguments unchanged (paths
relative to desync's ``testdata``, here ``tests/data/desync``, see its
README), run as a ``pycasync`` subprocess in that directory, and checked as
desync's test checks it, or more strictly where the answer is known (the
exact bytes of ``cat``, the exact JSON of ``info`` and ``inspect-chunks``, the
chunk sets ``cache`` and ``chop`` write). The seed rows of ``extract_test.go``
are in ``test_cli_seeds.py``, its other rows here. Not here: desync's Go-internal tests (config and
option parsing, credentials, location matching), which call functions, not
commands. Every row runs and must pass; none is marked xfail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

import pytest

from tests.support import CLI, DATA_DIR
from tests.support.cli import Server, chunk_files

DESYNC = os.path.join(DATA_DIR, "desync")
BLOB1 = Path(DESYNC, "blob1").read_bytes()


def desync_run(env: dict[str, str], args: list[str], cwd: str = DESYNC) -> subprocess.CompletedProcess[bytes]:
    """``pycasync ARGS`` with desync's testdata as ``testdata`` (the cases' own paths)."""
    args = ["." if a == "testdata" else a.replace("testdata/", "") for a in args]
    return subprocess.run([sys.executable, CLI, *args], cwd=cwd, env=env, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def passed(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[bytes]:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def ids_of(env: dict[str, str], index: str) -> set[str]:
    return set(passed(desync_run(env, ["list-chunks", index])).stdout.decode().split())


# --------------------------------------------------------------------------- cat_test.go

CAT = [
    ("cat all data", ["--store", "testdata/blob1.store", "testdata/blob1.caibx"], 0, 0),
    ("cat with offset", ["--store", "testdata/blob1.store", "-o", "1024", "testdata/blob1.caibx"], 1024, 0),
    ("cat with offset and length",
     ["--store", "testdata/blob1.store", "-o", "1024", "-l", "2048", "testdata/blob1.caibx"], 1024, 2048),
]


@pytest.mark.parametrize("name, args, offset, length", CAT, ids=[row[0] for row in CAT])
def test_cat(env: dict[str, str], name: str, args: list[str], offset: int, length: int) -> None:
    out = passed(desync_run(env, ["cat", *args])).stdout
    assert out == BLOB1[offset : offset + length if length else None]


# --------------------------------------------------------------------------- cache_test.go

CACHE = [
    ("singe store, single index", ["--store", "testdata/blob1.store", "testdata/blob1.caibx"]),
    ("multiple store, single index",
     ["--store", "testdata/blob1.store", "--store", "testdata/blob2.store", "testdata/blob1.caibx"]),
    ("multiple store, multiple index", ["--store", "testdata/blob1.store", "--store", "testdata/blob2.store",
                                        "testdata/blob1.caibx", "testdata/blob2.caibx"]),
]


@pytest.mark.parametrize("name, args", CACHE, ids=[row[0] for row in CACHE])
def test_cache(env: dict[str, str], tmp_path: Path, name: str, args: list[str]) -> None:
    cache = tmp_path / "cache"
    passed(desync_run(env, ["cache", *args, "-c", str(cache)]))
    wanted: set[str] = set()
    for index in (a for a in args if a.endswith(".caibx")):
        wanted |= ids_of(env, index)
    assert {name[:64] for name in chunk_files(str(cache))} == wanted


# --------------------------------------------------------------------------- chop_test.go

CHOP = [
    ("simple chop", ["testdata/blob1.caibx", "testdata/blob1"], set()),
    ("chop with ignore", ["--ignore", "testdata/blob2.caibx", "testdata/blob1.caibx", "testdata/blob1"],
     {"blob2.caibx"}),
]


@pytest.mark.parametrize("name, args, ignored", CHOP, ids=[row[0] for row in CHOP])
def test_chop(env: dict[str, str], tmp_path: Path, name: str, args: list[str], ignored: set[str]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    passed(desync_run(env, ["chop", "-s", str(store), *args]))
    wanted = ids_of(env, "blob1.caibx")
    for index in ignored:
        wanted -= ids_of(env, index)
    assert wanted and {name[:64] for name in chunk_files(str(store))} == wanted


def test_chop_errors_without_store(env: dict[str, str]) -> None:
    proc = desync_run(env, ["chop", "testdata/blob1.caibx", "testdata/blob1"])
    assert proc.returncode != 0 and b"pycasync: error:" in proc.stderr


def test_chop_errors_invalid_store(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "desync"
    proc = desync_run(env, ["chop", "-s", str(missing), "testdata/blob1.caibx", "testdata/blob1"])
    assert proc.returncode == 1 and str(missing).encode() in proc.stderr
    assert not missing.exists()


# --------------------------------------------------------------------------- info_test.go

_INFO_BASE = {"total": 161, "unique": 131, "in-store": 131, "size": 2097152,
              "chunk-size-min": 2048, "chunk-size-avg": 8192, "chunk-size-max": 32768}


def _info(in_seed: int, in_cache: int, not_in: int, not_seed: int, not_either: int, compressed: int) -> dict:
    return {**_INFO_BASE, "in-seed": in_seed, "in-cache": in_cache, "not-in-seed-nor-cache": not_in,
            "dedup-size-not-in-seed": not_seed, "dedup-size-not-in-seed-nor-cache": not_either,
            "dedup-size-not-in-seed-nor-cache-compressed": compressed}


INFO = [
    ("info command with store", ["-s", "testdata/blob1.store", "testdata/blob1.caibx"],
     _info(0, 0, 131, 1114112, 1114112, 0)),
    ("info command with seed",
     ["-s", "testdata/blob1.store", "--seed", "testdata/blob2.caibx", "testdata/blob1.caibx"],
     _info(124, 0, 7, 80029, 80029, 0)),
    ("info command with seed and cache",
     ["-s", "testdata/blob2.store", "--seed", "testdata/blob1.caibx", "--cache", "testdata/blob2.cache",
      "--chunks-info", "testdata/blob2_chunks_info.json", "testdata/blob2.caibx"],
     _info(124, 25, 7, 80029, 80029, 76000)),
    ("info command with cache",
     ["-s", "testdata/blob2.store", "--cache", "testdata/blob2.cache",
      "--chunks-info", "testdata/blob2_chunks_info.json", "testdata/blob2.caibx"],
     _info(0, 25, 106, 1114112, 853943, 818145)),
    ("info command with chunks info that doesn't have the compressed size for all chunk",
     ["-s", "testdata/blob2.store", "--chunks-info", "testdata/blob2_chunks_info_missing.json",
      "testdata/blob2.caibx"],
     _info(0, 0, 131, 1114112, 1114112, 0)),
]


@pytest.mark.parametrize("name, args, expected", INFO, ids=[row[0] for row in INFO])
def test_info(env: dict[str, str], name: str, args: list[str], expected: dict) -> None:
    got = json.loads(passed(desync_run(env, ["info", *args])).stdout)
    assert {key: got.get(key) for key in expected} == expected  # (ours may follow: -s adds store sizes)


# --------------------------------------------------------------------------- inspectchunks_test.go

INSPECT = [
    ("inspect the chunks info with a local store",
     ["-s", "testdata/blob2.store", "testdata/blob2.caibx"], "blob2_chunks_info.json"),
    ("run inspect with a seed that doesn't have all the compressed chunks",
     ["-s", "testdata/blob2.cache", "testdata/blob2.caibx"], "blob2_chunks_info_missing.json"),
    ("inspect the chunks info without any stores", ["testdata/blob2.caibx"],
     "blob2_chunks_info_no_store.json"),
]


@pytest.mark.parametrize("name, args, expected", INSPECT, ids=[row[0] for row in INSPECT])
def test_inspect_chunks(env: dict[str, str], name: str, args: list[str], expected: str) -> None:
    out = passed(desync_run(env, ["inspect-chunks", *args])).stdout
    assert out == Path(DESYNC, expected).read_bytes()  # byte for byte what desync printed


# --------------------------------------------------------------------------- list_test.go, prune_test.go


def test_list(env: dict[str, str]) -> None:
    lines = passed(desync_run(env, ["list-chunks", "testdata/blob1.caibx"])).stdout.decode().splitlines()
    assert len(lines) == 161 and all(len(line) == 64 and bytes.fromhex(line) for line in lines)


def test_prune(env: dict[str, str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    passed(desync_run(env, ["chop", "-s", str(store), "testdata/blob1.caibx", "testdata/blob1"]))
    passed(desync_run(env, ["prune", "-s", str(store), "testdata/blob2.caibx", "--yes"]))
    kept = {name[:64] for name in chunk_files(str(store))}
    assert kept == ids_of(env, "blob1.caibx") & ids_of(env, "blob2.caibx")


# --------------------------------------------------------------------------- tar_test.go


def test_tar_archive(env: dict[str, str], tmp_path: Path) -> None:
    archive = tmp_path / "tree.catar"
    passed(desync_run(env, ["tar", str(archive), "testdata/tree"]))
    listing = passed(desync_run(env, ["mtree", str(archive)])).stdout.decode()
    for name in ("subdir1/f1", "nested1/nested2/f", "symlink-dir", "symlink-file"):
        assert name in listing


def test_tar_index(env: dict[str, str], tmp_path: Path) -> None:
    index = tmp_path / "tree.caidx"
    passed(desync_run(env, ["tar", "-s", str(tmp_path), "-i", str(index), "testdata/tree"]))
    assert index.stat().st_size > 0 and chunk_files(str(tmp_path))


# -------------------------------------------------------------- chunkserver_test.go, indexserver_test.go


def _status(method: str, url: str, body: bytes | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method=method), timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_chunk_server_read(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    server = serve("-s", os.path.join(DESYNC, "blob1.store"))
    out = tmp_path / "blob"
    passed(desync_run(env, ["extract", "-s", server.url, "testdata/blob1.caibx", str(out)]))
    assert out.read_bytes() == BLOB1
    assert _status("GET", server.url + "somefile") == 400
    assert _status("GET", server.url + "0000/" + "0" * 64 + ".cacnk") == 404
    proc = desync_run(env, ["chop", "-s", server.url, "testdata/blob2.caibx", "testdata/blob2"])
    assert proc.returncode == 1 and b"pycasync: error:" in proc.stderr


def test_chunk_server_write(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    server = serve("-s", str(store), "-w")
    passed(desync_run(env, ["chop", "-s", server.url, "testdata/blob1.caibx", "testdata/blob1"]))
    assert {name[:64] for name in chunk_files(str(store))} == ids_of(env, "blob1.caibx")
    assert _status("PUT", server.url + "somefile", b"invalid") == 400


def test_chunk_server_encryption(env: dict[str, str], tmp_path: Path) -> None:
    # The client talks to the server compressed+encrypted (a config entry for the server's URL),
    # the server keeps the chunks only compressed in its local store.
    key = os.urandom(32).hex()
    store = tmp_path / "store"
    store.mkdir()
    server = Server(env, "-s", str(store), "-w", "--skip-verify-read=false", "--skip-verify-write=false",
                    "--encryption-key", key)
    try:
        config = tmp_path / "config.json"
        options = {"encryption": True, "encryption-key": key}
        config.write_text(json.dumps({"store-options": {server.url: options}}))
        passed(desync_run(env, ["--config", str(config), "chop", "-s", server.url,
                                "testdata/blob1.caibx", "testdata/blob1"]))
        out = tmp_path / "blob1"
        passed(desync_run(env, ["--config", str(config), "extract", "-s", server.url,
                                "testdata/blob1.caibx", str(out)]))
        assert out.read_bytes() == BLOB1
        # A plain client asks for .cacnk names the encrypting server does not serve.
        proc = desync_run(env, ["extract", "-s", server.url, "testdata/blob1.caibx", str(tmp_path / "plain")])
        assert proc.returncode == 1 and not (tmp_path / "plain").exists()
    finally:
        assert server.proc.stderr is not None
        server.proc.send_signal(15)
        log = server.proc.stderr.read()
        server.stop()
    names = [p.name for p in store.glob("*/*")]
    assert names and all(name.endswith(".cacnk") for name in names)
    assert {name[:64] for name in names} == ids_of(env, "blob1.caibx")
    assert key.encode() not in log


def test_index_server_read(env: dict[str, str], serve: Callable[..., Server]) -> None:
    server = serve("-s", DESYNC, command="index-server")
    passed(desync_run(env, ["list-chunks", server.url + "blob1.caibx"]))
    assert _status("GET", server.url + "blob1") == 400
    proc = desync_run(env, ["make", server.url + "new.caibx", "testdata/blob1"])
    assert proc.returncode == 1 and b"pycasync: error:" in proc.stderr
    assert not os.path.exists(os.path.join(DESYNC, "new.caibx"))


def test_index_server_write(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    server = serve("-s", str(tmp_path), "-w", command="index-server")
    passed(desync_run(env, ["make", server.url + "new.caibx", "testdata/blob1"]))
    assert (tmp_path / "new.caibx").read_bytes() == passed(
        desync_run(env, ["make", "-m", "16:64:256", "-", "testdata/blob1"])).stdout
    assert _status("PUT", server.url + "invalid.caibx", b"invalid") == 415


def _tls_server(serve: Callable[..., Server], *extra: str) -> str:
    server = serve("-s", os.path.join(DESYNC, "blob1.store"), "--key", os.path.join(DESYNC, "server.key"),
                   "--cert", os.path.join(DESYNC, "server.crt"), *extra)
    return f"https://localhost:{server.port}/"


def test_chunk_server_verified_tls(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    store = _tls_server(serve)
    out = tmp_path / "blob1"
    passed(desync_run(env, ["extract", "--ca-cert", "testdata/ca.crt", "-s", store, "testdata/blob1.caibx",
                            str(out)]))
    assert out.read_bytes() == BLOB1


def test_chunk_server_insecure_tls(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    store = _tls_server(serve)
    out = tmp_path / "blob1"
    passed(desync_run(env, ["extract", "-t", "-s", store, "testdata/blob1.caibx", str(out)]))
    assert out.read_bytes() == BLOB1
    proc = desync_run(env, ["extract", "-s", store, "testdata/blob1.caibx", str(tmp_path / "again")])
    assert proc.returncode == 1 and not (tmp_path / "again").exists()


def test_chunk_server_mutual_tls(env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]) -> None:
    store = _tls_server(serve, "--mutual-tls", "--client-ca", os.path.join(DESYNC, "ca.crt"))
    out = tmp_path / "blob1"
    passed(desync_run(env, ["extract", "--client-key", "testdata/client.key", "--client-cert",
                            "testdata/client.crt", "--ca-cert", "testdata/ca.crt", "-s", store,
                            "testdata/blob1.caibx", str(out)]))
    assert out.read_bytes() == BLOB1
    proc = desync_run(env, ["extract", "--ca-cert", "testdata/ca.crt", "-s", store, "testdata/blob1.caibx",
                            str(tmp_path / "again")])
    assert proc.returncode == 1 and not (tmp_path / "again").exists()


def test_chunk_server_env_key_does_not_enable_encryption(
    env: dict[str, str], tmp_path: Path, serve: Callable[..., Server]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    env = dict(env, DESYNC_ENCRYPTION_KEY=os.urandom(32).hex())
    server = Server(env, "-s", str(store), "-w")
    try:
        passed(desync_run(env, ["chop", "-s", server.url, "testdata/blob1.caibx", "testdata/blob1"]))
    finally:
        server.stop()
    names = [p.name for p in store.glob("*/*")]
    assert names and all(name.endswith(".cacnk") for name in names)


@pytest.mark.parametrize("args", [["--encryption"], ["--encryption-algorithm", "aes-256-gcm"]])
def test_chunk_server_encryption_missing_key(env: dict[str, str], tmp_path: Path, args: list[str]) -> None:
    # Encryption without a key (flag or environment) fails at startup, never serves plaintext.
    proc = desync_run(dict(env, DESYNC_ENCRYPTION_KEY=""),
                      ["chunk-server", *args, "-s", str(tmp_path), "-l", "127.0.0.1:0"])
    assert proc.returncode != 0 and b"serving" not in proc.stderr
    assert proc.stderr.decode().splitlines() == [
        "pycasync: error: no encryption key configured (set encryption-key or DESYNC_ENCRYPTION_KEY)"]


def test_index_server_path_traversal(tmp_path: Path, serve: Callable[..., Server]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    server = serve("-s", str(store), "-w", command="index-server")
    url = server.url + "..%5C..%5Cevil.caibx"
    assert _status("PUT", url, b"not-a-real-index") == 400
    assert _status("GET", url) == 400 and _status("HEAD", url) == 400
    assert not (tmp_path / "evil.caibx").exists() and list(store.iterdir()) == []


def test_index_server_head(serve: Callable[..., Server]) -> None:
    server = serve("-s", DESYNC, command="index-server")
    assert _status("HEAD", server.url + "blob1.caibx") == 200
    assert _status("HEAD", server.url + "does-not-exist.caibx") == 404


# ------------------------------------------------------------ extract_test.go (rows without seeds;
# the seed rows are in test_cli_seeds.py)

EXTRACT = [
    ("extract to new file", ["--store", "testdata/blob1.store", "testdata/blob1.caibx"], None),
    ("extract to exiting file with overwrite", ["--store", "testdata/blob1.store", "testdata/blob1.caibx"],
     b"\0\1\2\3"),
    ("extract to exiting file without overwrite",
     ["--in-place", "--store", "{out_dir}", "testdata/blob1.caibx"], BLOB1),
    ("extract with cache", ["-s", "testdata/blob1.store", "-c", "{cache}", "testdata/blob1.caibx"], None),
    ("extract with multiple stores",
     ["-s", "testdata/blob2.store", "-s", "testdata/blob1.store", "testdata/blob1.caibx"], None),
    ("extract with multiple stores and cache", ["-n", "1", "-s", "testdata/blob2.store", "-s",
                                                "testdata/blob1.store", "--cache", "{cache}",
                                                "testdata/blob1.caibx"], None),
]


@pytest.mark.parametrize("name, args, before", EXTRACT, ids=[row[0] for row in EXTRACT])
def test_extract(
    env: dict[str, str], tmp_path: Path, name: str, args: list[str], before: bytes | None
) -> None:
    out_dir, cache = tmp_path / "out", tmp_path / "cache"
    out_dir.mkdir()
    out = out_dir / "out"
    if before is not None:
        out.write_bytes(before)
    filled = [a.format(out_dir=out_dir, cache=cache) for a in args]
    passed(desync_run(env, ["extract", *filled, str(out)]))
    assert out.read_bytes() == BLOB1
    if "{cache}" in args:
        assert chunk_files(str(cache))


def test_extract_with_failover(env: dict[str, str], tmp_path: Path) -> None:
    import http.server
    import threading

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            self.send_error(500, "failed")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "out"
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        passed(desync_run(dict(env), ["extract", "--store", url + "|testdata/blob1.store", "-e", "1",
                                      "testdata/blob1.caibx", str(out)]))
        assert out.read_bytes() == BLOB1
    finally:
        server.shutdown()
        server.server_close()
