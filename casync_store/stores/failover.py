"""Failover groups (``-s "a|b"``): several copies of one store, used one at a time.

A :class:`FailoverGroup` follows desync's rules: every request goes to the
currently active member; when that member fails with anything but "missing",
the next member becomes the active one and the request is repeated there, so
one broken server costs a request or two and not every request. A chunk the
active member does not hold is missing for the whole group: the members are
meant to hold the same chunks, so the others are not asked. The active member
changes only when the member that failed is still the active one, so
concurrent failures of one server move the group one step, not several. A
request gives up when every member has failed for it, raising the last error
(which names that member). Like desync's, the group is read-only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Callable, TypeVar

from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import CasyncError, ChunkMissing, StoreError

from .base import Store

__all__ = ["FailoverGroup", "open_failover"]

T = TypeVar("T")


class FailoverGroup(Store):
    """Members holding the same chunks; requests go to the active one (see the module)."""

    def __init__(self, stores: Sequence[Store]) -> None:
        if not stores:
            raise StoreError("a failover group needs at least one store")
        self.stores = list(stores)
        # Verify unless every member was opened with skip-verify.
        self.verify = any(s.verify for s in self.stores)
        self._active = 0
        self._lock = threading.Lock()

    def __str__(self) -> str:
        return "|".join(str(s) for s in self.stores)

    @property
    def active(self) -> Store:
        """The member requests currently go to."""
        with self._lock:
            return self.stores[self._active]

    def _current(self, tried: set[int]) -> int:
        """The active member's index, or the next one this request has not tried."""
        with self._lock:
            index = self._active
        n = len(self.stores)
        while index in tried:
            index = (index + 1) % n
        return index

    def _failed(self, index: int) -> None:
        """Move on from member ``index``, unless another request already did."""
        with self._lock:
            if self._active == index:
                self._active = (index + 1) % len(self.stores)

    def _run(self, call: Callable[[Store], T]) -> T:
        """``call`` on the active member, failing over until every member has failed once."""
        tried: set[int] = set()
        first_error: BaseException | None = None
        while True:
            index = self._current(tried)
            try:
                return call(self.stores[index])
            except ChunkMissing:
                if first_error is not None:  # "missing" after a failure would hide it
                    raise first_error from None
                raise
            except (CasyncError, OSError) as exc:  # StoreError, ChunkInvalid, ...: fail over
                first_error = first_error or exc
                tried.add(index)
                self._failed(index)
                if len(tried) == len(self.stores):
                    raise  # the last member's own error, naming it

    def get_raw(self, chunk_id: bytes) -> bytes:
        """The active member's bytes of the chunk (failing over on errors)."""
        return self._run(lambda s: s.get_raw(chunk_id))

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """Decoded by the member that served it, so a damaged copy fails over too (as in desync)."""
        return self._run(lambda s: s.get_chunk(chunk_id, digest, size, max_size))

    def fetch_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, bytes]:
        """(stored bytes, data), from the member that served and decoded it (failing over)."""
        return self._run(lambda s: s.fetch_chunk(chunk_id, digest, size, max_size))

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """:meth:`get_chunk`; the group (one store to its user) is named as the source."""
        data, _member, stored = self._run(lambda s: s.fetch(chunk_id, digest, size, max_size))
        return data, self, stored

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether the active member holds the chunk (failing over on errors)."""
        return self._run(lambda s: s.has_chunk(chunk_id))

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        """The active member's answer (failing over on errors)."""
        return self._run(lambda s: s.stat_chunk(chunk_id))

    def close(self) -> None:
        """Close every member, even when one of them fails to close."""
        first: BaseException | None = None
        for store in self.stores:
            try:
                store.close()
            except (CasyncError, OSError) as exc:
                first = first or exc
        if first is not None:
            raise first


def open_failover(stores: Sequence[Store]) -> FailoverGroup:
    """The factory :data:`location.BACKENDS` names under the ``|`` key."""
    return FailoverGroup(stores)
