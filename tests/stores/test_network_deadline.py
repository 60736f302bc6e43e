"""Network deadlines (issue 10 item 8): one deadline per request, a bounded total over its retries.

Real sockets on 127.0.0.1: a listener that never answers, servers that drip
their answer a byte at a time (body only, or from the status line), and a
real ``pycasync extract`` against a dripping server with the timeout from the
config file. A stalled or dripping server must fail a request by its
``timeout`` (the whole exchange, not each read), all attempts of a request
within ``timeout * attempts``, and a failed extract must exit 1 in time with
no temporary file left; a slow but steady server within the deadline works.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import StoreError
from casync_store import LocalStore
from casync_store.ops.make import make
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.http import HTTPIndexStore, HTTPStore
from casync_store.stores.ssh import SSHStore
from tests.support import CLI
from tests.support.certs import make_certs
from tests.support.faulty_http import Drip, FaultyServer, Slow
from tests.support.sshd import write_pycasync_remote

METHOD = "zstd" if compress.ZSTD_BACKEND else "gzip"


def make_chunk(seed: int, size: int = 5000) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob)."""
    data = bytes((seed + i * 7) % 251 for i in range(size))
    return SHA512_256(data), data, chunk_codec.encode(data, METHOD)


def chunk_path(cid: bytes) -> str:
    return f"/{cid.hex()[:4]}/{cid.hex()}.cacnk"


def opts(timeout: float, error_retry: int = 1, interval: float = 0.001, **more: object) -> StoreOptions:
    return StoreOptions(timeout=timeout, error_retry=error_retry, error_retry_base_interval=interval,
                        **more)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    with FaultyServer() as srv:
        yield srv


def timed_failure(call: object) -> tuple[float, str]:
    """(seconds, message) of a call that must raise StoreError."""
    start = time.monotonic()
    with pytest.raises(StoreError) as exc:
        call()  # type: ignore[operator]
    return time.monotonic() - start, str(exc.value)


def test_silent_listener_bounded_over_all_attempts() -> None:
    # Accepted by the kernel (listen backlog), never read, never answered.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        cid = make_chunk(1)[0]
        # Waits of 1 s and 2 s between the attempts used to come on top of 3 x 1 s (6 s).
        with HTTPStore(f"http://127.0.0.1:{port}/", opts(1.0, 3, interval=1.0)) as store:
            took, message = timed_failure(lambda: store.get_raw(cid))
    assert 1.0 < took < 3.6, took
    assert "timed out after 1 s" in message and "gave up after 2 attempts" in message


def test_silent_listener_every_attempt_used_when_waits_are_short() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with HTTPStore(f"http://127.0.0.1:{port}/", opts(0.5, 3)) as store:
            took, message = timed_failure(lambda: store.has_chunk(make_chunk(1)[0]))
    assert 1.4 < took < 2.1, took
    assert "gave up after 3 attempts" in message


@pytest.mark.parametrize("head", [False, True], ids=["body", "head"])
def test_dripping_answer_fails_by_the_timeout(server: FaultyServer, head: bool) -> None:
    cid, _, blob = make_chunk(2)
    server.chunks[chunk_path(cid)] = blob
    server.plan(None, *[Drip(0.2, head=head)] * 5)
    with HTTPStore(server.url + "/", opts(1.0)) as store:
        took, message = timed_failure(lambda: store.get_raw(cid))
    assert 0.9 < took < 1.8, took  # used to run for 5000 x 0.2 s
    assert "timed out after 1 s" in message and f"chunk {cid.hex()}" in message


def test_dripping_retries_stay_within_timeout_times_attempts(server: FaultyServer) -> None:
    cid, _, blob = make_chunk(3)
    server.chunks[chunk_path(cid)] = blob
    server.plan(None, *[Drip(0.1)] * 5)
    with HTTPStore(server.url + "/", opts(0.7, 3)) as store:
        took, message = timed_failure(lambda: store.get_raw(cid))
    assert 2.0 < took < 2.6, took
    assert server.count("GET") == 3 and "gave up after 3 attempts" in message


