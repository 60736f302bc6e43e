"""Helpers of the chunk server tests in tests/serve (no tests here).

:class:`Blob`: 2 MiB of pseudo-random data made into an index and a
LocalStore with small chunks (``4:16:64``); :func:`chunk_path`: the request
path of a chunk; :func:`raw_get`: one raw request to a ChunkServer, returning
its status and body. The ``serve`` fixture is in ``tests/serve/conftest.py``;
each test module has its own module-scoped ``blob`` fixture (a Blob), since
``tests/conftest.py``'s ``blob`` (used by ``made``) is a different one.
"""

from __future__ import annotations

import os

from casync_format.chunker import ChunkerParams
from casync_store import LocalStore
from casync_store.ops.make import make
from casync_store.serve.chunkserver import ChunkServer
from casync_store.stores.indexio import open_index
from tests.support import rng_bytes
from tests.support.http_client import raw_request

__all__ = ["PARAMS", "Blob", "chunk_path", "raw_get"]

PARAMS = ChunkerParams.from_string("4:16:64")


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


def chunk_path(cid: bytes, suffix: str = ".cacnk") -> str:
    return f"/{cid.hex()[:4]}/{cid.hex()}{suffix}"


def raw_get(server: ChunkServer, target: str, method: str = "GET") -> tuple[int, bytes]:
    line = f"{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    status, reply = raw_request(server, line.encode("latin-1"))
    return status, reply.partition(b"\r\n\r\n")[2]
