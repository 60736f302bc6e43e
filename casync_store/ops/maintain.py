"""Store maintenance: verify (and repair), prune, and fill a cache.

:func:`verify_store` reads every chunk of a store, decompresses it and checks
it against its id, whatever the store's own verify setting; with ``repair``
it removes the damaged ones. :func:`prune_store` removes every chunk no given
index references (asking for confirmation is the CLI's job; :func:`prune_plan`
counts first what it would remove).
:func:`fill_cache` copies the chunks a set of indexes needs from a source
store into a cache store, verified and in the exact bytes the source holds;
a chunk the cache holds is checked too and replaced when it is damaged. All
run on the shared worker pool and stream store listings and indexes instead
of loading them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Callable

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA256, SHA512_256, Digest
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_format.index import Index, IndexChunk

from ..pipeline import Outcome, naming_chunk
from ..plumbing.pool import Claims, ThreadMap, io_workers
from ..plumbing.progress import Progress, phase
from ..stores.base import PruneStore, Store, WriteStore, require_prunable, require_writable

__all__ = [
    "VerifyStats", "CacheStats", "PrunePlan", "verify_store", "prune_plan", "prune_store", "fill_cache",
    "referenced_ids",
]


@dataclass
class VerifyStats:
    """What ``verify`` found: how many chunks it checked, which were invalid."""

    checked: int = 0
    invalid: list[bytes] = field(default_factory=list)  # ids of damaged chunks
    removed: int = 0  # damaged chunks deleted (repair)

    def to_dict(self) -> dict[str, object]:
        """The stats for --print-stats (ids in hex)."""
        return {
            "checked": self.checked,
            "invalid": [cid.hex() for cid in self.invalid],
            "removed": self.removed,
        }


@dataclass
class CacheStats:
    """What ``cache`` did with the chunks the indexes reference."""

    chunks_total: int = 0  # index items over all indexes
    chunks_copied: int = 0  # fetched from the source into the cache
    chunks_in_cache: int = 0  # the cache held them already (and they were valid)
    chunks_repaired: int = 0  # the cache held them damaged: replaced from the source
    chunks_duplicate: int = 0  # repeats of a chunk met earlier in this run
    bytes_copied: int = 0  # stored (compressed) bytes written to the cache

    def to_dict(self) -> dict[str, int]:
        """The stats with desync-style dashed keys, for --print-stats."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    def count(self, outcome: Outcome, nbytes: int) -> None:
        """Add one index item by its outcome (``nbytes`` written to the cache)."""
        self.chunks_total += 1
        self.bytes_copied += nbytes
        if outcome in (Outcome.STORED, Outcome.REPAIRED):
            self.chunks_copied += 1
        if outcome is Outcome.REPAIRED:
            self.chunks_repaired += 1
        elif outcome is Outcome.PRESENT:
            self.chunks_in_cache += 1
        elif outcome is Outcome.REPEAT:
            self.chunks_duplicate += 1


def _other(digest: Digest) -> Digest:
    return SHA256 if digest is SHA512_256 else SHA512_256


def verify_store(
    store: PruneStore,
    digest: Digest,
    repair: bool = False,
    concurrency: int | None = None,
    progress: Progress | None = None,
    either_digest: bool = True,
) -> VerifyStats:
    """Check every chunk of ``store``; with ``repair`` remove the invalid ones.

    A chunk is valid when it decodes and hashes to its id with ``digest`` or,
    since one store can hold chunks of indexes made with either digest, with
    the other one: ``--repair`` on a store of SHA256 chunks must not wipe it.
    With ``either_digest`` False only ``digest`` counts (``verify --digest``).
    Anything under a chunk name that is not a chunk file (a symbolic link,
    FIFO, device, directory, oversize file) is invalid and removed too.
    """
    store = require_prunable(store)

    def check(chunk_id: bytes) -> tuple[bytes, bool | None]:
        with naming_chunk(store, chunk_id):
            try:
                blob = store.get_raw(chunk_id)
                data = chunk_codec.decode(blob, chunk_id, None, store=store)
                valid = digest(data) == chunk_id or (either_digest and _other(digest)(data) == chunk_id)
            except ChunkMissing:  # removed while we listed: nothing to check
                return chunk_id, None
            except ChunkInvalid:
                valid = False
            if not valid and repair:
                store.remove_chunk(chunk_id)
            return chunk_id, valid

    stats = VerifyStats()
    threads = io_workers(concurrency)
    with phase(progress, "Verifying", 0, "chunks"), ThreadMap(
        check, store.iter_chunk_ids(), threads, 4 * threads, ordered=False
    ) as results:
        for chunk_id, valid in results:
            if valid is None:
                continue
            stats.checked += 1
            if not valid:
                stats.invalid.append(chunk_id)
                stats.removed += repair
            if progress is not None:
                progress.add(1)
    stats.invalid.sort()
    return stats


def referenced_ids(indexes: Iterable[Index]) -> set[bytes]:
    """The set of chunk ids the indexes reference."""
    keep: set[bytes] = set()
    for index in indexes:
        keep.update(item.id for item in index)
    return keep