def test_slow_but_steady_answer_within_the_deadline_works(server: FaultyServer) -> None:
    cid, _, blob = make_chunk(4, size=300)
    server.chunks[chunk_path(cid)] = blob
    # A byte every 5 ms: about 1.7 s in all, well within the 5 s deadline.
    server.plan(None, Drip(0.005, head=True))
    with HTTPStore(server.url + "/", opts(5.0)) as store:
        start = time.monotonic()
        assert store.get_raw(cid) == blob
    assert time.monotonic() - start > 0.005 * len(blob)
    assert server.count("GET") == 1


def test_waiting_for_a_pooled_connection_is_not_counted(server: FaultyServer) -> None:
    # One connection, three threads: each answer takes 0.6 s of a 1 s deadline, the queue 1.2 s more.
    chunks = [make_chunk(10 + i) for i in range(3)]
    for cid, _, blob in chunks:
        server.chunks[chunk_path(cid)] = blob
    server.plan(None, *[Slow(0.6)] * 3)
    errors: list[BaseException] = []
    with HTTPStore(server.url + "/", opts(1.0, concurrency=1)) as store:

        def get(cid: bytes, blob: bytes) -> None:
            try:
                assert store.get_raw(cid) == blob
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=get, args=(cid, blob)) for cid, _, blob in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert not errors and server.count("GET") == 3


def test_index_from_a_dripping_server_fails_in_time(server: FaultyServer) -> None:
    server.chunks["/blob.caibx"] = bytes(range(256)) * 8
    server.plan("/blob.caibx", *[Drip(0.2)] * 3)
    with HTTPIndexStore(server.url + "/", opts(1.0, 2)) as store:

        def read_all() -> None:
            with store.open_index("blob.caibx") as f:
                f.read()

        took, message = timed_failure(read_all)
    # The answer's head arrives at once, so the first attempt returns its stream; reading it
    # runs into the same deadline, 1 s after the request began.
    assert 0.9 < took < 1.8, took
    assert "timed out" in message and "index store" in message


def test_index_head_dripping_retried_within_the_bound(server: FaultyServer) -> None:
    server.chunks["/blob.caibx"] = b"x" * 100
    server.plan("/blob.caibx", *[Drip(0.2, head=True)] * 3)
    with HTTPIndexStore(server.url + "/", opts(0.6, 2)) as store:
        took, message = timed_failure(lambda: store.open_index("blob.caibx"))
    assert 1.1 < took < 1.6, took
    assert "gave up after 2 attempts" in message


# --------------------------------------------------------------------------- TLS


def _tls_dripper(listener: socket.socket, ctx: ssl.SSLContext, stop: threading.Event, answer: bool) -> None:
    """Accept one TLS client; drip an answer after its request (or, not ``answer``, stall the handshake)."""
    listener.settimeout(5)
    with contextlib.suppress(OSError), listener.accept()[0] as raw:
        if not answer:
            stop.wait(10)
            return
        with ctx.wrap_socket(raw, server_side=True) as conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000:
                if stop.wait(0.2):
                    return
                conn.sendall(bytes([byte]))


@pytest.mark.parametrize("answer", [True, False], ids=["dripped-answer", "stalled-handshake"])
def test_tls_dripping_or_stalled_handshake_fails_by_the_timeout(tmp_path: Path, answer: bool) -> None:
    certs = make_certs(tmp_path / "certs")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    stop = threading.Event()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        thread = threading.Thread(target=_tls_dripper, args=(listener, ctx, stop, answer), daemon=True)
        thread.start()
        try:
            with HTTPStore(f"https://127.0.0.1:{port}/", opts(1.0, ca_cert=certs.ca_cert)) as store:
                took, message = timed_failure(lambda: store.get_raw(make_chunk(5)[0]))
        finally:
            stop.set()
            thread.join(10)
    assert 0.9 < took < 1.8, took
    assert "timed out after 1 s" in message


# --------------------------------------------------------------------------- ssh://

