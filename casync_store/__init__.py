"""Chunk stores and the operations over them: pycasync's architecture, in one page.

Layers, imports pointing down only (``tests/test_layering.py`` checks it)::

    pycasync.py (CLI)
      -> casync_store.ops      one module per operation: make, extract, chop, maintain
         casync_store.serve    (verify/prune/cache), info, tar, untar, tarstream, mtree,
                               mount; servers: httpserver, chunk-server, index-server, pull
      -> casync_store.pipeline the chunk pipeline they share: Outcome, ZeroChunk,
                               ChunkReader (where bytes come from), StoreOnce, ChunkWorker
      -> casync_store.stores   base (interfaces), local, http, ssh, sftp, s3, router
                               (chain, cache), failover, layout (xxxx/<id>.cacnk),
                               backends (the one table),
                               location/indexstore/indexio (strings -> stores)
      -> casync_store.plumbing atomic writes, dirfd, fileio, pool, singleflight,
                               progress, config (desync's config file), locparse
                               (a Location parsed once; the one redact rule)
      -> casync_format         bytes only: digest, chunk, compress, chunker (+ C
                               accelerator via _accel), index, catar, protocol

make: a regular file is read by offset into reused buffers (a block device is
mapped), where ``chunker.iter_file_chunks`` (``iter_chunks``) finds cut points
in parallel segments; :class:`~.pipeline.ChunkWorker` on the pool
(``plumbing.pool.ThreadMap``) hashes each chunk and :class:`~.pipeline.StoreOnce`
compresses and stores it unless this run or the store has it; ids go in order to
``stores.indexio.index_writer``, which renames the index into place at the end.

extract: the index is read from wherever ``stores.indexio`` finds it; the pool
maps each item through :class:`~.pipeline.ChunkReader` (all-zero chunk by id, else
the store: fetched, decompressed, verified), skipping bytes the output holds
already; chunks are ``pwrite``-n at their offsets into a locked temporary file
(zero chunks stay holes) that is fsynced and renamed over the output. Seeds
(``ops.seed``: an index and its data, or a file or device chunked on the fly)
and the output itself (self-seed: a repeated chunk) come before the store:
the plan copies runs of chunks consecutive in a seed as one range, cloned
with ``plumbing.clone`` where the filesystem shares blocks, and every byte
taken from a seed is verified (a mismatch is fetched from the store instead).

A new store backend is one module in ``stores/`` plus one row in
``stores/backends.py``; a new operation is one module in ``ops/`` (using
``pipeline`` for chunks) plus one command in the CLI. The public names below
are what the README's library examples use.
"""

from __future__ import annotations

from .stores.base import PruneStore, Store, WriteStore
from .stores.local import LocalStore
from .stores.router import CachedStore, StoreRouter, combine

__all__ = [
    "Store", "WriteStore", "PruneStore", "LocalStore", "StoreRouter", "CachedStore", "combine",
    "extract", "ExtractStats", "IndexSeed", "RawSeed",
]  # fmt: skip

_LAZY = {  # operations, imported on first use (the CLI need not load them all)
    "extract": "ops.extract", "ExtractStats": "ops.extract", "IndexSeed": "ops.seed", "RawSeed": "ops.seed",
}  # fmt: skip


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
