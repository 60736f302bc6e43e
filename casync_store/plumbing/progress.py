"""Progress reporting for long operations: the protocol and a terminal bar.

Operations take an optional :class:`Progress` and call :meth:`Progress.start`
once per phase, :meth:`Progress.add` from any thread as work completes, and
:meth:`Progress.finish` at the end. :func:`make_progress` returns a
:class:`ProgressBar` drawn on stderr when it is wanted, as desync decides:
when stderr is a terminal or ``DESYNC_PROGRESSBAR_ENABLED`` is set non-empty.
The bar redraws at most five times a second, so calling :meth:`add` per chunk
costs a lock and a clock read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TextIO

__all__ = ["Progress", "ProgressBar", "make_progress", "progress_wanted", "phase"]

_REFRESH = 0.2  # seconds between redraws
_WIDTH = 30  # characters of the bar itself


class Progress(Protocol):
    """What an operation reports its progress to."""

    def start(self, label: str, total: int) -> None:
        """Begin a phase of ``total`` units (0 when unknown)."""

    def add(self, n: int) -> None:
        """Record ``n`` more units done; safe to call from any thread."""

    def finish(self) -> None:
        """End the phase (the bar is completed and its line ended)."""


class ProgressBar:
    """A one-line text progress bar, redrawn in place with carriage returns."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.Lock()
        self._label = ""
        self._total = 0
        self._done = 0
        self._began = 0.0
        self._drawn = 0.0
        self._active = False

    def start(self, label: str, total: int) -> None:
        """Begin a phase of ``total`` units (0 when unknown)."""
        with self._lock:
            if self._active:
                self._end_line()
            self._label = label
            self._total = max(0, int(total))
            self._done = 0
            self._began = self._drawn = time.monotonic()
            self._active = True
            self._draw()

    def add(self, n: int) -> None:
        """Record ``n`` more units done; safe to call from any thread."""
        with self._lock:
            self._done += n
            now = time.monotonic()
            if self._active and now - self._drawn >= _REFRESH:
                self._drawn = now
                self._draw()

    def finish(self) -> None:
        """Draw the final state and end the line."""
        with self._lock:
            if self._active:
                self._draw()
                self._end_line()

    def _end_line(self) -> None:
        self._active = False
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        elapsed = max(time.monotonic() - self._began, 1e-9)
        if self._total:
            frac = min(1.0, self._done / self._total)
            filled = int(frac * _WIDTH)
            bar = "=" * filled + (">" if filled < _WIDTH else "") + " " * max(0, _WIDTH - filled - 1)
            eta = (elapsed / frac - elapsed) if frac > 0 else 0.0
            text = f"{self._label} {int(frac * 100):3d}% |{bar}| {_clock(elapsed)} ETA {_clock(eta)}"
        else:
            text = f"{self._label} {self._done} {_clock(elapsed)}"
        self._stream.write("\r" + text)
        self._stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_wanted(stream: TextIO | None = None) -> bool:
    """Whether a bar should be drawn: stderr is a terminal or the env asks for it."""
    if os.environ.get("DESYNC_PROGRESSBAR_ENABLED", ""):
        return True
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or unusual stream
        return False


def make_progress(enabled: bool = True) -> ProgressBar | None:
    """A stderr :class:`ProgressBar` when ``enabled`` and wanted, else ``None``."""
    if enabled and progress_wanted():
        return ProgressBar()
    return None


@contextlib.contextmanager
def phase(progress: Progress | None, label: str, total: int) -> Iterator[None]:
    """Run a block as one phase of ``progress`` (started, and finished even on error)."""
    if progress is None:
        yield
        return
    progress.start(label, total)
    try:
        yield
    finally:
        progress.finish()
