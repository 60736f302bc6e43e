"""Chunk stores and the operations over them: pycasync's architecture, in one page.

Layers, imports pointing down only (``tests/test_layering.py`` checks it)::

    pycasync.py (CLI)
      -> casync_store.ops      one module per operation: make, extract, chop, maintain
         casync_store.serve    (verify/prune/cache), info, tar, untar, tarstream, mtree,
                               mount (+ sparse: copy-on-read), cat, verifyindex,
                               inspect, ignore; servers: httpserver, chunk-server,
                               index-server, pull, push
      -> casync_store.pipeline the chunk pipeline they share: Outcome, ZeroChunk,
                               ChunkReader (where bytes come from), StoreOnce, ChunkWorker
      -> casync_store.stores   base (interfaces), local, http, ssh, sftp, s3, router
                               (chain, cache), failover, swap (reloadable; store
                               files), layout (xxxx/<id>.cacnk), _chunkfile
                               (a local chunk file's read/write/refresh, in C
                               where built), backends (the one table),
                               location/indexstore/indexio (strings -> stores)
      -> casync_store.plumbing atomic writes, dirfd, fileio, pool, singleflight,
                               writeback, progress, config (desync's config file), locparse
                               (a Location parsed once; the one redact rule)
      -> casync_format         bytes only: digest, chunk, compress, chunker (+ C
                               accelerator via _accel), index, catar, protocol

make: a regular file or device is read by offset into reused buffers, where
``chunker.iter_file_chunks`` finds cut points in parallel segments;
:class:`~.pipeline.ChunkWorker` on the pool (``plumbing.pool.ThreadMap``)
reads and hashes each chunk and :class:`~.pipeline.StoreOnce`
compresses and stores it unless this run or the store has it; ids go in order to
``stores.indexio.index_writer``, which renames the index into place at the end,
after ``store.flush()`` made the run's chunks durable (one ``syncfs`` for a
local store, whose writes inside ``store.writing()`` skip the per-chunk flush).

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
Each fetch names the store that held the chunk (``Store.fetch``: the cache or
a member of the chain, and the stored bytes read), so the stats count every
store, the cache and the seeds apart without a counter in the read path.

A new store backend is one module in ``stores/`` plus one row in
``stores/backends.py``; a new operation is one module in ``ops/`` (using
``pipeline`` for chunks) plus one command in the CLI. The names below are the
library's stable API (the README's "Library" section shows them in use):
functions that take ``str`` or ``os.PathLike`` paths wherever a path goes,
the store classes, and every exception class of
:mod:`casync_format.errors`. The operations are imported on first use
(``casync_store.make`` loads ``casync_store.ops.make``), so importing the
package stays cheap; ``import casync_store.ops.make`` still names the module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import (
    CasyncError,
    ChunkInvalid,
    ChunkMissing,
    FormatError,
    IndexNotFound,
    InputChanged,
    MissingDependency,
    OutputBusy,
    ParameterError,
    SeedError,
    StoreError,
)

from .stores.base import PruneStore, Store, WriteStore
from .stores.local import LocalStore
from .stores.router import CachedStore, StoreRouter, combine

if TYPE_CHECKING:  # what __getattr__ below imports on first use
    from .ops.cat import cat
    from .ops.chop import chop
    from .ops.extract import ExtractStats, extract
    from .ops.info import index_info
    from .ops.inspect import inspect_chunks
    from .ops.maintain import prune_store, verify_store
    from .ops.make import make
    from .ops.seed import IndexSeed, RawSeed
    from .ops.tar import tar, tar_index
    from .ops.untar import untar, untar_index
    from .ops.verifyindex import verify_index
    from .plumbing.progress import Progress
    from .stores.indexio import open_index
    from .stores.location import open_store

#: name -> module (under casync_store) that defines it, imported on first use.
_LAZY = {
    "make": "ops.make",
    "extract": "ops.extract",
    "ExtractStats": "ops.extract",
    "IndexSeed": "ops.seed",
    "RawSeed": "ops.seed",
    "chop": "ops.chop",
    "tar": "ops.tar",
    "tar_index": "ops.tar",
    "untar": "ops.untar",
    "untar_index": "ops.untar",
    "index_info": "ops.info",
    "verify_store": "ops.maintain",
    "prune_store": "ops.maintain",
    "open_store": "stores.location",
    "open_index": "stores.indexio",
    "Progress": "plumbing.progress",
    "cat": "ops.cat",
    "verify_index": "ops.verifyindex",
    "inspect_chunks": "ops.inspect",
}

__all__ = [
    # operations
    "make", "extract", "ExtractStats", "IndexSeed", "RawSeed", "chop", "tar", "tar_index",
    "untar", "untar_index",
    "index_info", "verify_store", "prune_store",
    "cat", "verify_index", "inspect_chunks",
    # opening things
    "open_store", "open_index", "ChunkerParams", "SHA512_256", "SHA256", "Progress",
    # stores
    "Store", "WriteStore", "PruneStore", "LocalStore", "StoreRouter", "CachedStore", "combine",
    # errors (casync_format.errors)
    "CasyncError", "FormatError", "ParameterError", "ChunkMissing", "ChunkInvalid", "StoreError",
    "IndexNotFound", "MissingDependency", "OutputBusy", "InputChanged", "SeedError",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    """The operation ``name``, imported from its module the first time it is asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
