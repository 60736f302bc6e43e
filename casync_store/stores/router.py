"""Stores made of stores: an ordered chain and a read-through cache.

:class:`StoreRouter` asks its stores in the order given (``-s A -s B``) and
moves on only when one does not hold a chunk; any other failure is final, so a
broken store is reported rather than hidden. :class:`CachedStore` puts a
writable local store in front of another store: hits are served (and their
mtime refreshed) from the cache, misses are fetched, verified, and written back
in the exact bytes the remote holds (raw reads, which cannot verify, are
served but not cached); a cached copy that is damaged (or is no chunk file at
all) is replaced from the remote, unless repair is off (desync's
``--cache-repair=false``): then it is an error. Both implement the Store interface, so an
operation never knows what it talks to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError

from .base import Store, WriteStore

T = TypeVar("T")

__all__ = ["StoreRouter", "CachedStore", "combine", "sources"]


class StoreRouter(Store):
    """Read from the first of several stores that holds the chunk."""

    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise StoreError("no store given")
        self.stores = list(stores)

    def __str__(self) -> str:
        return ", ".join(str(s) for s in self.stores)

    def get_raw(self, chunk_id: bytes) -> bytes:
        return self.first(chunk_id)[1]

    def first(self, chunk_id: bytes) -> tuple[Store, bytes]:
        """The first member that holds the chunk, and its stored bytes (ChunkMissing: none does)."""
        return self._ask(chunk_id, lambda store: (store, store.get_raw(chunk_id)))

    def _ask(self, chunk_id: bytes, call: Callable[[Store], T]) -> T:
        """``call(member)`` of the first member that does not raise ChunkMissing (else ChunkMissing)."""
        for store in self.stores:
            try:
                return call(store)
            except ChunkMissing:
                continue
        raise ChunkMissing(chunk_id, self)

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        # Each member reads (an uncompressed store its data as it is, S3 again after a
        # short body) and decodes with its own verify setting, and is named on error.
        return self._ask(chunk_id, lambda store: store.get_chunk(chunk_id, digest, size, max_size))

    def fetch_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, bytes]:
        return self._ask(chunk_id, lambda store: store.fetch_chunk(chunk_id, digest, size, max_size))

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """The first member's fetch that holds the chunk (that member named as the source)."""
        return self._ask(chunk_id, lambda store: store.fetch(chunk_id, digest, size, max_size))

    def fetch_into(
        self, chunk_id: bytes, digest: Digest, size: int, fd: int, offset: int, skip_zero: bool
    ) -> tuple[int, Store, int] | None:
        """The first member's shortcut (None, and :meth:`fetch` asks them all, when it has none)."""
        return self.stores[0].fetch_into(chunk_id, digest, size, fd, offset, skip_zero)

    def has_chunk(self, chunk_id: bytes) -> bool:
        return any(store.has_chunk(chunk_id) for store in self.stores)

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        for store in self.stores:
            found = store.stat_chunk(chunk_id)
            if found is not None:
                return found
        return None

    def close(self) -> None:
        for store in self.stores:
            store.close()


