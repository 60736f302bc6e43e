"""The HTTP(S) store client: faults against a misbehaving server, the happy path against the chunk server.

Fault tests use :mod:`tests.support.faulty_http` (a real HTTP server that answers 500s,
resets, short bodies, slow answers, 401/403/404 on request) and count the
requests it received, so "404 is never retried" and "a 500 is retried exactly
``error_retry`` times" are checked on the wire. The happy path runs against
pycasync's own chunk server (:mod:`casync_store.serve.chunkserver`) over HTTP and
HTTPS, with certificates made by ``openssl`` (:mod:`tests.support.certs`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, ParameterError, StoreError
from casync_store import CachedStore, LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.make import make
from casync_store.pipeline import ZeroChunk
from casync_store.plumbing.config import StoreOptions, load_config
from casync_store.serve.chunkserver import ChunkServer
from casync_store.serve.httpserver import TLSOptions
from casync_store.stores import http as http_store
from casync_store.stores.base import Store
from casync_store.stores.http import HTTPStore, open_http
from casync_store.stores.indexio import open_index
from casync_store.stores.location import open_store, redact
from tests.support import free_port, rng_bytes
from tests.support.certs import Certs
from tests.support.faulty_http import CloseAfter, Drop, FaultyServer, Reset, Short, Slow, Status

METHOD = "zstd" if compress.ZSTD_BACKEND else "gzip"
SMALL = ChunkerParams.from_string("16:64:256")


def options(**changes: object) -> StoreOptions:
    """Fast retries and short timeouts for tests."""
    base = StoreOptions(timeout=5.0, error_retry=3, error_retry_base_interval=0.001)
    return base.replace(**changes)


def make_chunk(seed: int, size: int = 5000) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob)."""
    data = bytes((seed + i * 7) % 251 for i in range(size))
    return SHA512_256(data), data, chunk_codec.encode(data, METHOD)


def chunk_path(cid: bytes, base: str = "/", suffix: str = ".cacnk") -> str:
    return f"{base}{cid.hex()[:4]}/{cid.hex()}{suffix}"


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    with FaultyServer() as srv:
        yield srv


@pytest.fixture
def chunk(server: FaultyServer) -> tuple[bytes, bytes, bytes]:
    """A chunk the server holds."""
    cid, data, blob = make_chunk(1)
    server.chunks[chunk_path(cid)] = blob
    return cid, data, blob


def faulty_store(server: FaultyServer, path: str = "/", **changes: object) -> HTTPStore:
    return open_http(server.url + path, options(**changes))


# --------------------------------------------------------------------------- basics


def test_get_has_put(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, data, blob = chunk
    with faulty_store(server) as store:
        assert store.get_raw(cid) == blob
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert store.has_chunk(cid)
        other, odata, oblob = make_chunk(2)
        assert not store.has_chunk(other)
        store.put_raw(other, oblob)
        assert server.chunks[chunk_path(other)] == oblob
        assert store.get_chunk(other, SHA512_256) == odata
        other3, data3, _ = make_chunk(3)
        store.store_chunk(other3, data3)
        assert chunk_codec.decode(server.chunks[chunk_path(other3)], other3, SHA512_256) == data3
    put = [r for r in server.requests if r.method == "PUT"]
    assert put[0].headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("path", "base"),
    [("", "/"), ("/", "/"), ("/path", "/path/"), ("/path/", "/path/"), ("/a/b", "/a/b/"),
     ("/with%20space/", "/with%20space/"), ("/with space", "/with%20space/")],
)
def test_url_path(server: FaultyServer, path: str, base: str) -> None:
    cid = make_chunk(4)[0]
    with faulty_store(server, path) as store:
        with pytest.raises(ChunkMissing):
            store.get_raw(cid)
        assert store.chunk_path(cid) == chunk_path(cid, base)
    assert server.requests[-1].path == chunk_path(cid, base)


