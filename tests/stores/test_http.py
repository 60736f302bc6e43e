"""The HTTP(S) store client against a misbehaving server: basics and status codes.

Tests use :mod:`tests.support.faulty_http` (a real HTTP server that answers
500s, resets, short bodies, slow answers, 401/403/404 on request; the
``server`` and ``chunk`` fixtures of ``tests/stores/conftest.py``) and count
the requests it received, so "404 is never retried" and "a 500 is retried
exactly ``error_retry`` times" are checked on the wire. Covered here: get,
has and put, URL paths, errors naming chunk and store, verification, bad
locations, every class of status code and the retry delays, and uncompressed
stores. Broken connections, pooling and secret headers are in
``test_http_connections.py``; the happy path against pycasync's own chunk
server, TLS, config and proxies in ``test_http_server.py``.
"""

from __future__ import annotations

import time

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, ParameterError, StoreError
from casync_store.plumbing.config import StoreOptions
from casync_store.stores import http as http_store
from casync_store.stores.http import HTTPStore
from tests.support.faulty_http import FaultyServer, Status
from tests.support.http_store import chunk_path, faulty_store, make_chunk

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
