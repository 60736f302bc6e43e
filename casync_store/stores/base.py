"""The Store interfaces: what every chunk store can do, layered by capability.

A :class:`Store` reads chunks; a :class:`WriteStore` also stores them; a
:class:`PruneStore` can also list and remove them. Stores persist opaque
bytes (the ``.cacnk`` blobs) through :meth:`Store.get_raw` and
:meth:`WriteStore.put_raw`; the chunk codec (:mod:`casync_format.chunk`) gives
those bytes meaning, so decompression and verification are written once here
and every backend, wrapper and operation gets them. A capability is a
subclass, never a flag: an operation that needs to write asks for a
:class:`WriteStore` and fails with :class:`StoreError` otherwise.

Contracts every implementation keeps:

- ``get_raw`` returns the stored bytes or raises :class:`ChunkMissing` when the
  store does not hold the chunk, and :class:`StoreError` when it cannot tell
  (unreachable, permission denied). It does not verify, but may raise
  :class:`ChunkInvalid` for what cannot be a chunk at all (a local store's
  symlink, FIFO or oversize file under the chunk's name).
- ``get_chunk`` returns decompressed data verified against the id (unless the
  store was opened with ``verify=False``) and raises :class:`ChunkInvalid`
  for damaged chunks, naming the store.
- ``put_raw`` is atomic: a reader sees the whole chunk under its final name
  or nothing; concurrent writers of the same chunk are safe.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Callable

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ChunkInvalid, StoreError

from ..plumbing.pool import io_workers

__all__ = ["Store", "WriteStore", "PruneStore", "require_writable", "require_prunable"]


class Store(ABC):
    """A place chunks can be read from."""

    #: When False, chunk data is not hashed on read (the store is trusted).
    verify: bool = True
    #: Whether :meth:`stat_chunk` gives stored sizes cheaply (without a request per chunk).
    tells_sizes: bool = False

    @abstractmethod
    def get_raw(self, chunk_id: bytes) -> bytes:
        """The stored (normally compressed) bytes of a chunk."""

    @abstractmethod
    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the store holds the chunk (not checked for damage)."""

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """The chunk's data, decompressed and verified.

        ``size`` (when known from an index) must match exactly and bounds
        decompression. Raises ChunkMissing, ChunkInvalid or StoreError.
        """
        return self.decode(chunk_id, self.get_raw(chunk_id), digest, size, max_size)

    def fetch_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, bytes]:
        """(stored bytes, verified data) of a chunk, for a cache that keeps the bytes as stored.

        A store that reads again what did not decode (S3: a body cut short)
        does so here as in :meth:`get_chunk`.
        """
        blob = self.get_raw(chunk_id)
        return blob, self.decode(chunk_id, blob, digest, size, max_size)

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """:meth:`get_chunk` that also says where the data came from.

        Returns ``(data, source, stored)``: the verified data, the store that
        held it (this one; a chain or cache names its member, see
        :mod:`.router`) and how many stored bytes were read for it (what
        crossed the network for a remote store; 0 when not known). Costs
        nothing over :meth:`get_chunk`.
        """
        if type(self).get_chunk is Store.get_chunk:
            return self.fetch_stored(chunk_id, digest, size, max_size)
        if type(self).fetch_chunk is not Store.fetch_chunk:  # its own read path, stored bytes too (S3)
            blob, data = self.fetch_chunk(chunk_id, digest, size, max_size)
            return data, self, len(blob)
        return self.get_chunk(chunk_id, digest, size, max_size), self, 0  # its own read path

    def fetch_into(
        self, chunk_id: bytes, digest: Digest, size: int, fd: int, offset: int, skip_zero: bool
    ) -> tuple[int, Store, int] | None:
        """A shortcut for :meth:`fetch` plus a ``pwrite`` of the data to ``fd`` at ``offset``.

        Returns ``(bytes written, source, stored bytes read)`` when it wrote
        the verified chunk (0 written when ``skip_zero`` and it is all zero),
        or None: then nothing was written and the caller takes the
        :meth:`fetch` path, which raises what went wrong. The default is
        None; a local store does it in one C call (:mod:`._chunkfile`).
        """
        return None

    def fetch_stored(
        self, chunk_id: bytes, digest: Digest, size: int | None, max_size: int
    ) -> tuple[bytes, Store, int]:
        """:meth:`fetch` by :meth:`get_raw` and :meth:`decode` (the default read path)."""
        blob = self.get_raw(chunk_id)
        return self.decode(chunk_id, blob, digest, size, max_size), self, len(blob)

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        """Whether the store holds the chunk and, where it can tell cheaply, its stored size.

        ``None`` when it does not hold it, else the stored (compressed)
        size in bytes, or -1 when the store cannot tell it without reading
        the chunk. A local store gives the file's size, an HTTP store the
        Content-Length of a HEAD; the others answer -1.
        """
        return -1 if self.has_chunk(chunk_id) else None

    def decode(
        self,
        chunk_id: bytes,
        blob: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """Decode a blob read from this store, verifying per the store's setting."""
        return chunk_codec.decode(
            blob,
            chunk_id,
            digest if self.verify else None,
            size=size,
            max_size=max_size,
            store=self,
        )

    def check_plain(self, chunk_id: bytes, data: bytes, digest: Digest, size: int | None) -> bytes:
        """Check chunk data an uncompressed store held as it is: the index's size, and its id
        per the store's verify setting (the checks :meth:`decode` makes after decompressing)."""
        if size is not None and len(data) != size:
            raise ChunkInvalid(chunk_id, None, f"has {len(data)} bytes, index says {size}", self)
        if self.verify:
            chunk_codec.verify(chunk_id, data, digest, self)
        return data

    def serve_raw(
        self, chunk_id: bytes, digest: Digest, max_size: int = CA_CHUNK_SIZE_LIMIT_MAX, verify: bool = False
    ) -> bytes:
        """The stored bytes for a server that passes chunks on as stored (a chunk server).

        With ``verify`` they are first checked to decode to the id
        (:class:`ChunkInvalid` otherwise), whatever the store's own setting.
        A store that can do more for a server overrides this: a cache also
        fills itself from its remote (:meth:`.router.CachedStore.serve_raw`).
        """
        blob = self.get_raw(chunk_id)
        if verify:
            chunk_codec.decode(blob, chunk_id, digest, max_size=max_size, store=self)
        return blob

    def check(self) -> None:
        """Raise StoreError when the store plainly cannot serve: its directory
        or bucket does not exist. Costs a round trip on network stores; stores
        with nothing to check (HTTP, wrappers) return at once."""
        return None

    def close(self) -> None:
        """Release connections and files; the store is unusable afterwards."""
        return None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def __str__(self) -> str:
        """The store's location, for messages."""


class WriteStore(Store):
    """A store that can also take new chunks."""

    #: Compression for chunks this store encodes itself.
    compression: str = "zstd"

    @abstractmethod
    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        """Store encoded bytes under the chunk's id, atomically."""

    def store_chunk(self, chunk_id: bytes, data: bytes | memoryview, blob: bytes | None = None) -> None:
        """Store a chunk; ``blob`` is its encoded form if the caller has it."""
        if blob is None:
            blob = chunk_codec.encode(data, self.compression)
        self.put_raw(chunk_id, blob)

    def refresh_chunk(self, chunk_id: bytes) -> bool:
        """Mark a chunk the store holds as used now; False if it turns out to be gone.

        A local store sets the chunk's mtime, so a prune running meanwhile
        keeps it (see :meth:`writing`); a store without that notion answers True.
        """
        return True

    def holds_chunk(self, chunk_id: bytes) -> bool:
        """Whether a writer may skip storing the chunk: it is here, and refreshed.

        A local store answers with one look at the file (a regular, non-empty
        file of a plausible size, its mtime set to now; see
        :meth:`refresh_chunk`); other stores ask :meth:`has_chunk`.
        """
        return self.has_chunk(chunk_id) and self.refresh_chunk(chunk_id)

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """A block in which this process writes chunks here (make, chop, tar -i, cache).

        A local store registers the writer, so a prune of the same store
        meanwhile keeps what it writes or refreshes, and writes the block's
        chunks without a flush each, making them durable together at
        :meth:`flush` and at the end of the block; other stores do nothing.
        """
        return contextlib.nullcontext()

    def write_workers(self, concurrency: int | None = None) -> int:
        """Worker threads for writing here: more than the CPUs, as each write waits (on a
        network, on an fsync)."""
        return io_workers(concurrency)

    def flush(self) -> None:
        """Make every chunk written so far durable; called before an index naming them is written.

        A no-op where each write is durable when it returns (every store but
        a local one inside :meth:`writing`).
        """


class PruneStore(WriteStore):
    """A writable store that can also enumerate and delete chunks."""

    @abstractmethod
    def iter_chunk_ids(self) -> Iterator[bytes]:
        """Every chunk id the store holds, streamed (never all in memory).

        Removing the chunk just yielded while iterating must be safe.
        """

    @abstractmethod
    def remove_chunk(self, chunk_id: bytes) -> None:
        """Delete a chunk; a chunk that is already gone is not an error."""

    def prune(
        self, keep: set[bytes] | frozenset[bytes], *, removed: Callable[[bytes, int], None] | None = None
    ) -> int:
        """Remove every chunk whose id is not in ``keep``; returns how many.

        ``removed(id, stored size)`` is called for each chunk removed (size
        -1 when the store cannot tell it).
        """
        count = 0
        for cid in self.iter_chunk_ids():
            if cid not in keep:
                self.remove_chunk(cid)
                count += 1
                if removed is not None:
                    removed(cid, -1)
        return count


def require_writable(store: Store) -> WriteStore:
    """Return ``store`` as a WriteStore or raise a StoreError naming it."""
    if not isinstance(store, WriteStore):
        raise StoreError(f"store {store} is read-only")
    return store


def require_prunable(store: Store) -> PruneStore:
    """Return ``store`` as a PruneStore or raise a StoreError naming it."""
    if not isinstance(store, PruneStore):
        raise StoreError(f"store {store} does not support listing and removing chunks")
    return store
