"""Helpers of the HTTP store tests in tests/stores (no tests here).

:func:`options`: StoreOptions with fast retries and short timeouts;
:func:`make_chunk`: ``(id, data, blob)`` of a deterministic chunk;
:func:`chunk_path`: the URL path under which an HTTP store asks for a chunk;
:func:`faulty_store`: an HTTPStore on a :class:`tests.support.faulty_http.FaultyServer`.
The ``server`` and ``chunk`` fixtures built on them are in ``tests/stores/conftest.py``.
"""

from __future__ import annotations

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format.digest import SHA512_256
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.http import HTTPStore, open_http
from tests.support.faulty_http import FaultyServer

__all__ = ["METHOD", "options", "make_chunk", "chunk_path", "faulty_store"]

METHOD = "zstd" if compress.ZSTD_BACKEND else "gzip"


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


def faulty_store(server: FaultyServer, path: str = "/", **changes: object) -> HTTPStore:
    return open_http(server.url + path, options(**changes))
