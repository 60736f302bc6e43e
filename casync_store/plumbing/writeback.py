"""Writeback ahead of the final flush: start the disk early on what a run writes.

A run that makes its output durable once at the end (extract's fsync of the
output, a local store's ``syncfs`` before the index is written) would wait for
all of its bytes at that moment. :class:`Writeback` runs the same flush in a
background thread every ``step`` bytes written, so the disk works while the
CPUs do, and the final flush finds little left. It is only a head start:
durability still comes from the caller's own final flush, made after
:meth:`Writeback.wait`. A background flush that fails is reported by
:meth:`~Writeback.wait` (the final flush would fail the same way).
"""

from __future__ import annotations

import threading
from typing import Callable

__all__ = ["Writeback"]


class Writeback:
    """Calls ``flush`` in the background after every ``step`` bytes :meth:`add` counts.

    At most one background flush runs at a time; bytes added meanwhile count
    toward the next one. Thread-safe.
    """

    def __init__(self, flush: Callable[[], None], step: int) -> None:
        self._flush = flush
        self._step = step
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._error: OSError | None = None

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        error = self.wait()
        if kind is None and error is not None:
            raise error

    def add(self, n: int) -> None:
        """Count ``n`` more bytes written; start a background flush every step."""
        with self._lock:
            self._pending += n
            if self._pending < self._step or (self._thread is not None and self._thread.is_alive()):
                return
            self._pending = 0
            self._thread = threading.Thread(target=self._run, name="pycasync-writeback", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            self._flush()
        except OSError as exc:
            self._error = exc

    def wait(self) -> OSError | None:
        """Wait for a running background flush; return its error, if one failed."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._pending = 0
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        return error