class CachedStore(Store):
    """A read-through, write-back cache (a writable store) in front of a store."""

    def __init__(self, remote: Store, cache: WriteStore, repair: bool = True) -> None:
        self.remote = remote
        self.cache = cache
        #: replace an invalid cached chunk from the remote (desync's --cache-repair); else raise
        self.repair = repair

    def __str__(self) -> str:
        return f"{self.remote} (cache {self.cache})"

    def get_raw(self, chunk_id: bytes) -> bytes:
        # Raw reads cannot verify (no digest here), so only get_chunk fills the cache.
        try:
            blob = self.cache.get_raw(chunk_id)
        except ChunkMissing:
            return self.remote.get_raw(chunk_id)
        except ChunkInvalid:  # e.g. a symlink where the chunk should be
            if not self.repair:
                raise
            return self.remote.get_raw(chunk_id)
        self._touch(chunk_id)
        return blob

    def get_raw_filling(
        self, chunk_id: bytes, digest: Digest, max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
        verify: bool = False,
    ) -> bytes:
        """The stored bytes, like :meth:`get_raw`, but a chunk fetched from the
        remote is verified with ``digest`` and put into the cache (for servers
        that pass chunks on as stored, e.g. a caching chunk-server). With
        ``verify`` the cached copy is checked too (a damaged one is replaced
        from the remote) and the remote's copy is checked whatever its verify
        setting: what is returned then always decodes to its id."""
        if self.cache.has_chunk(chunk_id):
            try:
                blob = self.cache.get_raw(chunk_id)
                if verify:
                    chunk_codec.decode(blob, chunk_id, digest, max_size=max_size, store=self.cache)
            except ChunkMissing:
                pass  # gone meanwhile: fetched again below
            except ChunkInvalid:
                if not self.repair:
                    raise
                # damaged: fetched again below
            else:
                self._touch(chunk_id)
                return blob
        blob = self.remote.get_raw(chunk_id)
        if verify:
            chunk_codec.decode(blob, chunk_id, digest, max_size=max_size, store=self.remote)
        else:
            self.remote.decode(chunk_id, blob, digest, max_size=max_size)
        self.cache.put_raw(chunk_id, blob)
        return blob

    def serve_raw(
        self, chunk_id: bytes, digest: Digest, max_size: int = CA_CHUNK_SIZE_LIMIT_MAX, verify: bool = False
    ) -> bytes:
        """A caching server's read: :meth:`get_raw_filling` (a chunk fetched upstream is cached)."""
        return self.get_raw_filling(chunk_id, digest, max_size, verify=verify)

    def _touch(self, chunk_id: bytes) -> None:
        self.cache.refresh_chunk(chunk_id)

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        try:
            data = self.cache.get_chunk(chunk_id, digest, size, max_size)
        except (ChunkMissing, ChunkInvalid) as exc:
            if isinstance(exc, ChunkInvalid) and not self.repair:
                raise
            # A damaged cached copy is replaced by a good one from the remote.
            blob, data = self.remote.fetch_chunk(chunk_id, digest, size, max_size)
            self.cache.put_raw(chunk_id, blob)
            return data
        self._touch(chunk_id)
        return data

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """:meth:`get_chunk`, naming the cache on a hit and the remote's member otherwise."""
        try:
            found = self.cache.fetch(chunk_id, digest, size, max_size)
        except (ChunkMissing, ChunkInvalid) as exc:
            if isinstance(exc, ChunkInvalid) and not self.repair:
                raise
            # As get_chunk: the member's own read path (verified), named as the source.
            remote = self.remote
            for holder in remote.stores if isinstance(remote, StoreRouter) else [remote]:
                try:
                    blob, data = holder.fetch_chunk(chunk_id, digest, size, max_size)
                    break
                except ChunkMissing:
                    continue
            else:
                raise ChunkMissing(chunk_id, remote) from None
            self.cache.put_raw(chunk_id, blob)
            return data, holder, len(blob)
        self._touch(chunk_id)
        return found

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.cache.has_chunk(chunk_id) or self.remote.has_chunk(chunk_id)

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        found = self.cache.stat_chunk(chunk_id)
        return found if found is not None else self.remote.stat_chunk(chunk_id)

    def close(self) -> None:
        self.remote.close()
        self.cache.close()


def combine(stores: Sequence[Store], cache: WriteStore | None = None, repair: bool = True) -> Store:
    """The store an operation reads from: the chain of ``stores``, behind ``cache``.

    ``repair`` (desync's ``--cache-repair``, default on): an invalid chunk in
    the cache is replaced from ``stores``; off, it is an error (:class:`ChunkInvalid`).
    """
    if not stores:
        if cache is None:
            raise StoreError("no store given")
        return cache
    source: Store = stores[0] if len(stores) == 1 else StoreRouter(stores)
    return CachedStore(source, cache, repair) if cache is not None else source


def sources(store: Store) -> list[tuple[str, Store]]:
    """Where ``store`` may take a chunk from, in the order it asks: ``("cache", s)`` then ``("store", s)``.

    The members :meth:`~.base.Store.fetch` names as sources: the cache of a
    :class:`CachedStore`, each store of a :class:`StoreRouter`, else the store
    itself (a failover group is one store).
    """
    if isinstance(store, CachedStore):
        return [("cache", store.cache), *sources(store.remote)]
    if isinstance(store, StoreRouter):
        return [found for member in store.stores for found in sources(member)]
    return [("store", store)]
