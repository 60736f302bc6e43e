"""The network commands end to end through the real command line.

``pycasync chunk-server`` runs as a subprocess on 127.0.0.1 (port 0, the
bound port read from its verbose log); ``pycasync extract``/``make`` and
casync's own HTTP client talk to it; SIGTERM stops it with exit status 0.
Failover groups and a caching proxy chain are exercised as users write them
on the command line, and bad chunk-server flags are one-line usage errors.
"""

from __future__ import annotations

import http.client
import os
import subprocess
from typing import Callable

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from tests.support.cli import Server, chunk_files, ok, one_error, read, run


def test_extract_through_chunk_server_and_sigterm(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str],
    serve: Callable[..., Server], run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    store, index, content = made
    server = serve("-s", store)
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", server.url, index, out)
    assert read(out) == content
    casync_out = os.path.join(tmp_path, "casync-out")
    run_casync(f"--store={server.url}", "--seed-output=no", "extract", index, casync_out)
    assert read(casync_out) == content
    # read-only: a make into it is refused by the server, and nothing is stored
    before = chunk_files(store)
    src = os.path.join(tmp_path, "new.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(50_000))
    one_error(run(env, "make", "-s", server.url, os.path.join(tmp_path, "n.caibx"), src), 1, "400")
    assert chunk_files(store) == before
    assert server.stop() == 0


def test_writable_server_takes_make(
    env: dict[str, str], tmp_path: os.PathLike[str], serve: Callable[..., Server]
) -> None:
    target = os.path.join(tmp_path, "target")
    os.mkdir(target)
    server = serve("-w", "-s", target)
    src, index, out = (os.path.join(tmp_path, n) for n in ("src", "x.caibx", "out"))
    with open(src, "wb") as f:
        f.write(os.urandom(200_000))
    ok(env, "make", "-m", "4:16:64", "-s", server.url, index, src)
    assert chunk_files(target)
    ok(env, "extract", "-s", target, index, out)
    assert read(out) == read(src)


def test_failover_and_proxy_cache(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: os.PathLike[str],
    serve: Callable[..., Server],
) -> None:
    store, index, content = made
    upstream = serve("-s", store)
    cache = os.path.join(tmp_path, "proxy-cache")
    proxy = serve("-s", upstream.url, "-c", cache)
    dead = "http://127.0.0.1:1/"
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-e", "1", "-s", f"{dead}|{proxy.url}", index, out)
    assert read(out) == content
    assert sorted(chunk_files(cache)) == sorted(chunk_files(store))  # the proxy cached every chunk


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["-s", "/x", "-w", "-s", "/y"], "-w needs exactly one store"),
        (["-s", "/x", "--cert", "c.pem"], "--cert and --key"),
        (["-s", "/x", "--mutual-tls"], "--mutual-tls needs"),
        (["-l", ":1"], "no store given"),
        (["-s", ".", "-l", "nonsense"], "nonsense"),
        (["-s", "/x", "--encryption"], "no encryption key configured"),
        (["-s", "/x", "--encryption-key", "00"], "invalid encryption key"),
        (["-s", "/x", "--encryption-key", "00" * 32, "--encryption-algorithm", "rot13"], "unsupported"),
        (["-s", "/x", "--skip-verify-read=maybe"], "invalid boolean"),
    ],
)
def test_chunk_server_usage_errors(env: dict[str, str], args: list[str], fragment: str) -> None:
    one_error(run(env, "chunk-server", *args), 2, fragment)


def test_servers_refuse_a_store_that_does_not_exist(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nope")
    one_error(run(env, "chunk-server", "-s", missing, "-l", "127.0.0.1:0"), 1, "nope", "does not exist")
    one_error(run(env, "pull", "-", "-", "-", missing), 1, "nope", "does not exist")


def test_busy_port_is_a_failure(
    env: dict[str, str], made: tuple[str, str, bytes], serve: Callable[..., Server]
) -> None:
    server = serve("-s", made[0], "--skip-verify-read")
    one_error(run(env, "chunk-server", "-s", made[0], "-l", f"127.0.0.1:{server.port}"), 1, "cannot listen")


def test_skip_verify_write_is_accepted_and_puts_are_still_verified(
    tmp_path: os.PathLike[str], serve: Callable[..., Server]
) -> None:
    """desync's --skip-verify-write (its default) is accepted; a PUT that does not match its id is refused."""
    store = os.path.join(tmp_path, "store")
    os.makedirs(store)
    server = serve("-s", store, "-w", "--skip-verify-write")
    data = os.urandom(5000)
    cid = SHA512_256(data).hex()
    target = f"/{cid[:4]}/{cid}.cacnk"

    def put(body: bytes) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("PUT", target, body=body)
            return conn.getresponse().status
        finally:
            conn.close()

    assert put(chunk_codec.encode(data + b"!")) == 400
    assert chunk_files(store) == []
    assert put(chunk_codec.encode(data)) == 200
    assert len(chunk_files(store)) == 1
