"""Read-only views of indexes and blobs: ``info``, ``list-chunks``, ``chunk``.

:func:`index_info` computes what ``desync info`` prints, with the same JSON
field names and meanings: chunk counts (total, unique), how many unique
chunks the given stores, seed indexes and cache hold, the blob size, the
deduplicated sizes not available from seeds (and cache; compressed, given
desync's per-chunk infos of ``inspect-chunks``, as in desync), and the chunk
size limits from the index header. With stores, our byte fields after
desync's: the size of the unique chunks they hold and lack, and their stored
(compressed) size where the stores tell it (local stores: the chunk files'
sizes; HTTP: Content-Length of HEAD; others: unknown, so ``null``).
:func:`list_chunks` yields an index's chunk ids as ``desync list-chunks``
prints them, :func:`chunk_file` the chunks a file would be cut into, like
``desync chunk``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from casync_format.chunker import DEFAULT_PARAMS, ChunkerParams
from casync_format.digest import SHA512_256, Digest
from casync_format.errors import FormatError
from casync_format.index import Index, IndexChunk

from ..plumbing.pool import ThreadMap, default_workers
from ..stores.base import Store
from .inspect import ChunkInfo
from .make import iter_chunk_ids

__all__ = ["InfoStats", "index_info", "list_chunks", "chunk_file"]


@dataclass
class InfoStats:
    """The numbers ``desync info`` reports about an index (see :meth:`to_dict`)."""

    total: int = 0  # chunks in the index
    unique: int = 0  # distinct chunk ids
    in_store: int = 0  # unique chunks at least one given store holds
    in_seed: int = 0  # unique chunks some seed index references
    in_cache: int = 0  # unique chunks the cache holds
    not_in_seed_nor_cache: int = 0  # unique chunks in neither
    size: int = 0  # blob size
    dedup_size_not_in_seed: int = 0  # bytes of unique chunks not in a seed
    dedup_size_not_in_seed_nor_cache: int = 0  # ... nor in the cache
    dedup_size_not_in_seed_nor_cache_compressed: int = 0  # from --chunks-info only (desync); 0 when unknown
    chunk_size_min: int = 0
    chunk_size_avg: int = 0
    chunk_size_max: int = 0
    # ours, with stores given (-s): what they hold and what an extract would have to fetch elsewhere
    not_in_store: int = 0  # unique chunks no store holds
    dedup_size_in_store: int = 0  # bytes of the unique chunks the stores hold
    dedup_size_in_store_compressed: int | None = 0  # their stored size; None when a store cannot tell
    dedup_size_not_in_store: int = 0  # bytes of the unique chunks no store holds
    stores_given: bool = False

    def to_dict(self) -> dict[str, int | None]:
        """The fields under desync's JSON keys, in desync's order; with stores, ours after them."""
        return {
            "total": self.total,
            "unique": self.unique,
            "in-store": self.in_store,
            "in-seed": self.in_seed,
            "in-cache": self.in_cache,
            "not-in-seed-nor-cache": self.not_in_seed_nor_cache,
            "size": self.size,
            "dedup-size-not-in-seed": self.dedup_size_not_in_seed,
            "dedup-size-not-in-seed-nor-cache": self.dedup_size_not_in_seed_nor_cache,
            "dedup-size-not-in-seed-nor-cache-compressed": self.dedup_size_not_in_seed_nor_cache_compressed,
            "chunk-size-min": self.chunk_size_min,
            "chunk-size-avg": self.chunk_size_avg,
            "chunk-size-max": self.chunk_size_max,
            **({
                "not-in-store": self.not_in_store,
                "dedup-size-in-store": self.dedup_size_in_store,
                "dedup-size-in-store-compressed": self.dedup_size_in_store_compressed,
                "dedup-size-not-in-store": self.dedup_size_not_in_store,
            } if self.stores_given else {}),
        }


def index_info(
    index: Index,
    stores: Sequence[Store] = (),
    concurrency: int | None = None,
    seeds: Sequence[Iterable[IndexChunk]] = (),
    cache: Store | None = None,
    chunks_info: Mapping[bytes, ChunkInfo] | None = None,
) -> InfoStats:
    """Compute ``desync info``'s numbers for ``index``.

    A chunk counts as in a store when any of ``stores`` holds it; the count
    is over unique chunks, queried in parallel. ``seeds`` are indexes or
    :class:`~.seed.Seed` objects (anything yielding chunks). ``chunks_info``
    (``info --chunks-info``, see :func:`~.inspect.load_chunks_info`) gives
    compressed sizes: their sum over the unique chunks in neither seeds nor
    cache is ``dedup-size-not-in-seed-nor-cache-compressed``, 0 when any of
    them is missing there or has no compressed size (as desync). A chunk whose
    size there differs from the index's is a :class:`FormatError`. Store
    errors propagate.
    """
    header = index.header
    info = InfoStats(
        size=index.blob_size,
        chunk_size_min=header.chunk_size_min,
        chunk_size_avg=header.chunk_size_avg,
        chunk_size_max=header.chunk_size_max,
    )
    seed_ids: set[bytes] = set()
    for seed in seeds:
        seed_ids.update(item.id for item in seed)
    unique: dict[bytes, int] = {}  # id -> size
    wanted: list[bytes] = []  # unique chunks in neither seeds nor cache
    compressed: int | None = 0 if chunks_info is not None else None
    for item in index:
        info.total += 1
        if item.id in unique:
            continue
        unique[item.id] = item.size
        in_seed = item.id in seed_ids
        in_cache = cache is not None and cache.has_chunk(item.id)
        info.in_seed += in_seed
        info.in_cache += in_cache
        if not in_seed:
            info.dedup_size_not_in_seed += item.size
            if not in_cache:
                info.not_in_seed_nor_cache += 1
                info.dedup_size_not_in_seed_nor_cache += item.size
                wanted.append(item.id)
                if compressed is not None and chunks_info is not None:
                    compressed = _add_compressed(compressed, chunks_info.get(item.id), item)
    info.unique = len(unique)
    if stores:
        _count_stores(info, unique, wanted, stores, concurrency)
    if chunks_info is not None:  # desync's source of that estimate wins over the stores'
        info.dedup_size_not_in_seed_nor_cache_compressed = compressed or 0
    return info


def _add_compressed(total: int, known: ChunkInfo | None, item: IndexChunk) -> int | None:
    """``total`` plus the compressed size of ``item`` (None: not known, stop counting)."""
    if known is None:
        return None
    if known.uncompressed_size != item.size:
        raise FormatError(f"the chunks info has size {known.uncompressed_size} for chunk "
                          f"{item.id.hex()}, the index {item.size}")
    return total + known.compressed_size if known.compressed_size else None


def _count_stores(
    info: InfoStats, unique: dict[bytes, int], wanted: list[bytes], stores: Sequence[Store],
    concurrency: int | None,
) -> None:
    """The store fields of ``info``: which unique chunks the stores hold, and their stored sizes."""

    def held(chunk_id: bytes) -> tuple[bytes, int | None]:
        for store in stores:
            found = store.stat_chunk(chunk_id)
            if found is not None:
                return chunk_id, found
        return chunk_id, None

    stored: dict[bytes, int] = {}
    info.stores_given = True
    with ThreadMap(held, iter(unique), default_workers(concurrency), ordered=False) as results:
        for chunk_id, found in results:
            if found is None:
                info.not_in_store += 1
                info.dedup_size_not_in_store += unique[chunk_id]
                continue
            stored[chunk_id] = found
            info.in_store += 1
            info.dedup_size_in_store += unique[chunk_id]
    known = all(size >= 0 for size in stored.values())
    info.dedup_size_in_store_compressed = sum(stored.values()) if known else None


def list_chunks(index: Index) -> Iterator[str]:
    """The index's chunk ids in hex, in blob order, repeats included."""
    for item in index:
        yield item.id.hex()


def chunk_file(
    path: str | os.PathLike[str],
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    start: int = 0,
) -> Iterator[tuple[int, int, bytes]]:
    """The chunks ``path`` would be cut into, as ``(start, size, id)``, from byte ``start`` on."""
    return iter_chunk_ids(os.fspath(path), params, digest, concurrency, offset=start)
