"""Tests of the chunk server under load and at shutdown.

64 concurrent keep-alive clients fetching every chunk of a real store, a
shutdown that finishes the requests in flight (a deliberately slow store) and
closes idle connections, and a ``serve_chunks`` subprocess that stops on
SIGTERM and SIGINT after finishing its in-flight request.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_store.serve.chunkserver import ChunkServer
from casync_store.stores.base import Store
from tests.support import ROOT
from tests.support.chunkserver import Blob, chunk_path
from tests.support.http_client import request


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Blob:
    """A blob made into a store (shadows tests/conftest.py's ``blob``, which ``made`` needs)."""
    return Blob(str(tmp_path_factory.mktemp("blob")))


# --- load and shutdown ----------------------------------------------------------------------------


def test_64_concurrent_clients(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store)
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        conn = http.client.HTTPConnection(*server.addresses[0], timeout=30)
        order = blob.chunks[seed % len(blob.chunks):] + blob.chunks[:seed % len(blob.chunks)]
        try:
            for cid, size in order:
                conn.request("GET", chunk_path(cid))
                response = conn.getresponse()
                body = response.read()
                data = chunk_codec.decode(body, cid, SHA512_256, size=size) if response.status == 200 else b""
                if len(data) != size:
                    raise AssertionError(f"chunk {cid.hex()}: status {response.status}")
                with lock:
                    done[0] += 1
        except Exception as exc:  # collected and asserted below
            with lock:
                errors.append(f"client {seed}: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert errors == []
    assert done[0] == 64 * len(blob.chunks)
    print(f"\n64 clients: {done[0]} requests in {elapsed:.2f} s = {done[0] / elapsed:.0f} req/s")


class SlowStore(Store):
    """Answers every read after ``delay`` seconds (a request that is in flight for a while)."""

    def __init__(self, inner: Store, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.entered = threading.Event()

    def get_raw(self, chunk_id: bytes) -> bytes:
        self.entered.set()
        time.sleep(self.delay)
        return self.inner.get_raw(chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.inner.has_chunk(chunk_id)

    def __str__(self) -> str:
        return f"slow:{self.inner}"


def test_shutdown_finishes_requests_in_flight_and_closes_idle_ones(blob: Blob) -> None:
    slow = SlowStore(blob.store, 1.0)
    server = ChunkServer(slow)
    server.start()
    idle = http.client.HTTPConnection(*server.addresses[0], timeout=10)
    idle.request("HEAD", chunk_path(blob.ids[0]))
    idle.getresponse().read()  # now an idle keep-alive connection
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(r=request(server, "GET", chunk_path(blob.ids[0]))))
    worker.start()
    assert slow.entered.wait(5)
    started = time.monotonic()
    server.shutdown(grace=10)
    assert time.monotonic() - started < 5
    worker.join(5)
    status, response, body = result["r"]
    assert status == 200 and body == blob.store.get_raw(blob.ids[0]) and response.will_close
    with pytest.raises(ConnectionError):
        socket.create_connection(server.addresses[0], timeout=2)
    with pytest.raises((http.client.HTTPException, OSError)):
        idle.request("HEAD", chunk_path(blob.ids[0]))
        idle.getresponse()
    idle.close()


SERVE_SCRIPT = """
import sys, time
from casync_format.digest import SHA512_256
from casync_store import LocalStore
from casync_store.serve.chunkserver import serve_chunks
from casync_store.stores.base import Store

class Slow(Store):
    def __init__(self, inner):
        self.inner = inner
    def get_raw(self, chunk_id):
        time.sleep(float(sys.argv[2]))
        return self.inner.get_raw(chunk_id)
    def has_chunk(self, chunk_id):
        return self.inner.has_chunk(chunk_id)
    def __str__(self):
        return "slow"

serve_chunks(Slow(LocalStore(sys.argv[1])), ["127.0.0.1:0"], digest=SHA512_256,
             ready=lambda addresses: print(addresses[0][1], flush=True))
print("stopped", flush=True)
"""


@contextlib.contextmanager
def serving_process(store_dir: str, delay: float) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, store_dir, str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), proc.stderr.read() if proc.stderr else line
        yield proc, int(line)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_chunks_stops_on_signal_after_finishing_in_flight_requests(blob: Blob, signum: int) -> None:
    with serving_process(blob.store_dir, 1.0) as (proc, port):
        result: dict[str, Any] = {}

        def fetch() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", chunk_path(blob.ids[0]))
            response = conn.getresponse()
            result["r"] = (response.status, response.read())
            conn.close()

        worker = threading.Thread(target=fetch)
        worker.start()
        time.sleep(0.4)  # the request is in the slow store now
        proc.send_signal(signum)
        worker.join(10)
        assert proc.wait(10) == 0
        assert result["r"] == (200, blob.store.get_raw(blob.ids[0]))
        assert proc.stdout is not None and proc.stdout.read().strip() == b"stopped"
        with pytest.raises(ConnectionError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
