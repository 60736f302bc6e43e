"""The chunk pipeline every operation shares: where a chunk's bytes come from, and storing each chunk once.

Reading side (extract, untar, mount, cache): :class:`ChunkReader` gives an
index item's verified bytes and says where they came from — the all-zero
chunk known by its id (:class:`ZeroChunk`, never fetched, as desync's
null-chunk seed) or a store (:func:`fetch_chunk`, every error naming the
chunk and the store); an operation that checks its output first reports
:attr:`Outcome.IN_PLACE`. Writing side (make, tar -i, chop):
:class:`StoreOnce` stores each chunk id at most once per run and skips what
the store holds already; :class:`ChunkWorker` hashes a chunk and hands it to
it. Every step answers with one :class:`Outcome`, the single vocabulary the
stats of every operation count in. This module knows stores and indexes,
never an operation.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Callable, Union

from casync_format import chunk as chunk_codec
from casync_format.digest import Digest
from casync_format.errors import StoreError
from casync_format.index import Index, IndexChunk

from .plumbing.pool import Claims
from .stores.base import Store, WriteStore

__all__ = [
    "Outcome", "StoreStats", "ZeroChunk", "ChunkReader", "StoreOnce", "ChunkWorker", "Span",
    "naming_chunk", "fetch_chunk", "is_zero", "Got",
]  # fmt: skip

Span = Union[tuple[int, int], tuple[int, bytes]]  # (start, size) of a mapped input, or (start, data)


class Outcome(enum.Enum):
    """What happened to one chunk; the stats of every operation count these."""

    HASHED = "hashed"  # chunked and hashed, no store to put it in
    STORED = "stored"  # compressed and written to the target store
    PRESENT = "present"  # the target store held it already (and, where checked, intact)
    REPEAT = "repeat"  # met earlier in this run: handled once
    REPAIRED = "repaired"  # the target held it damaged: replaced
    FETCHED = "fetched"  # read from a store and verified
    ZERO = "zero"  # the all-zero chunk, known by its id: never fetched
    IN_PLACE = "in-place"  # the output held the right bytes already
    SEED = "seed"  # copied (or cloned) from a seed and verified
    SELF_SEED = "self-seed"  # copied from where the output already held it, and verified


@dataclass
class StoreStats:
    """What a storing pass (make, tar -i) did: chunk counts by outcome, and byte counts."""

    chunks_total: int = 0  # items in the index
    chunks_unique: int = 0  # distinct chunk ids among them (see StoreOnce)
    chunks_duplicate: int = 0  # repeats of a chunk met earlier in this run
    chunks_stored: int = 0  # chunks compressed and written to the store
    chunks_in_store: int = 0  # chunks the store held already
    bytes_total: int = 0  # blob size
    bytes_stored: int = 0  # compressed bytes written to the store
    bytes_stored_uncompressed: int = 0  # data bytes of the chunks stored
    bytes_in_store: int = 0  # data bytes of the chunks the store held already
    bytes_duplicate: int = 0  # data bytes of the repeats

    def to_dict(self) -> dict[str, int]:
        """The stats with desync-style dashed keys, for --print-stats."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    def count(self, outcome: Outcome, size: int, nbytes: int) -> None:
        """Add one chunk of ``size`` bytes (``nbytes`` of them stored) by its outcome."""
        self.chunks_total += 1
        self.bytes_total += size
        if outcome is Outcome.REPEAT:
            self.chunks_duplicate += 1
            self.bytes_duplicate += size
        elif outcome is Outcome.STORED:
            self.chunks_stored += 1
            self.bytes_stored += nbytes
            self.bytes_stored_uncompressed += size
        elif outcome is Outcome.PRESENT:
            self.chunks_in_store += 1
            self.bytes_in_store += size


def _named(exc: StoreError, store: Store, chunk_id: bytes) -> StoreError | None:
    """A StoreError like ``exc`` that names the chunk and the store (None: it does)."""
    text = str(exc)
    names_chunk, names_store = chunk_id.hex() in text, f"store {store}" in text
    if names_chunk and names_store:
        return None
    if names_store:  # e.g. "store ssh://h/x: cannot run 'ssh'": add only the chunk
        return StoreError(f"chunk {chunk_id.hex()}: {text}")
    return StoreError(f"chunk {chunk_id.hex()} from store {store}: {text}")


@contextlib.contextmanager
def naming_chunk(store: Store, chunk_id: bytes) -> Iterator[None]:
    """Re-raise a :class:`StoreError` so that it names the chunk and the store."""
    try:
        yield
    except StoreError as exc:
        named = _named(exc, store, chunk_id)
        if named is None:
            raise
        raise named from exc


def fetch_chunk(store: Store, item: IndexChunk, digest: Digest) -> bytes:
    """The verified data of an index item; every error names the chunk and the store."""
    with naming_chunk(store, item.id):
        return store.get_chunk(item.id, digest, item.size)


#: where a chunk's bytes came from: (outcome, data, the store that held it or None, stored bytes read)
Got = tuple[Outcome, bytes, Union[Store, None], int]


def is_zero(data: bytes | memoryview) -> bool:
    """Whether ``data`` is all zero bytes (fast for the common non-zero case)."""
    return not data or (not data[0] and not data[-1] and data == bytes(len(data)))


