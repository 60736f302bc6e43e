"""Tests of the chunk server (casync_store.serve.chunkserver): casync's client, reads and writes.

Everything runs against a real server on 127.0.0.1 (ephemeral ports) over a
real LocalStore filled by ``make``: real casync's HTTP(S) client extracting
through it (plain, with Basic authorization, over HTTPS), GET and HEAD of
present and missing chunks, keep-alive, uncompressed mode, store errors as
500s, serving a store chain with a cache, and PUT: refused when read-only,
verified before storing, body rules and ``Expect: 100-continue``. Request
paths, authorization, TLS and logs are in ``test_chunkserver_access.py``;
load and shutdown in ``test_chunkserver_load.py``.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import shutil
import socket
import subprocess
from typing import Any, Callable

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import StoreError
from casync_store import LocalStore, combine
from casync_store.serve.chunkserver import ChunkServer
from casync_store.serve.httpserver import TLSOptions
from casync_store.stores.base import Store
from tests.support import rng_bytes
from tests.support.certs import Certs
from tests.support.chunkserver import Blob, chunk_path
from tests.support.http_client import raw_request, request


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Blob:
    """A blob made into a store (shadows tests/conftest.py's ``blob``, which ``made`` needs)."""
    return Blob(str(tmp_path_factory.mktemp("blob")))


# --- casync's own HTTP client -------------------------------------------------------------------


def test_casync_extract_over_http(blob: Blob, serve: Callable[..., ChunkServer], casync: str,
                                  tmp_path: Any) -> None:
    server = serve(blob.store)
    host, port = server.addresses[0]
    out = tmp_path / "out"
    subprocess.run([casync, "extract", f"--store=http://{host}:{port}/", blob.index, str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == blob.data


def test_casync_extract_with_basic_authorization(blob: Blob, serve: Callable[..., ChunkServer],
                                                 casync: str, tmp_path: Any) -> None:
    # Debian's casync (2+20201210) has no auth option and ignores ~/.netrc, but its curl
    # sends Basic credentials written into the store URL.
    server = serve(blob.store, authorization="Basic " + base64.b64encode(b"user:pa55").decode())
    host, port = server.addresses[0]
    out = tmp_path / "out"
    for password, ok in (("wrong", False), ("pa55", True)):
        argv = [casync, "extract", f"--store=http://user:{password}@{host}:{port}/", blob.index, str(out)]
        assert (subprocess.run(argv, capture_output=True).returncode == 0) == ok
    assert out.read_bytes() == blob.data


def _private_ca_bundle_prefix(bundle: str) -> list[str]:
    """argv prefix running a command that sees ``bundle`` as the system CA bundle, or skip.

    casync-https uses libcurl-gnutls with the compiled-in bundle
    /etc/ssl/certs/ca-certificates.crt and no option or environment variable
    (CURL_CA_BUNDLE, SSL_CERT_FILE, SSL_CERT_DIR were tried) changes it, so
    the test bind-mounts our CA over it in a private mount namespace.
    """
    system = "/etc/ssl/certs/ca-certificates.crt"
    unshare = shutil.which("unshare")
    if unshare is None or not os.path.exists(system):
        pytest.skip("needs unshare(1) and /etc/ssl/certs/ca-certificates.crt to make casync trust a test CA")
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    for flags in (["-m"], ["-r", "-m"]):
        prefix = [unshare, *flags, "sh", "-c", script, "sh", bundle, system]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    pytest.skip("cannot create a private mount namespace (unshare -m / -rm) to make casync trust a test CA")


def test_casync_extract_over_https(blob: Blob, certs: Certs, serve: Callable[..., ChunkServer],
                                   casync: str, tmp_path: Any) -> None:
    server = serve(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key))
    host, port = server.addresses[0]
    out = tmp_path / "out"
    argv = [casync, "extract", f"--store=https://{host}:{port}/", blob.index, str(out)]
    untrusted = subprocess.run(argv, capture_output=True)
    assert untrusted.returncode != 0 and not out.exists()
    subprocess.run([*_private_ca_bundle_prefix(certs.ca_cert), *argv], check=True, capture_output=True)
    assert out.read_bytes() == blob.data


# --- reads ----------------------------------------------------------------------------------------


def test_get_and_head_present_and_missing(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store)
    cid = blob.ids[0]
    status, response, body = request(server, "GET", chunk_path(cid))
    assert status == 200 and body == blob.store.get_raw(cid)
    assert response.getheader("Content-Length") == str(len(body))
    status, _, body = request(server, "HEAD", chunk_path(cid))
    assert (status, body) == (200, b"")
    missing = SHA512_256(b"not in the store")
    for method in ("GET", "HEAD"):
        assert request(server, method, chunk_path(missing))[0] == 404


def test_keep_alive_serves_many_requests_on_one_connection(blob: Blob,
                                                           serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store)
    conn = http.client.HTTPConnection(*server.addresses[0], timeout=10)
    with contextlib.closing(conn):
        missing = chunk_path(SHA512_256(b"x"))
        for target in (chunk_path(blob.ids[1]), missing, "/bad", chunk_path(blob.ids[2])):
            conn.request("GET", target)
            response = conn.getresponse()
            response.read()
            assert response.status in (200, 400, 404) and not response.will_close
        assert conn.sock is not None  # never reconnected


def test_uncompressed_mode(blob: Blob, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    server = serve(blob.store, uncompressed=True)
    cid, size = blob.chunks[3]
    status, _, body = request(server, "GET", chunk_path(cid, ""))
    assert status == 200 and len(body) == size and SHA512_256(body) == cid
    assert request(server, "GET", chunk_path(cid))[0] == 400  # compressed paths are not served with -u
    assert request(server, "HEAD", chunk_path(cid, ""))[0] == 200
    assert request(server, "GET", chunk_path(SHA512_256(b"nope"), ""))[0] == 404

    store = LocalStore(str(tmp_path / "w"), sync=False)
    writer = serve(store, uncompressed=True, writable=True)
    data = rng_bytes(5000, seed=3)
    wid = SHA512_256(data)
    assert request(writer, "PUT", chunk_path(wid, ""), body=data + b"!")[0] == 400
    assert not store.has_chunk(wid)
    assert request(writer, "PUT", chunk_path(wid, ""), body=data)[0] == 200
    assert store.get_chunk(wid, SHA512_256) == data


def test_uncompressed_get_of_a_damaged_chunk_is_a_500(serve: Callable[..., ChunkServer], tmp_path: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(str(tmp_path / "s"), sync=False)
    cid = SHA512_256(b"original")
    store.put_raw(cid, chunk_codec.encode(b"swapped"))
    server = serve(store, uncompressed=True)
    with caplog.at_level(logging.ERROR, logger="casync_store.serve.chunkserver"):
        status, _, body = request(server, "GET", chunk_path(cid, ""))
    assert status == 500 and len(body) < 200 and cid.hex() in caplog.text


class BrokenStore(Store):
    """A store whose reads fail (an unreachable upstream)."""

    def get_raw(self, chunk_id: bytes) -> bytes:
        raise StoreError("store broken://: connection refused")

    def has_chunk(self, chunk_id: bytes) -> bool:
        raise StoreError("store broken://: connection refused")

    def __str__(self) -> str:
        return "broken://"


def test_store_errors_are_500_with_a_short_body_and_logged(serve: Callable[..., ChunkServer],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    server = serve(BrokenStore())
    cid = SHA512_256(b"x")
    with caplog.at_level(logging.ERROR, logger="casync_store.serve.chunkserver"):
        status, _, body = request(server, "GET", chunk_path(cid))
        assert status == 500 and b"connection refused" not in body and len(body) < 200
        assert request(server, "HEAD", chunk_path(cid))[0] == 500
    assert "connection refused" in caplog.text and cid.hex() in caplog.text


def test_serves_a_chain_with_a_cache(blob: Blob, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    cache = LocalStore(str(tmp_path / "cache"), sync=False)
    server = serve(combine([LocalStore(str(tmp_path / "empty")), blob.store], cache=cache))
    cid = blob.ids[4]
    status, _, body = request(server, "GET", chunk_path(cid))
    assert status == 200 and body == blob.store.get_raw(cid) and cache.has_chunk(cid)


# --- writes ---------------------------------------------------------------------------------------


def test_put_refused_on_a_read_only_server(serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path / "ro"), sync=False)
    server = serve(store)
    data = b"chunk data" * 100
    cid = SHA512_256(data)
    status, _, _ = request(server, "PUT", chunk_path(cid), body=chunk_codec.encode(data))
    assert status == 400  # what desync answers
    assert not store.has_chunk(cid)
    assert request(server, "DELETE", chunk_path(cid))[0] == 405
    assert request(server, "POST", chunk_path(cid), body=b"x")[0] == 405


def test_writable_needs_a_writable_store() -> None:
    with pytest.raises(StoreError, match="read-only"):
        ChunkServer(BrokenStore(), writable=True)


def test_put_verifies_the_chunk_before_storing(serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path / "w"), sync=False)
    server = serve(store, writable=True)
    data = rng_bytes(100_000, seed=5)
    cid = SHA512_256(data)
    target = chunk_path(cid)
    status, _, body = request(server, "PUT", target, body=chunk_codec.encode(data[:-1] + b"?"))
    assert status == 400 and cid.hex().encode() in body and not store.has_chunk(cid)
    assert request(server, "PUT", target, body=b"not zstd at all")[0] == 400
    assert not store.has_chunk(cid)
    for compression in ("zstd", "xz", "gzip"):  # stored as sent: casync's clients read all three
        blob = chunk_codec.encode(data, compression)
        assert request(server, "PUT", target, body=blob)[0] == 200
        assert store.get_raw(cid) == blob and store.get_chunk(cid, SHA512_256) == data


def test_put_body_rules(serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path / "w"), sync=False)
    server = serve(store, writable=True)
    cid = SHA512_256(b"x")
    head = f"PUT {chunk_path(cid)} HTTP/1.1\r\nHost: t\r\n"
    chunked = head + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    assert raw_request(server, chunked.encode())[0] == 411
    assert raw_request(server, (head + "\r\n").encode())[0] == 411
    assert raw_request(server, (head + "Content-Length: 999999999999\r\n\r\n").encode())[0] == 413
    assert raw_request(server, (head + "Content-Length: -1\r\n\r\n").encode())[0] == 400
    short = head + "Content-Length: 100\r\n\r\n" + "x" * 10
    assert raw_request(server, short.encode())[0] == 400
    assert not store.has_chunk(cid)


def test_expect_100_continue_is_sent_only_when_the_body_is_wanted(serve: Callable[..., ChunkServer],
                                                                   tmp_path: Any) -> None:
    store = LocalStore(str(tmp_path / "w"), sync=False)
    data = b"expect" * 1000
    cid = SHA512_256(data)
    blob = chunk_codec.encode(data)
    head = (f"PUT {chunk_path(cid)} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(blob)}\r\n\r\n").encode()
    for writable, first in ((True, b"HTTP/1.1 100 Continue"), (False, b"HTTP/1.1 400")):
        server = serve(store, writable=writable)
        with socket.create_connection(server.addresses[0], timeout=10) as sock:
            sock.sendall(head)
            assert sock.recv(4096).startswith(first)
            if writable:
                sock.sendall(blob)
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert store.get_chunk(cid, SHA512_256) == data