def test_missing_names_chunk_and_store(server: FaultyServer) -> None:
    cid = make_chunk(5)[0]
    with faulty_store(server, "/store") as store:
        with pytest.raises(ChunkMissing) as exc:
            store.get_chunk(cid, SHA512_256)
        assert exc.value.chunk_id == cid and exc.value.store is store
        assert cid.hex() in str(exc.value) and f"{server.url}/store" in str(exc.value)


def test_get_chunk_verifies(server: FaultyServer) -> None:
    cid = make_chunk(6)[0]
    server.chunks[chunk_path(cid)] = make_chunk(7)[2]
    with faulty_store(server) as store, pytest.raises(ChunkInvalid) as exc:
        store.get_chunk(cid, SHA512_256)
    assert server.url in str(exc.value)
    with faulty_store(server, skip_verify=True) as store:  # skip-verify: served as it is
        assert store.get_chunk(cid, SHA512_256) == make_chunk(7)[1]


def test_bad_locations() -> None:
    for bad in ("ftp://host/x", "http:///path", "http://host:notaport/"):
        with pytest.raises(ParameterError):
            HTTPStore(bad)
    with pytest.raises(ParameterError) as exc:
        HTTPStore("http://127.0.0.1/", StoreOptions(http_auth="Bearer SECRET\r\nX: y"))
    assert "SECRET" not in str(exc.value)


def test_closed_store_refuses(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    store = faulty_store(server)
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get_raw(chunk[0])


# --------------------------------------------------------------------------- status codes


def test_404_is_missing_and_never_retried(server: FaultyServer) -> None:
    cid = make_chunk(8)[0]
    with faulty_store(server, error_retry=5) as store:
        with pytest.raises(ChunkMissing):
            store.get_raw(cid)
        assert not store.has_chunk(cid)
    assert server.count("GET") == 1 and server.count("HEAD") == 1


@pytest.mark.parametrize("code", [401, 403])
def test_denied_fails_at_once(server: FaultyServer, chunk: tuple[bytes, bytes, bytes], code: int) -> None:
    cid = chunk[0]
    server.plan(None, Status(code), Status(code), Status(code))
    with faulty_store(server, error_retry=5) as store:
        for call in (store.get_raw, store.has_chunk, lambda c: store.put_raw(c, chunk[2])):
            with pytest.raises(StoreError) as exc:
                call(cid)
            assert not isinstance(exc.value, ChunkMissing)
            assert str(code) in str(exc.value) and server.url in str(exc.value)
            assert cid.hex() in str(exc.value)
    assert len(server.requests) == 3


@pytest.mark.parametrize("code", [400, 405, 410, 418])
def test_other_4xx_fail_at_once(server: FaultyServer, chunk: tuple[bytes, bytes, bytes], code: int) -> None:
    server.plan(None, Status(code, b"nope: the reason\n"))
    with faulty_store(server) as store, pytest.raises(StoreError) as exc:
        store.get_raw(chunk[0])
    assert f"HTTP {code}" in str(exc.value) and "nope: the reason" in str(exc.value)
    assert server.count() == 1


def test_put_404_is_an_error_not_missing(server: FaultyServer) -> None:
    cid, _, blob = make_chunk(9)
    server.plan(None, Status(404))
    with faulty_store(server) as store, pytest.raises(StoreError) as exc:
        store.put_raw(cid, blob)
    assert "HTTP 404" in str(exc.value) and not isinstance(exc.value, ChunkMissing)


def test_5xx_retried_then_served(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, _, blob = chunk
    server.plan(chunk_path(cid), Status(500), Status(503))
    with faulty_store(server, error_retry=3) as store:
        assert store.get_raw(cid) == blob
    assert server.count("GET") == 3


def test_5xx_retried_exactly_error_retry_times(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes]
) -> None:
    cid = chunk[0]
    server.plan(None, *[Status(502, b"Bad Gateway")] * 10)
    with faulty_store(server, error_retry=4) as store, pytest.raises(StoreError) as exc:
        store.get_raw(cid)
    assert server.count("GET") == 4
    msg = str(exc.value)
    assert "HTTP 502" in msg and "Bad Gateway" in msg and server.url in msg and "4 attempts" in msg


@pytest.mark.parametrize("retry", [0, 1])
def test_error_retry_zero_or_one_is_one_attempt(server: FaultyServer, chunk: tuple[bytes, bytes, bytes],
                                                retry: int) -> None:
    server.plan(None, Status(500), Status(500))
    with faulty_store(server, error_retry=retry) as store, pytest.raises(StoreError, match="HTTP 500"):
        store.get_raw(chunk[0])
    assert server.count() == 1


def test_head_and_put_retried(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid = chunk[0]
    server.plan(None, Status(500), Status(500))
    with faulty_store(server) as store:
        assert store.has_chunk(cid)
        other, _, oblob = make_chunk(10)
        server.plan(None, Status(503))
        store.put_raw(other, oblob)
    assert server.count("HEAD") == 3 and server.count("PUT") == 2
    assert server.chunks[chunk_path(other)] == oblob


def test_retry_delay_grows_linearly_and_is_capped(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.plan(None, *[Status(500)] * 3)
    with faulty_store(server, error_retry=3, error_retry_base_interval=0.1) as store:
        start = time.monotonic()
        with pytest.raises(StoreError):
            store.get_raw(chunk[0])
        assert time.monotonic() - start >= 0.3  # 0.1 after the first attempt, 0.2 after the second
    monkeypatch.setattr(http_store, "MAX_RETRY_DELAY", 0.05)
    server.plan(None, *[Status(500)] * 3)
    with faulty_store(server, error_retry=3, error_retry_base_interval=60) as store:
        start = time.monotonic()
        with pytest.raises(StoreError):
            store.get_raw(chunk[0])
        assert time.monotonic() - start < 5


# --------------------------------------------------------------------------- broken connections


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Reset(), "reset"),
        (Drop(), "closed the connection"),
        (Short(b"x" * 10, 1000), "shorter than its Content-Length (10 of 1000 bytes)"),
    ],
    ids=["reset", "drop", "short"],
)
def test_connection_faults_retried(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes], fault: object, words: str
) -> None:
    cid, _, blob = chunk
    server.plan(None, fault)
    with faulty_store(server) as store:
        assert store.get_raw(cid) == blob
    assert server.count() == 2
    server.plan(None, *[fault] * 3)
    with faulty_store(server) as store, pytest.raises(StoreError) as exc:
        store.get_raw(cid)
    assert words in str(exc.value) and server.url in str(exc.value) and cid.hex() in str(exc.value)
    assert server.count() == 5


