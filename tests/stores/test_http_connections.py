"""The HTTP store client against a misbehaving server: broken connections, pooling and secrets.

Using :mod:`tests.support.faulty_http` (the ``server`` and ``chunk`` fixtures
of ``tests/stores/conftest.py``), these tests check that resets, dropped and
short answers and timeouts are retried and never taken for a chunk, that a
refused connection and an oversized body fail cleanly, that keep-alive
connections are reused, reopened when the server dropped them and pooled
within bounds across threads, and that the Authorization and Cookie headers
and URL credentials are sent but never shown in messages or logs.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, StoreError
from casync_store.stores import http as http_store
from casync_store.stores.http import HTTPStore, open_http
from casync_store.stores.location import redact
from tests.support import free_port
from tests.support.faulty_http import CloseAfter, Drop, FaultyServer, Reset, Short, Slow, Status
from tests.support.http_store import chunk_path, faulty_store, make_chunk, options

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
