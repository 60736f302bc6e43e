"""The one worker pool every operation uses: a bounded, threaded map.

:class:`ThreadMap` applies a function to the items of an iterator with N
threads and yields the results in input order (or as they finish), while at
most K items are in flight: taken from the input but not yet handed to the
consumer. The input iterator is advanced by the workers under a lock, so a
lazy generator (a chunker, an index, a store listing) is pulled only as fast
as results are consumed and memory stays flat however long the input is. The
first exception raised by the function or by the input iterator stops the
workers (after the item each is busy with) and is re-raised in the consumer.
Synchronisation uses the C-implemented :class:`queue.SimpleQueue`, which keeps
the per-item overhead to a few microseconds.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Callable, Generic, TypeVar

__all__ = ["ThreadMap", "Claims", "default_workers", "io_workers"]

T = TypeVar("T")
R = TypeVar("R")

_CLAIMS_LIMIT = 1 << 18  # ids a Claims remembers (~25 MB); past it, only those in progress

_DONE = object()  # a worker has exited
_ERROR = object()  # a worker caught an exception


def default_workers(concurrency: int | None = None) -> int:
    """Worker threads for CPU-bound work: ``concurrency`` if given, else the number of CPUs."""
    return concurrency or max(1, os.cpu_count() or 1)


def io_workers(concurrency: int | None = None) -> int:
    """Worker threads for work that waits on storage (fsyncs, reads): twice the CPU workers, plus two."""
    return 2 * default_workers(concurrency) + 2


class Claims:
    """Decides, once per chunk id, which worker handles a chunk.

    The first :meth:`claim` of an id wins; later ones (a chunk repeated in a
    blob) get False. Up to a limit every id is remembered for the run; past
    it only ids whose handling is in progress are, and a later repeat falls
    back to asking the store, which holds the chunk by then. Memory is thus
    bounded however large the input.
    """

    def __init__(self, limit: int = _CLAIMS_LIMIT) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._seen: set[bytes] = set()
        self._busy: set[bytes] = set()

    def claim(self, chunk_id: bytes) -> bool:
        """True for the first worker to meet ``chunk_id`` (it must handle it)."""
        with self._lock:
            if chunk_id in self._seen or chunk_id in self._busy:
                return False
            if len(self._seen) < self._limit:
                self._seen.add(chunk_id)
            else:
                self._busy.add(chunk_id)
            return True

    def done(self, chunk_id: bytes) -> None:
        """The claimed chunk is handled (stored); forget it if past the limit."""
        if self._busy:
            with self._lock:
                self._busy.discard(chunk_id)


class ThreadMap(Generic[T, R]):
    """Map ``func`` over ``items`` with ``workers`` threads, ``in_flight`` at most.

    Use as a context manager and iterate it::

        with ThreadMap(work, chunks, workers=4, in_flight=16) as results:
            for result in results:
                ...

    Leaving the block (normally, by ``break`` or by an exception) stops the
    workers and joins them. ``ordered=False`` yields results as they finish.
    ``batch`` > 1 lets a worker take that many consecutive items at a time,
    which cuts the hand-offs between threads for cheap items (the bound on
    items in flight is kept, rounded up to whole batches).
    """

    def __init__(
        self,
        func: Callable[[T], R],
        items: Iterable[T],
        workers: int,
        in_flight: int | None = None,
        ordered: bool = True,
        batch: int = 1,
    ) -> None:
        workers = max(1, int(workers))
        self._batch = max(1, int(batch))
        in_flight = int(in_flight if in_flight is not None else 4 * workers * self._batch)
        in_flight = max(workers, -(-in_flight // self._batch))  # in batches
        self._func = func
        self._items = iter(items)
        self._ordered = ordered
        self._input_lock = threading.Lock()
        self._seq = 0
        self._exhausted = False
        self._stop = False
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(in_flight):
            self._tokens.put(None)
        self._results: queue.SimpleQueue[tuple[object, int, object]] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"pycasync-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self._started = False
        self._closed = False

    def __enter__(self) -> ThreadMap[T, R]:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def _next_items(self) -> tuple[int, list[T]] | None:
        with self._input_lock:
            if self._exhausted or self._stop:
                return None
            items = list(itertools.islice(self._items, self._batch))
            if len(items) < self._batch:
                self._exhausted = True
                if not items:
                    return None
            seq = self._seq
            self._seq += 1
            return seq, items

    def _work(self) -> None:
        put = self._results.put
        try:
            while True:
                self._tokens.get()
                if self._stop:
                    break
                got = self._next_items()
                if got is None:
                    self._tokens.put(None)  # let the next waiting worker see the end
                    break
                seq, items = got
                results = []
                for item in items:
                    if self._stop:  # another worker failed: the results are not wanted
                        return
                    results.append(self._func(item))
                put((None, seq, results))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._stop = True
            put((_ERROR, -1, exc))
        finally:
            put((_DONE, -1, None))

    def __iter__(self) -> Iterator[R]:
        self._start()
        try:
            yield from self._collect()
        finally:
            self.close()

    def _collect(self) -> Iterator[R]:
        live = len(self._threads)
        pending: dict[int, object] = {}
        want = 0
        get = self._results.get
        while True:
            if want in pending:
                results = pending.pop(want)
            else:
                if live == 0:
                    if pending:
                        raise RuntimeError("worker pool lost a result")
                    return
                kind, seq, results = get()
                if kind is _DONE:
                    live -= 1
                    continue
                if kind is _ERROR:
                    self.close()
                    raise results  # type: ignore[misc]
                if self._ordered and seq != want:
                    pending[seq] = results
                    continue
            want += 1
            self._tokens.put(None)
            yield from results  # type: ignore[misc]

    def close(self) -> None:
        """Stop the workers after their current item and wait for them."""
        if self._closed:
            return
        self._closed = True
        self._stop = True
        if not self._started:
            return
        for _ in self._threads:
            self._tokens.put(None)  # wake workers waiting for room
        current = threading.current_thread()
        for thread in self._threads:
            if thread is not current:
                thread.join()
        close = getattr(self._items, "close", None)
        if close is not None:
            close()  # a generator input releases what it holds (e.g. buffer views)