@dataclass
class PrunePlan:
    """What a prune of a store would delete now (sizes None where the store cannot tell them)."""

    chunks: int = 0  # chunks the store holds
    unused: int = 0  # of them, referenced by none of the indexes
    unused_bytes: int | None = 0  # their stored size

    def to_dict(self) -> dict[str, int | None]:
        return {"chunks": self.chunks, "unused": self.unused, "unused-bytes": self.unused_bytes}


def prune_plan(store: PruneStore, indexes: Sequence[Index], concurrency: int | None = None) -> PrunePlan:
    """Count what :func:`prune_store` would delete: the chunks no index in ``indexes`` references.

    Their sizes are summed where the store tells them cheaply
    (:attr:`~.stores.base.Store.tells_sizes`: a local store's file sizes),
    else ``unused_bytes`` is None. Nothing is changed.
    """
    store = require_prunable(store)
    keep = referenced_ids(indexes)
    plan = PrunePlan()
    unused: list[bytes] = []
    for chunk_id in store.iter_chunk_ids():
        plan.chunks += 1
        if chunk_id not in keep:
            unused.append(chunk_id)
    plan.unused = len(unused)
    if not store.tells_sizes:
        plan.unused_bytes = None if unused else 0
        return plan
    threads = io_workers(concurrency)
    with ThreadMap(store.stat_chunk, iter(unused), threads, 4 * threads, ordered=False) as sizes:
        plan.unused_bytes = sum(max(size or 0, 0) for size in sizes)  # gone meanwhile: 0
    return plan


def prune_store(
    store: PruneStore, indexes: Sequence[Index], removed: Callable[[bytes, int], None] | None = None
) -> int:
    """Remove every chunk of ``store`` no index in ``indexes`` references; returns how many.

    ``removed(id, stored size)`` is called for each chunk removed (size -1
    where the store cannot tell it).
    """
    store = require_prunable(store)
    return store.prune(frozenset(referenced_ids(indexes)), removed=removed)


def _items(indexes: Sequence[Index], ignore: Collection[bytes]) -> Iterator[tuple[IndexChunk, Digest]]:
    for index in indexes:
        digest = index.digest
        for item in index:
            if item.id not in ignore:
                yield item, digest


def _cached_state(cache: WriteStore, item: IndexChunk, digest: Digest) -> str:
    """"missing", "present" (decodes and hashes to its id) or "damaged"."""
    try:
        with naming_chunk(cache, item.id):
            blob = cache.get_raw(item.id)
        # Whatever the cache's verify setting: repair means checking what is there.
        chunk_codec.decode(blob, item.id, digest, size=item.size, store=cache)
    except ChunkMissing:
        return "missing"
    except ChunkInvalid:
        return "damaged"
    # A fresh mtime: a prune of a local cache meanwhile keeps it (gone since the read: fetch it).
    return "present" if cache.refresh_chunk(item.id) else "missing"


def _put(cache: WriteStore, chunk_id: bytes, blob: bytes, damaged: bool) -> None:
    with naming_chunk(cache, chunk_id):
        try:
            cache.put_raw(chunk_id, blob)
        except StoreError:
            # A damaged entry a rename cannot replace (a directory): remove it, then write.
            if not damaged or not isinstance(cache, PruneStore):
                raise
            cache.remove_chunk(chunk_id)
            cache.put_raw(chunk_id, blob)


def fill_cache(
    indexes: Sequence[Index],
    source: Store,
    cache: WriteStore,
    concurrency: int | None = None,
    progress: Progress | None = None,
    ignore: Collection[bytes] = (),
) -> CacheStats:
    """Copy the chunks ``indexes`` reference from ``source`` into ``cache``.

    Chunks whose ids are in ``ignore`` (see :func:`~.ignore.ignored_ids`)
    are left out: neither checked nor copied, nor counted.

    A chunk the cache holds is decoded and verified against its id; a valid
    one is skipped, a damaged one (or anything else under its name) replaced.
    Fetched chunks are verified (per the source's verify setting) and stored
    in the source's exact bytes. Raises ChunkMissing, ChunkInvalid or
    StoreError naming chunk and store.
    """
    cache = require_writable(cache)
    claims = Claims()

    def copy(job: tuple[IndexChunk, Digest]) -> tuple[Outcome, int]:
        item, digest = job
        if not claims.claim(item.id):
            return Outcome.REPEAT, 0
        try:
            state = _cached_state(cache, item, digest)
            if state == "present":
                return Outcome.PRESENT, 0
            with naming_chunk(source, item.id):
                blob = source.get_raw(item.id)
                source.decode(item.id, blob, digest, item.size)
            _put(cache, item.id, blob, state == "damaged")
            return (Outcome.REPAIRED if state == "damaged" else Outcome.STORED), len(blob)
        finally:
            claims.done(item.id)

    stats = CacheStats()
    threads = io_workers(concurrency)
    total = sum(1 for _ in _items(indexes, ignore)) if ignore else sum(len(index) for index in indexes)
    with cache.writing(), phase(progress, "Caching", total, "chunks"), ThreadMap(
        copy, _items(indexes, ignore), threads, 4 * threads, ordered=False
    ) as results:
        for fate, nbytes in results:
            stats.count(fate, nbytes)
            if progress is not None:
                progress.add(1)
    return stats
