"""Tests for the index server (casync_store.serve.indexserver) and its HTTP layer's streamed bodies.

Everything runs against real servers on 127.0.0.1 (ephemeral ports) over
real index stores holding indexes made by ``make``: raw http.client and
socket requests (so malformed targets reach the server as sent), the HTTP
index store client, HTTPS with certificates made by the openssl CLI, and a
subprocess running :func:`serve_indexes` stopped with SIGTERM.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import signal
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.chunker import ChunkerParams
from casync_format.errors import IndexNotFound, StoreError
from casync_format.index import Index
from casync_store.ops.make import make
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.plumbing.config import StoreOptions
from casync_store.serve.httpserver import TLSOptions
from casync_store.serve.indexserver import IndexServer, index_name_from_target
from casync_store.stores.http import HTTPIndexStore
from casync_store.stores.indexstore import IndexStore, LocalIndexStore, valid_index_name
from tests.support import ROOT, http_client, rng_bytes
from tests.support.certs import Certs
from tests.support.http_client import request

PARAMS = ChunkerParams.from_string("4:16:64")
AUTH = "Bearer 1ndex-t0ken"
FAST = StoreOptions(timeout=10.0, error_retry=2, error_retry_base_interval=0.001)


@pytest.fixture(scope="module")
def index_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real index (of 1 MiB of data, ~60 chunks)."""
    directory = str(tmp_path_factory.mktemp("blob"))
    blob, index = os.path.join(directory, "blob"), os.path.join(directory, "blob.caibx")
    with open(blob, "wb") as f:
        f.write(rng_bytes(1 << 20, seed=11))
    make(index, blob, None, params=PARAMS)
    with open(index, "rb") as f:
        return f.read()


class Tree:
    """An index store root inside a directory that also holds a file the server must never touch."""

    def __init__(self, directory: str, index: bytes) -> None:
        self.outside = directory
        self.root = os.path.join(directory, "indexes")
        os.mkdir(self.root)
        self.secret = os.path.join(directory, "secret.caibx")
        for path in (self.secret, os.path.join(self.root, "blob.caibx")):
            with open(path, "wb") as f:
                f.write(index)
        self.store = LocalIndexStore(self.root)

    def snapshot(self) -> dict[str, str]:
        """Every file under the directory and its content hash."""
        found = {}
        for base, _dirs, files in os.walk(self.outside):
            for name in files:
                path = os.path.join(base, name)
                with open(path, "rb") as f:
                    found[os.path.relpath(path, self.outside)] = hashlib.sha256(f.read()).hexdigest()
        return found


@pytest.fixture
def tree(tmp_path: str, index_bytes: bytes) -> Tree:
    return Tree(str(tmp_path), index_bytes)


