"""Stores replaced while in use, and desync's store file that describes them.

A long-running server or mount given ``--store-file FILE`` reads its stores
and cache from FILE, desync's JSON object ``{"stores": ["LOCATION", ...],
"cache": "LOCATION"}`` (:func:`read_store_file`), and reads it again on
SIGHUP. :class:`SwapStore` (and :class:`SwapWriteStore`, for a writable
server) is the store they serve from: every call goes to the current store,
and :meth:`SwapStore.swap` makes a new one current at once, without waiting
for or failing the calls in flight; the old store is closed when its last
call returns. A writable store is only replaced by a writable one.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ParameterError, StoreError

from .base import Store, WriteStore

__all__ = ["SwapStore", "SwapWriteStore", "StoreFile", "read_store_file"]


@dataclass(frozen=True)
class StoreFile:
    """The content of a store file: the stores (tried in order) and the optional cache."""

    stores: tuple[str, ...]
    cache: str | None


def read_store_file(path: str) -> StoreFile:
    """Parse desync's store file ``{"stores": [...], "cache": "..."}``.

    Both keys are optional, as in desync (other keys are ignored); ``stores``
    must be a list of location strings and ``cache`` a string (an empty one
    is no cache). Raises :class:`ParameterError` naming the file for
    unreadable, malformed or mistyped content.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ParameterError(f"cannot read store file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParameterError(f"store file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ParameterError(f"store file {path} must hold a JSON object with \"stores\" and \"cache\"")
    stores = doc.get("stores") or []
    cache = doc.get("cache") or None
    if not isinstance(stores, list) or not all(isinstance(s, str) and s for s in stores):
        raise ParameterError(f"store file {path}: \"stores\" must be a list of store locations")
    if cache is not None and not isinstance(cache, str):
        raise ParameterError(f"store file {path}: \"cache\" must be a store location")
    return StoreFile(tuple(stores), cache)


class _Generation:
    """One store made current by a swap, and the calls using it."""

    def __init__(self, store: Store, closer: Callable[[], None] | None) -> None:
        self.store = store
        self.closer = closer or store.close
        self.users = 0
        self.retired = False
        self.closed = False


class SwapStore(Store):
    """A store whose backing store can be replaced at any time (see the module docs).

    ``closer`` closes a store when it is retired (default: its ``close``), for
    stores that own more than themselves (an ExitStack of a store chain).
    """

    def __init__(self, store: Store, closer: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._current = _Generation(store, closer)
        self.swaps = 0

    @property
    def current(self) -> Store:
        """The store calls go to now."""
        return self._current.store

    @contextlib.contextmanager
    def _use(self) -> Iterator[Store]:
        with self._lock:
            gen = self._current
            gen.users += 1
        try:
            yield gen.store
        finally:
            with self._lock:
                gen.users -= 1
                retire = gen.retired and gen.users == 0 and not gen.closed
                gen.closed = gen.closed or retire
            if retire:
                gen.closer()

    def swap(self, store: Store, closer: Callable[[], None] | None = None) -> None:
        """Make ``store`` current; the old one is closed once no call uses it.

        Raises StoreError (and leaves everything as it was) when this store
        is writable and ``store`` is not.
        """
        if isinstance(self, SwapWriteStore) and not isinstance(store, WriteStore):
            raise StoreError(f"a writable store can only be replaced by a writable one, not {store}")
        new = _Generation(store, closer)
        with self._lock:
            old, self._current = self._current, new
            old.retired = True
            retire = old.users == 0 and not old.closed
            old.closed = old.closed or retire
            self.swaps += 1
        if retire:
            old.closer()

    def get_raw(self, chunk_id: bytes) -> bytes:
        with self._use() as store:
            return store.get_raw(chunk_id)

    def has_chunk(self, chunk_id: bytes) -> bool:
        with self._use() as store:
            return store.has_chunk(chunk_id)

    def get_chunk(
        self, chunk_id: bytes, digest: Digest, size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:  # fmt: skip
        with self._use() as store:
            return store.get_chunk(chunk_id, digest, size, max_size)

    def decode(
        self, chunk_id: bytes, blob: bytes, digest: Digest, size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:  # fmt: skip
        with self._use() as store:
            return store.decode(chunk_id, blob, digest, size, max_size)

    def serve_raw(
        self, chunk_id: bytes, digest: Digest, max_size: int = CA_CHUNK_SIZE_LIMIT_MAX, verify: bool = False
    ) -> bytes:
        with self._use() as store:
            return store.serve_raw(chunk_id, digest, max_size, verify)

    def check(self) -> None:
        with self._use() as store:
            store.check()

    def close(self) -> None:
        """Close the current store (once the calls using it have returned)."""
        with self._lock:
            gen = self._current
            gen.retired = True
            retire = gen.users == 0 and not gen.closed
            gen.closed = gen.closed or retire
        if retire:
            gen.closer()

    def __str__(self) -> str:
        return str(self._current.store)


class SwapWriteStore(SwapStore, WriteStore):
    """A :class:`SwapStore` that is writable, always backed by writable stores."""

    def __init__(self, store: WriteStore, closer: Callable[[], None] | None = None) -> None:
        if not isinstance(store, WriteStore):
            raise StoreError(f"store {store} is not writable")
        super().__init__(store, closer)

    @property
    def compression(self) -> str:  # type: ignore[override]
        """The current store's compression for chunks it encodes."""
        store = self._current.store
        assert isinstance(store, WriteStore)
        return store.compression

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        with self._use() as store:
            assert isinstance(store, WriteStore)
            store.put_raw(chunk_id, blob)

    def store_chunk(self, chunk_id: bytes, data: bytes | memoryview, blob: bytes | None = None) -> None:
        with self._use() as store:
            assert isinstance(store, WriteStore)
            store.store_chunk(chunk_id, data, blob)

    def refresh_chunk(self, chunk_id: bytes) -> bool:
        with self._use() as store:
            assert isinstance(store, WriteStore)
            return store.refresh_chunk(chunk_id)

    def holds_chunk(self, chunk_id: bytes) -> bool:
        with self._use() as store:
            assert isinstance(store, WriteStore)
            return store.holds_chunk(chunk_id)
