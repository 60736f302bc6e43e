"""One call per key at a time: callers arriving while their key's call runs wait and share its outcome.

Used where many threads may want the same chunk at once (the chunk-server's
reads through a cache, the FUSE mount's chunk cache), so it is fetched once.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

__all__ = ["SingleFlight"]

T = TypeVar("T")


class _Call(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Runs ``fn`` for a key unless a call for that key is running; then waits for it and
    returns its result (or raises its exception). Nothing is remembered after a call ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[object, _Call[T]] = {}

    def in_flight(self, key: object) -> bool:
        """Whether a call for ``key`` is running now."""
        with self._lock:
            return key in self._calls

    def run(self, key: object, fn: Callable[[], T]) -> T:
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            call.done.wait()
            if call.error is not None:
                raise call.error
            return call.result  # type: ignore[return-value]
        try:
            call.result = fn()
            return call.result
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
