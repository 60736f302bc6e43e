"""Tests for the chunk server (casync_store.serve: chunkserver and its HTTP layer, httpserver).

Everything runs against a real server on 127.0.0.1 (ephemeral ports) over a
real LocalStore filled by ``make``: real casync's HTTP(S) client, raw
http.client/ssl/socket requests, certificates made with the openssl CLI, a
subprocess stopped with SIGTERM/SIGINT.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import chunk as chunk_codec
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import CasyncError, ParameterError, StoreError
from casync_store import LocalStore, combine
from casync_store.ops.make import make
from casync_store.serve.chunkserver import ChunkServer, chunk_id_from_target
from casync_store.serve.httpserver import TLSOptions, parse_listen
from casync_store.stores.base import Store
from casync_store.stores.indexio import open_index
from tests.support import ROOT, rng_bytes
from tests.support.certs import Certs
from tests.support.http_client import raw_request, request

PARAMS = ChunkerParams.from_string("4:16:64")
AUTH = "Bearer s3cr3t-t0ken-value"


class Blob:
    """A blob, its index, and the store holding its chunks."""

    def __init__(self, directory: str) -> None:
        self.data = rng_bytes(2 * 1024 * 1024, seed=7)
        self.path = os.path.join(directory, "blob")
        self.index = os.path.join(directory, "blob.caibx")
        self.store_dir = os.path.join(directory, "store")
        with open(self.path, "wb") as f:
            f.write(self.data)
        self.store = LocalStore(self.store_dir, sync=False)
        make(self.index, self.path, self.store, params=PARAMS)
        with open_index(self.index) as index:
            self.chunks = [(c.id, c.size) for c in index]
        self.ids = [cid for cid, _ in self.chunks]


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> Blob:
    return Blob(str(tmp_path_factory.mktemp("blob")))


@pytest.fixture
def serve() -> Iterator[Callable[..., ChunkServer]]:
    """Start ChunkServers (arguments as ChunkServer's); all are shut down at teardown."""
    servers: list[ChunkServer] = []

    def start(store: Store, **kwargs: Any) -> ChunkServer:
        server = ChunkServer(store, **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown(grace=5)


def chunk_path(cid: bytes, suffix: str = ".cacnk") -> str:
    return f"/{cid.hex()[:4]}/{cid.hex()}{suffix}"


def raw_get(server: ChunkServer, target: str, method: str = "GET") -> tuple[int, bytes]:
    line = f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    status, reply = raw_request(server, line.encode("latin-1"))
    return status, reply.partition(b"\r\n\r\n")[2]


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


# --- paths ----------------------------------------------------------------------------------------


def test_chunk_id_from_target() -> None:
    cid = SHA512_256(b"a")
    h = cid.hex()
    assert chunk_id_from_target(f"/{h[:4]}/{h}.cacnk") == cid
    assert chunk_id_from_target(f"/{h[:4]}/{h}", uncompressed=True) == cid
    assert chunk_id_from_target(f"http://example.com:80/{h[:4]}/{h}.cacnk") == cid
    assert chunk_id_from_target(f"/{h[:4]}/{h}") is None
    assert chunk_id_from_target(f"/{h[:4]}/{h}.cacnk", uncompressed=True) is None


def bad_targets(store_dir: str, cid: bytes) -> list[str]:
    h, p = cid.hex(), cid.hex()[:4]
    other = "0000" if p != "0000" else "ffff"
    return [
        "/", "", "*", "/etc/passwd", "/../../../../etc/passwd", f"/{p}/../{p}/{h}.cacnk",
        f"/{p}/./{h}.cacnk", f"/%2e%2e/{p}/{h}.cacnk", f"/{p}%2f{h}.cacnk", f"/{p}/{h}%2ecacnk",
        f"//{p}/{h}.cacnk", f"/{p}//{h}.cacnk", f"{p}/{h}.cacnk", f"/{p}/{h}.cacnk/",
        f"/{p}/{h}.cacnk?x=1", f"/{p}/{h}.cacnk#f", f"/{p}/{h}.cacnk.cacnk", f"/{p}/{h}.CACNK",
        f"/{p.upper()}/{h.upper()}.cacnk", f"/{p}/{h[:-1]}.cacnk", f"/{p}/{h}0.cacnk",
        f"/{other}/{h}.cacnk", f"\\{p}\\{h}.cacnk", f"/{p}\\{h}.cacnk", f"/x/{p}/{h}.cacnk",
        f"{store_dir}/{p}/{h}.cacnk", f"/{p}/{h}.cacnk%00", f"/{p}/{h}", f"/{p}/{h}.cacnk.tmp",
        f"http://t/../{p}/{h}.cacnk", f"file:///{p}/{h}.cacnk", f"/{p}/{h}.cacnk;x",
    ]


def test_malformed_and_traversal_paths_are_400(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    cid = blob.ids[0]
    server = serve(blob.store)
    for target in bad_targets(blob.store_dir, cid):
        for method in ("GET", "HEAD", "PUT"):
            status, _ = raw_get(server, target, method)
            assert status == 400, (method, target, status)
    assert raw_get(server, f"http://t{chunk_path(cid)}")[0] == 200  # absolute-form is fine


def test_files_outside_the_chunk_layout_are_never_served(blob: Blob, serve: Callable[..., ChunkServer],
                                                         tmp_path: Any) -> None:
    store_dir = tmp_path / "s"
    store = LocalStore(str(store_dir), sync=False)
    cid = SHA512_256(b"secret")
    h = cid.hex()
    store_dir.mkdir()
    (store_dir / f"{h}.cacnk").write_bytes(b"top-level file")  # not under its prefix directory
    (store_dir / h[:4]).mkdir()
    (store_dir / h[:4] / "x.cacnk").write_bytes(b"odd name")
    server = serve(store)
    for target in (f"/{h}.cacnk", f"/{h[:4]}/x.cacnk", f"/{h[:4]}/../{h}.cacnk"):
        assert raw_get(server, target)[0] == 400
    assert raw_get(server, chunk_path(cid))[0] == 404


TARGET_CHARS = "/\\.%2eE0aAbcdfn?#:;~ -_\x00\x7f\xe9"


@st.composite
def targets(draw: st.DrawFn, ids: list[bytes]) -> str:
    """Random request targets: noise, and well-formed paths (present or not) with small mutations."""
    if draw(st.booleans()):
        return draw(st.text(alphabet=TARGET_CHARS, min_size=1, max_size=90))
    cid = draw(st.sampled_from([*ids[:8], SHA512_256(b"absent")]))
    path = list(chunk_path(cid, draw(st.sampled_from([".cacnk", "", ".cacnk.cacnk", "/"]))))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(path)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(TARGET_CHARS))
        if kind == "insert":
            path.insert(at, char)
        elif path and at < len(path):
            path[at:at + 1] = [] if kind == "delete" else [char]
    return "".join(path)


@pytest.fixture(scope="module")
def module_server(blob: Blob) -> Iterator[ChunkServer]:
    with ChunkServer(blob.store) as server:
        yield server


@given(data=st.data())
def test_random_targets_never_reach_outside_the_store(blob: Blob, module_server: ChunkServer,
                                                      data: st.DataObject) -> None:
    target = data.draw(targets(blob.ids))
    method = data.draw(st.sampled_from(["GET", "HEAD"]))
    if any(c in target for c in " \r\n"):
        target = target.replace(" ", "%20").replace("\r", "").replace("\n", "")
    status, body = raw_get(module_server, target, method)
    assert 400 <= status < 500 or status == 200, (target, status)
    cid = chunk_id_from_target(target)
    if status == 200:
        assert cid is not None and blob.store.has_chunk(cid)
        if method == "GET":
            assert body == blob.store.get_raw(cid)
    elif cid is None:
        assert status == 400


def test_request_size_bounds(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store)
    assert raw_get(server, "/" + "a" * 9000)[0] == 414
    huge_header = f"GET {chunk_path(blob.ids[0])} HTTP/1.1\r\nHost: t\r\nX-Big: {'b' * 70000}\r\n\r\n"
    assert raw_request(server, huge_header.encode())[0] == 431
    many = "".join(f"X-{i}: v\r\n" for i in range(200))
    assert raw_request(server, f"GET / HTTP/1.1\r\n{many}\r\n".encode())[0] == 431
    assert raw_request(server, b"GARBAGE\r\n\r\n")[0] == 400
    assert raw_request(server, b"GET / HTTP/9.0\r\n\r\n")[0] in (400, 505)


# --- authorization, TLS, logs -------------------------------------------------------------------


def test_authorization(blob: Blob, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    log = tmp_path / "requests.log"
    server = serve(blob.store, authorization=AUTH, log=str(log))
    target = chunk_path(blob.ids[0])
    assert request(server, "GET", target)[0] == 401
    assert request(server, "GET", target, headers={"Authorization": AUTH + "x"})[0] == 401
    assert request(server, "GET", target, headers={"Authorization": "Bearer"})[0] == 401
    assert request(server, "HEAD", "/bad/path", headers={"Authorization": "x"})[0] == 401
    status, _, body = request(server, "GET", target, headers={"Authorization": AUTH})
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    twice = f"GET {target} HTTP/1.1\r\nHost: t\r\nAuthorization: {AUTH}\r\nAuthorization: {AUTH}\r\n\r\n"
    assert raw_request(server, twice.encode())[0] == 401
    server.shutdown()
    text = log.read_text()
    assert text.count("\n") == 6 and " 401 " in text and " 200 " in text and target in text
    assert "s3cr3t" not in text


def test_request_log_to_stdout(blob: Blob, serve: Callable[..., ChunkServer],
                               capsys: pytest.CaptureFixture[str]) -> None:
    server = serve(blob.store, log="-")
    request(server, "GET", chunk_path(blob.ids[0]), headers={"Authorization": "never-logged"})
    raw_get(server, "/evil\x1b[31m\x00")
    server.shutdown()
    out = capsys.readouterr().out
    assert f'"GET {chunk_path(blob.ids[0])} HTTP/1.1" 200' in out
    assert "never-logged" not in out and "\x1b" not in out and "\\x1b" in out


def client_context(certs: Certs, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca_cert)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def test_https(blob: Blob, certs: Certs, serve: Callable[..., ChunkServer]) -> None:
    server = serve(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key))
    status, _, body = request(server, "GET", chunk_path(blob.ids[0]), context=client_context(certs))
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    with pytest.raises(ssl.SSLError):  # a client that does not trust our CA
        request(server, "GET", chunk_path(blob.ids[0]), context=ssl.create_default_context())
    with contextlib.suppress(OSError):  # plain HTTP to a TLS port: no HTTP reply
        assert raw_get(server, chunk_path(blob.ids[0]))[0] == 0
    assert request(server, "GET", chunk_path(blob.ids[0]), context=client_context(certs))[0] == 200


def test_mutual_tls(blob: Blob, certs: Certs, serve: Callable[..., ChunkServer], tmp_path: Any) -> None:
    log = tmp_path / "log"
    tls = TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert, mutual=True)
    server = serve(blob.store, tls=tls, log=str(log))
    target = chunk_path(blob.ids[0])
    for refused in (client_context(certs),
                    client_context(certs, certs.other_client_cert, certs.other_client_key),
                    client_context(certs, certs.server_cert, certs.server_key)):  # not a client cert
        with pytest.raises((ssl.SSLError, ConnectionError)):
            request(server, "GET", target, context=refused)
    right = client_context(certs, certs.client_cert, certs.client_key)
    status, _, body = request(server, "GET", target, context=right)
    assert status == 200 and body == blob.store.get_raw(blob.ids[0])
    server.shutdown()
    assert log.read_text().count("TLS handshake failed") == 3


def test_tls_and_listen_options_are_checked(blob: Blob, certs: Certs, tmp_path: Any) -> None:
    with pytest.raises(ParameterError, match="client CA"):
        ChunkServer(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key, mutual=True))
    with pytest.raises(ParameterError, match="mutual"):
        ChunkServer(blob.store, tls=TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert))
    with pytest.raises(ParameterError, match=r"nope\.pem"):
        ChunkServer(blob.store, tls=TLSOptions(str(tmp_path / "nope.pem"), certs.server_key))
    with pytest.raises(ParameterError, match="listen address"):
        ChunkServer(blob.store, listen=["8080"])
    with pytest.raises(ParameterError, match="request log"):
        ChunkServer(blob.store, log=str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(ParameterError, match="Authorization"):
        ChunkServer(blob.store, authorization="a\r\nX-Injected: 1")
    taken = ChunkServer(blob.store)
    taken.start()
    try:
        with pytest.raises(CasyncError, match="cannot listen") as exc:  # a failure, not a usage error
            ChunkServer(blob.store, listen=[f"127.0.0.1:{taken.addresses[0][1]}"]).start()
        assert not isinstance(exc.value, ParameterError)
    finally:
        taken.shutdown()


def test_parse_listen() -> None:
    assert parse_listen(":8080") == ("", 8080)
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8443") == ("::1", 8443)
    assert parse_listen("localhost:65535") == ("localhost", 65535)
    assert parse_listen(":http") == ("", 80)
    assert parse_listen(":https") == ("", 443)
    for bad in ("8080", "::1:80", "[::1]", "[::1]80", "host:65536", "host:-1", "host:", "host:no such",
                "[127.0.0.1]:80", "a b:80"):
        with pytest.raises(ParameterError):
            parse_listen(bad)


def test_several_listen_addresses(blob: Blob, serve: Callable[..., ChunkServer]) -> None:
    listen = ["127.0.0.1:0", "localhost:0", ":0"]  # ":0": every interface (IPv6 dual-stack when possible)
    if socket.has_ipv6 and _ipv6_loopback():
        listen.append("[::1]:0")
    server = serve(blob.store, listen=listen)
    assert len(server.addresses) == len(listen)
    for host, port in server.addresses:
        host = "127.0.0.1" if host in ("::", "0.0.0.0") else host
        with contextlib.closing(http.client.HTTPConnection(host, port, timeout=10)) as conn:
            conn.request("HEAD", chunk_path(blob.ids[0]))
            assert conn.getresponse().status == 200


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


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

