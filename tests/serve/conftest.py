"""Fixtures of the server tests.

- ``serve``: a function ``serve(store, **kwargs)`` starting a
  :class:`casync_store.serve.chunkserver.ChunkServer` (arguments as
  ChunkServer's); all are shut down at teardown. ``test_indexserver.py`` and
  ``test_server_limits.py`` define their own ``serve``, which overrides this.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from casync_store.serve.chunkserver import ChunkServer
from casync_store.stores.base import Store

__all__: list[str] = []


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