_DRIP_RELAY = """\
import os, sys, time
first = os.read(0, 65536)  # the remote's HELLO, passed on at once
os.write(1, first)
while True:
    block = os.read(0, 65536)
    if not block:
        break
    for i in range(len(block)):
        time.sleep(0.2)
        os.write(1, block[i : i + 1])
"""


def test_ssh_remote_dripping_its_answer_fails_by_the_timeout(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    cid, data, _ = make_chunk(6)
    LocalStore(str(store_dir)).store_chunk(cid, data)
    fake_ssh = tmp_path / "fake-ssh"
    fake_ssh.write_text('#!/bin/sh\nshift 1\nexec sh -c "$*"\n')
    (tmp_path / "relay.py").write_text(_DRIP_RELAY)
    remote = tmp_path / "drip-remote"
    pycasync = write_pycasync_remote(str(tmp_path))
    remote.write_text(f'#!/bin/sh\n"{pycasync}" "$@" | "{sys.executable}" "{tmp_path / "relay.py"}"\n')
    for script in (fake_ssh, remote):
        script.chmod(0o755)
    with SSHStore(f"ssh://host{store_dir}", StoreOptions(timeout=1.5), ssh_path=str(fake_ssh),
                  remote_path=str(remote)) as store:  # fmt: skip
        took, message = timed_failure(lambda: store.get_raw(cid))
    assert 1.4 < took < 3.5, took  # the relay would take 0.2 s per byte of the chunk's answer
    assert "no answer within 1.5 s" in message and cid.hex() in message


# --------------------------------------------------------------------------- the real CLI


def _tree(tmp_path: Path, server: FaultyServer) -> tuple[str, str]:
    """(index path, config path): a small blob's chunks on ``server``, a 1 s timeout for it."""
    source = tmp_path / "blob"
    source.write_bytes(os.urandom(40_000))
    local = LocalStore(str(tmp_path / "store"))
    index = str(tmp_path / "blob.caibx")
    make(index, str(source), local, params=ChunkerParams.from_string("1:4:16"), concurrency=2)
    for name in (tmp_path / "store").rglob("*.cacnk"):
        server.chunks[f"/{name.parent.name}/{name.name}"] = name.read_bytes()
    assert len(server.chunks) > 4
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {
        server.url + "/": {"timeout": "1s", "error-retry": 2, "error-retry-base-interval": "10ms"},
    }}))
    return index, str(config)


def _extract(config: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, CLI, "--config", config, "extract", *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    return proc, time.monotonic() - start


def test_cli_extract_from_a_dripping_server_fails_in_time(tmp_path: Path, server: FaultyServer) -> None:
    index, config = _tree(tmp_path, server)
    server.plan(None, *[Drip(0.2)] * 200)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "image").write_bytes(b"old image")
    proc, took = _extract(config, "-s", server.url + "/", index, str(out_dir / "image"))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "timed out after 1 s" in lines[0] and "Traceback" not in proc.stderr
    # 1 s x 2 attempts per chunk; the workers all start at once and stop together.
    assert took < 8, took
    assert sorted(os.listdir(out_dir)) == ["image"]  # no .pycasync-tmp* left
    assert (out_dir / "image").read_bytes() == b"old image"


def test_cli_extract_index_from_a_dripping_server_fails_in_time(tmp_path: Path, server: FaultyServer) -> None:
    index, config = _tree(tmp_path, server)
    server.chunks["/blob.caibx"] = Path(index).read_bytes()
    server.plan("/blob.caibx", *[Drip(0.2)] * 3)
    out = tmp_path / "image"
    proc, took = _extract(config, "-s", server.url + "/", server.url + "/blob.caibx", str(out))
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "timed out" in proc.stderr
    assert took < 8, took
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["blob", "blob.caibx", "config.json", "store"]


def test_cli_extract_from_a_steady_server_works(tmp_path: Path, server: FaultyServer) -> None:
    index, config = _tree(tmp_path, server)
    out = tmp_path / "image"
    proc, _ = _extract(config, "-s", server.url + "/", index, str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == (tmp_path / "blob").read_bytes()