class ZeroChunk:
    """The index's all-zero chunk of maximum size, recognised by its id.

    A run of zeros is cut into chunks of the maximum size (the chunker never
    cuts inside one), so this one chunk stands for nearly every zero range.
    """

    def __init__(self, index: Index) -> None:
        self.size = index.header.chunk_size_max
        self.id = index.digest(bytes(self.size)) if index.count else b""

    def matches(self, item: IndexChunk) -> bool:
        """Whether ``item`` is this chunk."""
        return item.size == self.size and item.id == self.id


class ChunkReader:
    """Where an index item's bytes come from: the all-zero chunk, else the store.

    ``read(item)`` returns ``(Outcome.ZERO or Outcome.FETCHED, data)``;
    fetched data is verified against its id; :meth:`fetch` also names the
    store that held it (the cache, or a member of the chain: see
    :meth:`~.stores.base.Store.fetch`). Thread-safe.
    """

    def __init__(self, store: Store, index: Index) -> None:
        self.store = store
        self.digest = index.digest
        self.zero = ZeroChunk(index)

    def read(self, item: IndexChunk) -> tuple[Outcome, bytes]:
        """The verified bytes of ``item`` and where they came from."""
        if self.zero.matches(item):
            return Outcome.ZERO, bytes(item.size)  # immutable, one per call: nothing shared
        return Outcome.FETCHED, fetch_chunk(self.store, item, self.digest)

    def fetch(self, item: IndexChunk) -> Got:
        """Like :meth:`read`, plus the source store (None for ZERO) and the stored bytes read."""
        if self.zero.matches(item):
            return Outcome.ZERO, bytes(item.size), None, 0
        store = self.store
        with naming_chunk(store, item.id):
            data, source, stored = store.fetch(item.id, self.digest, item.size)
        return Outcome.FETCHED, data, source, stored

    def fetch_into(
        self, item: IndexChunk, fd: int, skip_zero: bool
    ) -> tuple[Outcome, int, Store | None, int] | None:
        """The store's shortcut for :meth:`fetch` plus writing the bytes at ``item.start`` in ``fd``.

        ``(FETCHED, bytes written, source, stored bytes read)``, 0 written when
        ``skip_zero`` and the chunk is all zero; None (nothing written) for the
        zero chunk, a store with no shortcut, or anything but success: then
        :meth:`fetch` it (see :meth:`~.stores.base.Store.fetch_into`).
        """
        if self.zero.matches(item):
            return None
        done = self.store.fetch_into(item.id, self.digest, item.size, fd, item.start, skip_zero)
        return None if done is None else (Outcome.FETCHED, *done)

    def data(self, item: IndexChunk) -> bytes:
        """The verified bytes of ``item``."""
        return self.read(item)[1]


class StoreOnce:
    """Stores each chunk at most once per run, skipping what the store holds.

    Calling it with a chunk's id and data returns ``(outcome, stored bytes)``:
    REPEAT for a chunk met earlier in this run (decided by :class:`Claims`),
    PRESENT when the store holds it already (and its copy was refreshed, see
    :meth:`~.stores.base.WriteStore.holds_chunk`), STORED when it was compressed and
    written, HASHED when there is no store. ``compression`` None means the
    store's own (``store.compression``). Thread-safe.
    """

    def __init__(self, store: WriteStore | None, compression: str | None) -> None:
        self.store = store
        self.compression = compression
        self.claims = Claims()

    def __call__(self, cid: bytes, data: bytes | memoryview) -> tuple[Outcome, int]:
        if not self.claims.claim(cid):
            return Outcome.REPEAT, 0
        try:
            store = self.store
            if store is None:
                return Outcome.HASHED, 0
            if store.holds_chunk(cid):  # refreshed: a prune keeps it
                return Outcome.PRESENT, 0
            blob = chunk_codec.encode(data, self.compression or store.compression)
            store.store_chunk(cid, data, blob)
            return Outcome.STORED, len(blob)
        finally:
            self.claims.done(cid)


class ChunkWorker:
    """Hashes (and stores once) one chunk: the function the worker pool maps in make and tar -i.

    A span is ``(start, data)`` or ``(start, size)``: then the data is a view
    of ``view`` (a mapped device) or what ``read(start, size)`` returns (a
    file read by offset). The result is ``(id, size, outcome, stored bytes)``.
    """

    def __init__(
        self,
        view: memoryview | None,
        store: WriteStore | None,
        digest: Digest,
        compression: str | None,
        read: Callable[[int, int], bytes] | None = None,
    ):
        self.view = view
        self.read = read
        self.digest = digest
        self.store_once = StoreOnce(store, compression)

    def __call__(self, span: Span) -> tuple[bytes, int, Outcome, int]:
        start, what = span
        if isinstance(what, int):
            if self.view is not None:
                with self.view[start : start + what] as data:
                    return self._handle(data)
            if self.read is not None:
                return self._handle(self.read(start, what))
        return self._handle(what)  # type: ignore[arg-type]

    def _handle(self, data: bytes | memoryview) -> tuple[bytes, int, Outcome, int]:
        cid = self.digest(data)
        return (cid, len(data), *self.store_once(cid, data))