@pytest.fixture
def serve() -> Iterator[Callable[..., IndexServer]]:
    """Start IndexServers (arguments as IndexServer's); all are shut down at teardown."""
    servers: list[IndexServer] = []

    def start(store: IndexStore, **kwargs: Any) -> IndexServer:
        server = IndexServer(store, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(grace=5)


def url(server: IndexServer, scheme: str = "http") -> str:
    host, port = server.addresses[0]
    return f"{scheme}://{host}:{port}"


def raw_request(server: IndexServer, data: bytes) -> int:
    """Send raw bytes (one request), return the answer's status."""
    return http_client.raw_request(server, data)[0]


def temp_files(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


# --------------------------------------------------------------------------- GET / HEAD / PUT


def test_get_and_head(tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]) -> None:
    server = serve(tree.store)
    status, response, body = request(server, "GET", "/blob.caibx")
    assert status == 200 and body == index_bytes
    assert response.getheader("Content-Length") == str(len(index_bytes))
    assert response.getheader("Content-Type") == "application/octet-stream"
    status, response, body = request(server, "HEAD", "/blob.caibx")
    assert status == 200 and body == b"" and response.getheader("Content-Length") == str(len(index_bytes))
    assert request(server, "GET", "/missing.caibx")[0] == 404
    assert request(server, "HEAD", "/missing.caibx")[0] == 404
    status, _, body = request(server, "GET", "http://example.org/blob.caibx")  # absolute form
    assert status == 200 and body == index_bytes


def test_put_round_trip_with_writable(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    server = serve(tree.store, writable=True)
    status, _, _ = request(server, "PUT", "/new%20one.caibx", body=index_bytes)
    assert status == 200
    with open(os.path.join(tree.root, "new one.caibx"), "rb") as f:
        assert f.read() == index_bytes
    assert request(server, "GET", "/new%20one.caibx")[2] == index_bytes
    assert temp_files(tree.root) == []


def test_put_refused_when_read_only(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    server = serve(tree.store)
    before = tree.snapshot()
    status, response, body = request(server, "PUT", "/new.caibx", body=index_bytes)
    assert status == 400 and b"not enabled" in body
    assert response.getheader("Connection") == "close"  # the unread body cannot be reused
    assert tree.snapshot() == before


def test_invalid_index_put_is_415_and_stores_nothing(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    server = serve(tree.store, writable=True)
    before = tree.snapshot()
    for body in (b"not an index", index_bytes[:-1], index_bytes[:100], index_bytes + b"\0" * 40):
        status, _, text = request(server, "PUT", "/blob.caibx", body=body)
        assert status == 415 and text.startswith(b"invalid index")
    assert tree.snapshot() == before and temp_files(tree.root) == []


def test_put_length_rules(tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]) -> None:
    server = serve(tree.store, writable=True, max_index_size=len(index_bytes) - 1)
    before = tree.snapshot()
    assert request(server, "PUT", "/big.caibx", body=index_bytes)[0] == 413
    head = "PUT /x.caibx HTTP/1.1\r\nHost: h\r\n"
    assert raw_request(server, (head + "\r\n").encode()) == 411
    assert raw_request(server, (head + "Content-Length: 500\r\n\r\n" + "x" * 100).encode()) == 400
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n"
    too_big = (chunked + f"{len(index_bytes):x}\r\n").encode() + index_bytes + b"\r\n0\r\n\r\n"
    assert raw_request(server, too_big) == 413
    for bad in ("zz\r\nx\r\n0\r\n\r\n", "5\r\nabc", "2\r\nabXY0\r\n\r\n", "1" * 20 + "\r\n"):
        assert raw_request(server, (chunked + bad).encode()) == 400, bad
    other = head + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert raw_request(server, other.encode()) == 501
    assert tree.snapshot() == before and temp_files(tree.root) == []


def _chunked(data: bytes, sizes: list[int]) -> bytes:
    out, pos, i = b"", 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        i += 1
        piece = data[pos : pos + n]
        pos += len(piece)
        out += f"{len(piece):x};ext=1\r\n".encode() + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


def test_chunked_put_as_go_clients_send_it(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    """desync's HTTP index store PUTs a piped body: Transfer-Encoding: chunked, no length."""
    server = serve(tree.store, writable=True)
    head = "PUT /chunked.caibx HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert raw_request(server, head.encode() + _chunked(index_bytes, [7, 1, 4096])) == 200
    with open(os.path.join(tree.root, "chunked.caibx"), "rb") as f:
        assert f.read() == index_bytes
    assert temp_files(tree.root) == []
    # http.client's own chunked encoding, on a keep-alive connection followed by a GET
    conn = http.client.HTTPConnection(*server.addresses[0], timeout=10)
    conn.request("PUT", "/again.caibx", body=iter([index_bytes[:10], index_bytes[10:]]), encode_chunked=True)
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    conn.request("GET", "/again.caibx")
    assert conn.getresponse().read() == index_bytes
    conn.close()


def test_other_methods_are_405(tree: Tree, serve: Callable[..., IndexServer]) -> None:
    server = serve(tree.store, writable=True)
    for method in ("DELETE", "POST", "PATCH", "OPTIONS"):
        status, response, _ = request(server, method, "/blob.caibx")
        assert status == 405 and response.getheader("Allow") == "GET, HEAD, PUT"
    assert os.path.exists(os.path.join(tree.root, "blob.caibx"))


def test_writable_needs_a_writable_store(tree: Tree) -> None:
    class ReadOnly(IndexStore):
        def open_index(self, name: str) -> io.BufferedReader:
            raise IndexNotFound(name)

        def __str__(self) -> str:
            return "read-only-store"

    with pytest.raises(StoreError, match="read-only-store is read-only"):
        IndexServer(ReadOnly(), writable=True)


# --------------------------------------------------------------------------- path safety

BAD_TARGETS = [
    "/", "//blob.caibx", "/../secret.caibx", "/%2e%2e/secret.caibx", "/%2E%2E%2Fsecret.caibx",
    "/..%2fsecret.caibx", "/%2e%2e", "/..", "/.", "/%2e", "/a/", "/a%2fb", "/a%2Fb", "/..%5csecret.caibx",
    "/a%5cb", "/a%00b", "/a%0ab", "/a%7f", "/%", "/%zz.caibx", "/%4", "/%ff.caibx", "/x/../blob.caibx",
    "/blob.caibx#f", "blob.caibx", "*", "/indexes//blob.caibx", "http://h/../secret.caibx", "/%2e/blob.caibx",
]


@pytest.mark.parametrize("target", ["/indexes/blob.caibx", "/blob.caibx?v=2", "/a/b/c/blob.caibx?x#"[:-1],
                                    "http://h:1/pre/blob.caibx"])
def test_prefixes_and_queries_name_the_last_segment_as_desync(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer], target: str
) -> None:
    server = serve(tree.store)
    raw = f"GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode()
    assert raw_request(server, raw) == 200


@pytest.mark.parametrize("target", BAD_TARGETS)
def test_malformed_targets_are_400(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer], target: str
) -> None:
    server = serve(tree.store, writable=True)
    before = tree.snapshot()
    for method in ("GET", "HEAD", "PUT"):
        body = f"Content-Length: {len(index_bytes)}\r\n" if method == "PUT" else ""
        raw = f"{method} {target} HTTP/1.1\r\nHost: h\r\n{body}\r\n".encode() + (index_bytes if body else b"")
        assert raw_request(server, raw) == 400, (method, target)
    assert tree.snapshot() == before


@pytest.mark.parametrize("raw_target", [b"/a\\b.caibx", b"/a\x00b.caibx", b"/..\\secret.caibx"])
def test_raw_backslash_and_nul_are_400(
    tree: Tree, serve: Callable[..., IndexServer], raw_target: bytes
) -> None:
    server = serve(tree.store, writable=True)
    before = tree.snapshot()
    assert raw_request(server, b"GET " + raw_target + b" HTTP/1.1\r\nHost: h\r\n\r\n") == 400
    assert raw_request(server, b"PUT " + raw_target + b" HTTP/1.1\r\nContent-Length: 1\r\n\r\nx") == 400
    assert tree.snapshot() == before


@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(valid_index_name))
def test_quoted_valid_names_are_accepted(name: str) -> None:
    assert index_name_from_target("/" + urllib.parse.quote(name, safe="")) == name
    assert index_name_from_target("/" + urllib.parse.quote(name, safe="/")) in (name, None)


@given(st.text(max_size=40))
def test_any_target_yields_a_safe_name_or_none(target: str) -> None:
    name = index_name_from_target(target)
    assert name is None or (valid_index_name(name) and "/" not in name and name not in (".", ".."))


# --------------------------------------------------------------------------- authorization and TLS


def test_authorization_required(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer], tmp_path: str
) -> None:
    log = os.path.join(tmp_path, "requests.log")
    server = serve(tree.store, writable=True, authorization=AUTH, log=log)
    assert request(server, "GET", "/blob.caibx")[0] == 401
    assert request(server, "GET", "/blob.caibx", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert request(server, "PUT", "/x.caibx", body=index_bytes)[0] == 401
    assert not os.path.exists(os.path.join(tree.root, "x.caibx"))
    with HTTPIndexStore(url(server), FAST.replace(http_auth=AUTH)) as store:
        store.put_index("x.caibx", io.BytesIO(index_bytes), len(index_bytes))
        with store.open_index("x.caibx") as f:
            assert f.read() == index_bytes
    with HTTPIndexStore(url(server), FAST) as store, pytest.raises(StoreError, match="access denied"):
        store.open_index("x.caibx")
    server.shutdown(grace=5)
    with open(log, encoding="utf-8") as f:
        text = f.read()
    assert "PUT /x.caibx" in text and " 401 " in text and AUTH not in text and "1ndex" not in text


def test_https_round_trip(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer], certs: Certs
) -> None:
    tls = TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert, mutual=True)
    server = serve(tree.store, writable=True, tls=tls)
    options = FAST.replace(ca_cert=certs.ca_cert, client_cert=certs.client_cert, client_key=certs.client_key)
    with HTTPIndexStore(url(server, "https"), options) as store:
        store.put_index("tls.caibx", io.BytesIO(index_bytes), len(index_bytes))
        assert store.has_index("tls.caibx") and not store.has_index("none.caibx")
        with store.open_index("tls.caibx") as f:
            assert f.read() == index_bytes
    with HTTPIndexStore(url(server, "https"), FAST) as store, pytest.raises(StoreError, match="not trusted"):
        store.open_index("tls.caibx")  # the test CA is not a system CA
    without_client = FAST.replace(ca_cert=certs.ca_cert, error_retry=1)
    with HTTPIndexStore(url(server, "https"), without_client) as store, pytest.raises(StoreError):
        store.open_index("tls.caibx")  # mutual TLS: no client certificate, no answer