def test_short_body_is_never_a_chunk(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, _, blob = chunk
    server.plan(None, *[Short(blob[:-1], len(blob))] * 2)
    with faulty_store(server, error_retry=2) as store, pytest.raises(StoreError, match="shorter"):
        store.get_raw(cid)


def test_timeout_retried(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, _, blob = chunk
    server.plan(None, Slow(5))
    with faulty_store(server, timeout=0.3) as store:
        assert store.get_raw(cid) == blob
    assert server.count() == 2
    server.plan(None, Slow(5), Slow(5))
    with faulty_store(server, timeout=0.2, error_retry=2) as store, pytest.raises(StoreError) as exc:
        store.get_raw(cid)
    assert "timed out after 0.2 s" in str(exc.value) and "2 attempts" in str(exc.value)


def test_connection_refused(chunk: tuple[bytes, bytes, bytes]) -> None:
    port = free_port()
    with HTTPStore(f"http://127.0.0.1:{port}/", options(error_retry=2)) as store:
        with pytest.raises(StoreError) as exc:
            store.get_raw(chunk[0])
        assert f"127.0.0.1:{port}" in str(exc.value) and "refused" in str(exc.value)


def test_body_larger_than_a_chunk_not_read(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid = chunk[0]
    server.plan(None, Short(b"", http_store.MAX_BLOB_SIZE + 1))
    with faulty_store(server, error_retry=5) as store, pytest.raises(StoreError, match="more than a chunk"):
        store.get_raw(cid)
    assert server.count() == 1


def test_dropped_keepalive_connection_is_reopened(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes]
) -> None:
    cid, _, blob = chunk
    server.plan(None, CloseAfter(), CloseAfter())
    with faulty_store(server, error_retry=1) as store:  # one attempt: no retry may hide a failure
        for _ in range(4):
            time.sleep(0.05)  # let the server's close arrive first
            assert store.get_raw(cid) == blob
    assert server.count() == 4
    assert len({r.client for r in server.requests}) == 3


def test_connections_are_reused(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, _, blob = chunk
    with faulty_store(server) as store:
        for _ in range(20):
            assert store.get_raw(cid) == blob
            assert store.has_chunk(cid)
        assert not store.has_chunk(make_chunk(11)[0])
        with pytest.raises(ChunkMissing):
            store.get_raw(make_chunk(11)[0])
    assert len({r.client for r in server.requests}) == 1


def test_pool_is_bounded_and_thread_safe(server: FaultyServer) -> None:
    chunks = [make_chunk(100 + i) for i in range(40)]
    for cid, _, blob in chunks:
        server.chunks[chunk_path(cid)] = blob
    server.plan(None, *[Slow(0.02)] * 40)
    errors: list[BaseException] = []
    with faulty_store(server, concurrency=3) as store:

        def work(k: int) -> None:
            try:
                for cid, data, _ in chunks[k::8]:
                    assert store.get_chunk(cid, SHA512_256) == data
                    assert store.has_chunk(cid)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert server.count() == 80
    assert len({r.client for r in server.requests}) <= 3


# --------------------------------------------------------------------------- headers and secrets


def test_authorization_and_cookie_headers(server: FaultyServer, chunk: tuple[bytes, bytes, bytes]) -> None:
    with faulty_store(server, http_auth="Bearer T0KEN", http_cookie="session=abc") as store:
        store.get_raw(chunk[0])
        store.has_chunk(chunk[0])
    for r in server.requests:
        assert r.headers["Authorization"] == "Bearer T0KEN" and r.headers["Cookie"] == "session=abc"


def test_url_credentials_are_basic_auth_and_never_shown(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    location = f"http://us%40er:pa55w0rd@127.0.0.1:{server.port}/s"
    server.plan(None, Status(500), Status(500), Status(500))
    caplog.set_level(logging.DEBUG, logger="casync_store.stores.http")
    with open_http(location, options()) as store:
        # shown as every message shows a location: the password masked (Go's and desync's form)
        assert str(store) == f"http://us%40er:***@127.0.0.1:{server.port}/s"
        with pytest.raises(StoreError) as exc:
            store.get_raw(chunk[0])
    assert "pa55w0rd" not in str(exc.value) and "pa55w0rd" not in caplog.text
    assert server.requests[0].headers["Authorization"] == "Basic dXNAZXI6cGE1NXcwcmQ="  # us@er:pa55w0rd
    assert redact(location) == str(store)
    assert redact("https://h/x") == "https://h/x"


def test_secret_header_values_never_logged(
    server: FaultyServer, chunk: tuple[bytes, bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="casync_store.stores.http")
    server.plan(None, Status(401), Status(500), Status(500), Status(500))
    with faulty_store(server, http_auth="Bearer S3CRET", http_cookie="c=C00KIE") as store:
        for call in (store.get_raw, store.has_chunk):
            with pytest.raises(StoreError) as exc:
                call(chunk[0])
            assert "S3CRET" not in str(exc.value) and "C00KIE" not in str(exc.value)
    assert "S3CRET" not in caplog.text and "C00KIE" not in caplog.text
    assert "GET" in caplog.text  # the requests were logged, without the secrets


# --------------------------------------------------------------------------- uncompressed stores


def test_uncompressed_store(server: FaultyServer) -> None:
    cid, data, _ = make_chunk(12)
    raw_path = chunk_path(cid, suffix="")
    server.chunks[raw_path] = data
    with faulty_store(server, uncompressed=True) as store:
        assert store.chunk_path(cid) == raw_path
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert store.has_chunk(cid)
        assert chunk_codec.decode(store.get_raw(cid), cid, SHA512_256) == data  # encoded locally
        other, odata, oblob = make_chunk(13)
        store.put_raw(other, oblob)
        assert server.chunks[chunk_path(other, suffix="")] == odata
        third, tdata, _ = make_chunk(14)
        store.store_chunk(third, tdata)
        assert server.chunks[chunk_path(third, suffix="")] == tdata
        with pytest.raises(ChunkInvalid, match="index says"):
            store.get_chunk(cid, SHA512_256, size=len(data) + 1)
        with pytest.raises(ChunkInvalid, match="larger than"):
            store.get_chunk(cid, SHA512_256, size=len(data) - 1)
        server.chunks[raw_path] = odata
        with pytest.raises(ChunkInvalid, match="hashes to"):
            store.get_chunk(cid, SHA512_256)


# --------------------------------------------------------------------------- against the chunk server


@contextlib.contextmanager
def chunk_server(store: Store, **kw: Any) -> Iterator[str]:
    """A running ChunkServer for ``store``; yields its base URL."""
    tls = kw.get("tls")
    with ChunkServer(store, ["127.0.0.1:0"], **kw) as srv:
        port = srv.addresses[0][1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/"


@pytest.fixture
def backing(tmp_path: Path) -> LocalStore:
    return LocalStore(str(tmp_path / "served"), sync=False)


def test_round_trip_through_chunk_server(backing: LocalStore) -> None:
    cid, data, blob = make_chunk(20)
    with chunk_server(backing, writable=True) as url, open_http(url, options()) as store:
        assert not store.has_chunk(cid)
        with pytest.raises(ChunkMissing):
            store.get_chunk(cid, SHA512_256)
        store.put_raw(cid, blob)
        assert backing.get_raw(cid) == blob
        assert store.has_chunk(cid) and store.get_raw(cid) == blob
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        other, odata, _ = make_chunk(21)
        store.store_chunk(other, odata)
        assert backing.get_chunk(other, SHA512_256) == odata
        with pytest.raises(StoreError, match="HTTP 400"):  # the server checks the body against the id
            store.put_raw(make_chunk(22)[0], blob)


def test_read_only_chunk_server_refuses_put(backing: LocalStore) -> None:
    cid, _, blob = make_chunk(23)
    with chunk_server(backing) as url, open_http(url, options(error_retry=3)) as store:
        with pytest.raises(StoreError) as exc:
            store.put_raw(cid, blob)
        assert url in str(exc.value) and "HTTP 4" in str(exc.value)
    assert not backing.has_chunk(cid)


def test_uncompressed_chunk_server(backing: LocalStore) -> None:
    cid, data, blob = make_chunk(24)
    with chunk_server(backing, writable=True, uncompressed=True) as url, \
            open_http(url, options(uncompressed=True)) as store:
        store.put_raw(cid, blob)
        assert backing.get_chunk(cid, SHA512_256) == data
        assert store.has_chunk(cid)
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert chunk_codec.decode(store.get_raw(cid), cid, SHA512_256) == data


def test_make_and_extract_through_http(backing: LocalStore, tmp_path: Path) -> None:
    """make into an HTTP store; extract through a proxy chain into a cache at the client."""
    source = tmp_path / "source"
    source.write_bytes(rng_bytes(600_000, 5) + bytes(200_000) + rng_bytes(300_000, 6))
    index_path = str(tmp_path / "blob.caibx")
    with chunk_server(backing, writable=True) as url, open_http(url, options()) as remote:
        make(index_path, str(source), remote, params=SMALL, concurrency=4)
        with open_index(index_path) as index:
            ids = {item.id for item in index}
        assert all(backing.has_chunk(cid) for cid in ids)
        # A second chunk server proxies the first: client -> proxy -> server -> directory.
        with chunk_server(remote) as proxy_url, open_http(proxy_url, options()) as proxy:
            cache = LocalStore(str(tmp_path / "cache"), sync=False)
            out = str(tmp_path / "out")
            with open_index(index_path) as index:
                extract(index, out, CachedStore(proxy, cache), concurrency=8)
            assert Path(out).read_bytes() == source.read_bytes()
            assert set(cache.iter_chunk_ids()) >= ids - {zero_chunk_id(index_path)}


def zero_chunk_id(index_path: str) -> bytes:
    with open_index(index_path) as index:
        return ZeroChunk(index).id


def test_parallel_gets(backing: LocalStore) -> None:
    chunks = [make_chunk(200 + i, 20_000) for i in range(64)]
    for cid, _, blob in chunks:
        backing.put_raw(cid, blob)
    errors: list[BaseException] = []
    with chunk_server(backing) as url, open_http(url, options(concurrency=6)) as store:

        def work(k: int) -> None:
            try:
                for cid, data, _ in chunks[k::16] * 3:
                    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


# --------------------------------------------------------------------------- TLS


def tls_server(
    backing: LocalStore, certs: Certs, mutual: bool = False
) -> contextlib.AbstractContextManager[str]:
    tls = TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert if mutual else None,
                     mutual=mutual)
    return chunk_server(backing, tls=tls)


@pytest.fixture
def planted(backing: LocalStore) -> tuple[bytes, bytes, bytes]:
    cid, data, blob = make_chunk(30)
    backing.put_raw(cid, blob)
    return cid, data, blob


def test_https_with_ca_cert(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with tls_server(backing, certs) as url:
        assert url.startswith("https://")
        for location in (url, url.replace("127.0.0.1", "localhost")):
            with open_http(location, options(ca_cert=certs.ca_cert)) as store:
                assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)


def test_https_trust_insecure(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    with tls_server(backing, certs) as url, open_http(url, options(trust_insecure=True)) as store:
        assert store.get_chunk(planted[0], SHA512_256) == planted[1]


@pytest.mark.parametrize("ca", ["system", "other"])
def test_https_untrusted_server_refused_at_once(
    backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes], ca: str
) -> None:
    ca_cert = certs.other_ca_cert if ca == "other" else ""
    with tls_server(backing, certs) as url:
        store = open_http(url, options(ca_cert=ca_cert, error_retry=3, error_retry_base_interval=2))
        with store:
            start = time.monotonic()
            with pytest.raises(StoreError) as exc:
                store.get_raw(planted[0])
            assert time.monotonic() - start < 1.5  # a certificate problem is not retried
        assert "TLS error" in str(exc.value) and url in str(exc.value)
        assert "server certificate not trusted" in str(exc.value)


def test_mutual_tls(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with tls_server(backing, certs, mutual=True) as url:
        good = options(ca_cert=certs.ca_cert, client_cert=certs.client_cert, client_key=certs.client_key)
        with open_http(url, good) as store:
            assert store.get_chunk(cid, SHA512_256) == data
        other = good.replace(client_cert=certs.other_client_cert, client_key=certs.other_client_key)
        for opts in (options(ca_cert=certs.ca_cert), other):
            with open_http(url, opts.replace(error_retry=2)) as store, pytest.raises(StoreError) as exc:
                store.get_raw(cid)
            assert url in str(exc.value)


def test_bad_tls_files(tmp_path: Path, certs: Certs) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(StoreError, match=r"missing\.pem"):
        HTTPStore("https://127.0.0.1/", options(ca_cert=missing))
    with pytest.raises(StoreError, match=r"missing\.pem"):
        HTTPStore("https://127.0.0.1/", options(client_cert=missing, client_key=certs.client_key))
    with pytest.raises(ParameterError, match="client-cert"):
        HTTPStore("https://127.0.0.1/", options(client_key=certs.client_key))
    HTTPStore("http://127.0.0.1/", options(ca_cert=missing)).close()  # TLS options do not apply to http


# --------------------------------------------------------------------------- authorization and config


def test_authorization(backing: LocalStore, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with chunk_server(backing, authorization="Bearer right") as url:
        with open_http(url, options(http_auth="Bearer right")) as store:
            assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)
        for auth in ("Bearer wrong", ""):
            with open_http(url, options(http_auth=auth, error_retry=5)) as store:
                for call in (store.get_raw, store.has_chunk):
                    with pytest.raises(StoreError) as exc:
                        call(cid)
                    assert "HTTP 401" in str(exc.value) and url in str(exc.value)
                    assert "wrong" not in str(exc.value)


def test_config_store_options_reach_the_store(
    backing: LocalStore, planted: tuple[bytes, bytes, bytes], tmp_path: Path
) -> None:
    cid, data, _ = planted
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({
        "store-options": {
            "http://127.0.0.1:*/": {"http-auth": "Bearer from-config", "timeout": "7s", "error-retry": 2,
                                    "error-retry-base-interval": 1000000, "uncompressed": False},
            "/some/local/path": {"skip-verify": True},
        }
    }))
    config = load_config(str(config_path))
    with chunk_server(backing, authorization="Bearer from-config") as url:
        opts = config.store_options_for(url)
        with open_http(url, opts) as store:
            assert store.timeout == 7 and store.attempts == 2 and store.retry_interval == 0.001
            assert store.get_chunk(cid, SHA512_256) == data
        with open_store(url, options_for=config.store_options_for) as store:
            assert isinstance(store, HTTPStore) and store.get_chunk(cid, SHA512_256) == data
        with open_http(url, config.store_options_for("/some/local/path")) as store, \
                pytest.raises(StoreError, match="HTTP 401"):
            store.get_raw(cid)


def test_default_timeout_like_desync() -> None:
    for value, expected in ((None, 60.0), (0.0, 60.0), (2.5, 2.5), (-1.0, None)):
        with HTTPStore("http://127.0.0.1/", StoreOptions(timeout=value)) as store:
            assert store.timeout == expected


# --------------------------------------------------------------------------- proxies


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_http_proxy_from_environment(server: FaultyServer, proxy_env: pytest.MonkeyPatch) -> None:
    cid, data, blob = make_chunk(40)
    proxy_env.setenv("http_proxy", f"http://pu:pp@127.0.0.1:{server.port}")
    target = "http://chunks.example:8080/base"
    server.chunks[target + chunk_path(cid, "/")] = blob
    with open_http(target, options()) as store:
        assert store.get_chunk(cid, SHA512_256) == data
    request = server.requests[0]
    assert request.path == target + chunk_path(cid, "/") and request.headers["Host"] == "chunks.example:8080"
    assert request.headers["Proxy-Authorization"] == "Basic cHU6cHA="  # pu:pp
    with FaultyServer() as direct, open_http(direct.url, options()) as store:  # loopback: never proxied
        assert not store.has_chunk(cid)
        assert direct.count() == 1 and server.count() == 1
    proxy_env.setenv("no_proxy", "chunks.example")
    assert HTTPStore(target).proxy is None
    proxy_env.setenv("http_proxy", "socks5://127.0.0.1:1080")
    with pytest.raises(ParameterError, match="http_proxy"):
        HTTPStore("http://other.example/")


def test_https_through_connect_proxy(
    backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes], server: FaultyServer,
    proxy_env: pytest.MonkeyPatch,
) -> None:
    cid, data, _ = planted
    proxy_env.setenv("https_proxy", f"http://127.0.0.1:{server.port}")
    with tls_server(backing, certs) as url:
        port = int(url.rstrip("/").rpartition(":")[2])
        # The proxy connects any host to 127.0.0.1; the name is not in the certificate, hence -t.
        with open_http(f"https://chunks.example:{port}/", options(trust_insecure=True)) as store:
            assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)
    assert [r.method for r in server.requests] == ["CONNECT"]
    assert server.requests[0].path == f"chunks.example:{port}"
