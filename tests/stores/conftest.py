"""Fixtures of the store tests.

- ``server``: a running :class:`tests.support.faulty_http.FaultyServer` (a real
  HTTP server that misbehaves on request), stopped at teardown.
- ``chunk``: ``(id, data, blob)`` of a chunk that ``server`` holds.

(Modules with their own ``server`` or ``chunk`` fixture or function, such as
``test_sftp.py``, override these.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.faulty_http import FaultyServer
from tests.support.http_store import chunk_path, make_chunk

__all__: list[str] = []


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