@pytest.mark.parametrize("https", [False, True])
def test_large_refused_upload_reports_the_answer(
    tree: Tree, serve: Callable[..., IndexServer], certs: Certs, https: bool
) -> None:
    """The server answers and closes before reading a big body: the client reports that answer."""
    tls = TLSOptions(certs.server_cert, certs.server_key) if https else None
    options = FAST.replace(ca_cert=certs.ca_cert)
    big = b"x" * (8 << 20)
    servers = {
        "access denied": serve(tree.store, writable=True, tls=tls, authorization=AUTH),
        "HTTP 400 .*not enabled": serve(tree.store, tls=tls),
        "HTTP 413": serve(tree.store, writable=True, tls=tls, max_index_size=1000),
    }
    for expected, server in servers.items():
        with HTTPIndexStore(url(server, "https" if https else "http"), options) as store, \
                pytest.raises(StoreError, match=expected):
            store.put_index("big.caibx", io.BytesIO(big), len(big))
    assert os.listdir(tree.root) == ["blob.caibx"]


# --------------------------------------------------------------------------- clients and stores


def test_http_index_store_against_the_server(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    server = serve(tree.store, writable=True)
    with HTTPIndexStore(url(server) + "/", FAST) as store:
        for name in ("a b.caibx", "ünï%.caidx", "x+y=z&.caibx"):
            store.put_index(name, io.BytesIO(index_bytes), len(index_bytes))
            assert store.has_index(name)
            with store.open_index(name) as f:
                assert f.read() == index_bytes
            with open(os.path.join(tree.root, name), "rb") as f:
                assert f.read() == index_bytes
        with pytest.raises(IndexNotFound):
            store.open_index("nothing.caibx")
        with pytest.raises(StoreError, match="HTTP 415"):
            store.put_index("bad.caibx", io.BytesIO(b"garbage"), 7)
        with pytest.raises(StoreError):  # the source ends early: the server stores nothing
            store.put_index("short.caibx", io.BytesIO(index_bytes[:50]), len(index_bytes))
    assert not os.path.exists(os.path.join(tree.root, "bad.caibx"))
    assert not os.path.exists(os.path.join(tree.root, "short.caibx"))
    assert temp_files(tree.root) == []


def test_server_in_front_of_a_remote_index_store(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer]
) -> None:
    """A proxy: the front server's store is an HTTP index store (bodies spooled, HEAD via has_index)."""
    back = serve(tree.store, writable=True)
    with HTTPIndexStore(url(back), FAST) as upstream:
        front = serve(upstream, writable=True)
        status, response, body = request(front, "GET", "/blob.caibx")
        assert status == 200 and body == index_bytes
        assert response.getheader("Content-Length") == str(len(index_bytes))
        assert request(front, "HEAD", "/blob.caibx")[0] == 200
        assert request(front, "HEAD", "/none.caibx")[0] == 404
        assert request(front, "GET", "/none.caibx")[0] == 404
        assert request(front, "PUT", "/via.caibx", body=index_bytes)[0] == 200
    with open(os.path.join(tree.root, "via.caibx"), "rb") as f:
        assert f.read() == index_bytes


