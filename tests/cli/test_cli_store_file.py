"""``chunk-server --store-file``: desync's JSON store file, reloaded on SIGHUP under load.

A real chunk-server subprocess serves the stores a store file names; while
client threads GET chunks without pause over keep-alive connections, the
file is switched between a local store and an upstream chunk-server (an
HTTP store, whose connections are closed when it is swapped out) and the
server is sent SIGHUP again and again: every single response must be a 200
with the right bytes, and after the last reload the new stores are the ones
served. A file that cannot be read leaves the stores as they were.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from typing import Callable

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_store import LocalStore
from casync_store.stores.swap import read_store_file
from tests.support.cli import Server, data, ok, one_error, run

ServeFn = Callable[..., Server]


def _store_file(path: str, stores: list[str], cache: str = "") -> None:
    with open(path + ".tmp", "w") as f:
        json.dump({"stores": stores, "cache": cache}, f)
    os.replace(path + ".tmp", path)


def _make_stores(d: str, n: int) -> tuple[str, str, dict[str, bytes], str]:
    """Stores A (without chunk X) and B (with X); the blobs by URL path; X's path."""
    a, b = LocalStore(f"{d}/A", sync=False), LocalStore(f"{d}/B", sync=False)
    blobs = {}
    for i in range(n):
        chunk = data(2000 + i, i)
        cid = SHA512_256(chunk)
        blob = chunk_codec.encode(chunk)
        a.put_raw(cid, blob)
        b.put_raw(cid, blob)
        blobs[f"/{cid.hex()[:4]}/{cid.hex()}.cacnk"] = blob
    x = data(3333, 999)
    xid = SHA512_256(x)
    b.put_raw(xid, chunk_codec.encode(x))
    return f"{d}/A", f"{d}/B", blobs, f"/{xid.hex()[:4]}/{xid.hex()}.cacnk"


def _drain(server: Server) -> list[bytes]:
    """Read the server's log (-v logs every upstream GET: an unread pipe would stall it)."""
    lines: list[bytes] = []
    stream = server.proc.stderr
    assert stream is not None

    def pump() -> None:
        for line in iter(stream.readline, b""):
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _wait_status(port: int, path: str, want: int) -> None:
    deadline = time.monotonic() + 20
    while _status(port, path) != want:
        assert time.monotonic() < deadline, f"{path} never answered {want}"
        time.sleep(0.05)


def test_sighup_reloads_without_dropping_requests(env: dict[str, str], serve: ServeFn,
                                                  tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    d = str(tmp_path)
    a, b, blobs, x_path = _make_stores(d, 40)
    upstream = serve("-s", b)
    sf = f"{d}/stores.json"
    _store_file(sf, [a])
    server = serve("--store-file", sf)
    log = _drain(server)
    assert _status(server.port, x_path) == 404
    failures: list[str] = []
    counts = [0]
    stop = threading.Event()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        try:
            while not stop.is_set():
                for path, blob in blobs.items():
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    body = resp.read()
                    counts[0] += 1
                    if resp.status != 200 or body != blob:
                        failures.append(f"{path}: {resp.status}, {len(body)} bytes")
        except Exception as exc:  # a dropped connection is a failure too
            failures.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(12):
            _store_file(sf, [upstream.url] if i % 2 == 0 else [a, b])
            server.proc.send_signal(signal.SIGHUP)
            time.sleep(0.25)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not failures, failures[:5]
    assert counts[0] > 200
    _store_file(sf, [upstream.url])  # B, through HTTP: serves X
    server.proc.send_signal(signal.SIGHUP)
    _wait_status(server.port, x_path, 200)
    _store_file(sf, [a])
    server.proc.send_signal(signal.SIGHUP)
    _wait_status(server.port, x_path, 404)
    with open(sf, "w") as f:
        f.write("{not json")
    server.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert _status(server.port, next(iter(blobs))) == 200  # still serving A
    assert server.proc.poll() is None
    assert sum(b"reloaded" in line for line in log) >= 8  # signals sent during a reload may merge
    assert any(b"failed to reload configuration: store file" in line for line in log)
    assert server.stop() == 0


def test_store_file_with_cache_and_writable(env: dict[str, str], serve: ServeFn,
                                            tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    d = str(tmp_path)
    a, b, _, x_path = _make_stores(d, 3)
    sf = f"{d}/stores.json"
    _store_file(sf, [b], cache=f"{d}/cache")
    server = serve("--store-file", sf)
    assert _status(server.port, x_path) == 200
    assert os.path.exists(f"{d}/cache{x_path}")  # filled through the cache
    _store_file(sf, [a])
    writable = serve("-w", "--store-file", sf)
    conn = http.client.HTTPConnection("127.0.0.1", writable.port, timeout=10)
    conn.request("PUT", x_path, body=LocalStore(b).get_raw(bytes.fromhex(x_path[6:70])))
    assert conn.getresponse().status == 200
    conn.close()
    assert os.path.exists(f"{a}{x_path}")


def test_store_file_errors(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    sf = f"{d}/stores.json"
    _store_file(sf, [d])
    one_error(run(env, "chunk-server", "--store-file", sf, "-s", d), 2, "--store and --store-file")
    one_error(run(env, "chunk-server", "--store-file", sf, "-c", d), 2, "--cache and --store-file")
    _store_file(sf, [d, d])
    one_error(run(env, "chunk-server", "-w", "--store-file", sf), 2, "exactly one store")
    _store_file(sf, [])
    one_error(run(env, "chunk-server", "--store-file", sf), 2, "names no store")
    one_error(run(env, "chunk-server", "--store-file", f"{d}/nope.json"), 2, "cannot read store file")
    assert b"--store-file" in ok(env, "chunk-server", "--help").stdout


@pytest.mark.parametrize(
    ("content", "match"),
    [("[]", "JSON object"), ('{"stores": "x"}', "list of store locations"), ('{"stores": [1]}', "list"),
     ('{"cache": 5}', "store location"), ("{", "not valid JSON"), (b"\xff", "not valid JSON")],
)
def test_read_store_file_refuses_malformed(tmp_path: os.PathLike[str], content: object, match: str) -> None:
    path = os.path.join(tmp_path, "f.json")
    with open(path, "wb") as f:
        f.write(content if isinstance(content, bytes) else str(content).encode())
    with pytest.raises(ValueError, match=match):
        read_store_file(path)


def test_read_store_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "f.json")
    with open(path, "w") as f:
        f.write('{"stores": ["/a", "http://b/"], "cache": "/c", "other": 1}')
    spec = read_store_file(path)
    assert spec.stores == ("/a", "http://b/") and spec.cache == "/c"
    with open(path, "w") as f:
        f.write('{"cache": ""}')
    assert read_store_file(path).stores == () and read_store_file(path).cache is None