def test_concurrent_puts_and_gets_see_whole_indexes(
    tree: Tree, index_bytes: bytes, serve: Callable[..., IndexServer], tmp_path: str
) -> None:
    other_blob = os.path.join(tmp_path, "other")
    with open(other_blob, "wb") as f:
        f.write(rng_bytes(300_000, seed=12))
    make(os.path.join(tmp_path, "other.caibx"), other_blob, None, params=PARAMS)
    with open(os.path.join(tmp_path, "other.caibx"), "rb") as f:
        versions = {index_bytes, f.read()}
    server = serve(tree.store, writable=True)
    errors: list[BaseException] = []

    def writer(data: bytes) -> None:
        with HTTPIndexStore(url(server), FAST) as store:
            for _ in range(10):
                store.put_index("blob.caibx", io.BytesIO(data), len(data))

    def reader() -> None:
        with HTTPIndexStore(url(server), FAST) as store:
            for _ in range(20):
                with store.open_index("blob.caibx") as f:
                    got = f.read()
                if got not in versions:
                    errors.append(AssertionError(f"partial index of {len(got)} bytes"))
                Index(io.BytesIO(got))

    threads = [threading.Thread(target=writer, args=(v,)) for v in versions]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and temp_files(tree.root) == []


# --------------------------------------------------------------------------- serve_indexes in a process


def test_serve_indexes_until_sigterm(tree: Tree, index_bytes: bytes, tmp_path: str) -> None:
    script = (
        "import sys\n"
        "from casync_store.stores.indexstore import LocalIndexStore\n"
        "from casync_store.serve.indexserver import serve_indexes\n"
        "def ready(addresses):\n"
        "    print(addresses[0][1], flush=True)\n"
        "serve_indexes(LocalIndexStore(sys.argv[1]), ['127.0.0.1:0'], writable=True, ready=ready)\n"
        "print('stopped', flush=True)\n"
    )
    env = dict(os.environ, PYTHONPATH=ROOT)
    command = [sys.executable, "-c", script, tree.root]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("PUT", "/p.caibx", body=index_bytes)
        assert conn.getresponse().status == 200
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out.strip() == "stopped"
    with open(os.path.join(tree.root, "p.caibx"), "rb") as f:
        assert f.read() == index_bytes
