"""Progress reporting for long operations: the protocol, a terminal bar, desync's parsable lines.

Operations take an optional :class:`Progress` and call :meth:`Progress.start`
once per phase, :meth:`Progress.add` from any thread as work completes, and
:meth:`Progress.finish` at the end. :func:`make_progress` decides what is
shown as desync does (``progressbar.go``, over the ``pb`` v1 library): when
``DESYNC_ENABLE_PARSABLE_PROGRESS`` is set non-empty, a
:class:`ParsableProgress` writes one line per update to stderr, in desync's
format; otherwise a :class:`ProgressBar` is drawn on stderr when stderr is a
terminal or ``DESYNC_PROGRESSBAR_ENABLED`` is set non-empty. The bar shows
the throughput, redraws at most five times a second (so calling :meth:`add`
per chunk costs a lock and a clock read) and blanks its line when a phase
ends. The ``format_*`` helpers write sizes and times for people (the
one-line summaries of make and extract).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TextIO

__all__ = [
    "Progress",
    "ProgressBar",
    "ParsableProgress",
    "make_progress",
    "progress_wanted",
    "parsable_wanted",
    "phase",
    "format_bytes",
    "format_seconds",
    "timed",
    "counted",
]

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
    """A one-line text progress bar with throughput, redrawn in place with carriage returns.

    Each redraw pads over what the previous one left and is cut to the
    terminal's width (so it never wraps); :meth:`finish` blanks the line, so
    nothing of the bar stays once a phase ends. Units are bytes unless a
    phase is started with another ``unit`` (``"chunks"``).
    """

    def __init__(self, stream: TextIO | None = None, columns: int | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._fixed_columns = columns
        self._lock = threading.Lock()
        self._label = ""
        self._unit = "bytes"
        self._total = 0
        self._done = 0
        self._began = 0.0
        self._drawn = 0.0
        self._shown = 0  # characters of the bar on the line now
        self._active = False

    def start(self, label: str, total: int, unit: str = "bytes") -> None:
        """Begin a phase of ``total`` units (0 when unknown)."""
        with self._lock:
            if self._active:
                self._clear()
            self._label = label
            self._unit = unit
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
        """End the phase: the bar's line is blanked and the cursor left at its start."""
        with self._lock:
            if self._active:
                self._active = False
                self._clear()

    def _columns(self) -> int:
        if self._fixed_columns:
            return self._fixed_columns
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return 80

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is not worth failing for
            pass

    def _clear(self) -> None:
        if self._shown:
            self._write("\r" + " " * self._shown + "\r")
            self._shown = 0

    def _draw(self) -> None:
        text = self.line(self._columns() - 1)
        # Spaces over whatever the longer previous line left: no stray characters.
        self._write("\r" + text + " " * max(0, self._shown - len(text)))
        self._shown = len(text)

    def line(self, width: int) -> str:
        """The bar's text now, at most ``width`` characters."""
        elapsed = time.monotonic() - self._began
        done, total = self._done, self._total
        rate = done / elapsed if elapsed > 0.05 else 0.0
        in_bytes = self._unit == "bytes"
        amount = format_bytes(done) if in_bytes else f"{done} {self._unit}"
        speed = f"{format_bytes(rate)}/s" if in_bytes else f"{rate:.0f} {self._unit}/s"
        if not total:
            return f"{self._label} {amount}  {speed}  {_clock(elapsed)}"[:width]
        frac = min(1.0, done / total)
        whole = format_bytes(total) if in_bytes else str(total)
        eta = _clock((total - done) / rate) if rate > 0 and done < total else "-:--:--"
        head = f"{self._label} {int(frac * 100):3d}% "
        tail = f" {amount} / {whole}  {speed}  {_clock(elapsed)} ETA {eta}"
        room = min(_WIDTH, width - len(head) - len(tail) - 2)
        if room < 10:  # a narrow terminal: the numbers, not the bar
            return (head + tail.lstrip())[:width]
        filled = int(frac * room)
        bar = "=" * filled + (">" if filled < room else "") + " " * max(0, room - filled - 1)
        return f"{head}|{bar}|{tail}"


def format_bytes(n: float) -> str:
    """``n`` bytes for people, three digits: ``512 B``, ``1.50 KiB``, ``25.3 MiB``, ``805 MiB``."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1000 or unit == "PiB":
            break
    return f"{n:.2f} {unit}" if n < 10 else f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"


def format_seconds(seconds: float) -> str:
    """A duration for people: ``0.42 s``, ``12.3 s``, ``2m05s``, ``1h02m05s``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole // 60 % 60:02d}m{whole % 60:02d}s"


def timed(nbytes: int, seconds: float) -> str:
    """``1.00 GiB in 4.10 s (250 MiB/s)``: a size, the time it took and the throughput."""
    rate = f" ({format_bytes(nbytes / seconds)}/s)" if seconds > 0 else ""
    return f"{format_bytes(nbytes)} in {format_seconds(seconds)}{rate}"


def counted(chunks: int, what: str, nbytes: int, extra: str = "") -> str:
    """``12 from seeds (1.50 MiB)`` (and ``extra`` in the brackets); empty for no chunks."""
    if not chunks:
        return ""
    return f"{chunks} {what} ({format_bytes(nbytes)}" + (f", {extra})" if extra else ")")


_SECOND = 1_000_000_000  # nanoseconds, the unit of desync's (Go's) durations
_PARSABLE_REFRESH = 0.5  # seconds between lines, as desync sets it for parsable output


def _go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for a whole number of seconds (``0s``, ``4s``, ``1m5s``, ``2h0m1s``)."""
    total = ns // _SECOND
    hours, minutes, seconds = total // 3600, total // 60 % 60, total % 60
    if hours:
        return f"{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _pb_duration(ns: int) -> str:
    """The ``pb`` v1 library's time-left format: ``[Nd][Nh]MMmSSs``."""
    out = ""
    if ns > 24 * 3600 * _SECOND:
        days = ns // (24 * 3600 * _SECOND)
        out = f"{days}d"
        ns -= days * 24 * 3600 * _SECOND
    if ns > 3600 * _SECOND:
        out += f"{ns // (3600 * _SECOND)}h"
        ns -= ns // (3600 * _SECOND) * 3600 * _SECOND
    minutes = ns // (60 * _SECOND)
    ns -= minutes * 60 * _SECOND
    return f"{out}{minutes:02d}m{ns // _SECOND:02d}s"


def _tty_width() -> int:
    """Columns of the controlling terminal (``/dev/tty``), 0 without one: lines are padded to it."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return 0
    try:
        return os.get_terminal_size(fd).columns
    except OSError:
        return 0
    finally:
        os.close(fd)


class ParsableProgress:
    """desync's ``DESYNC_ENABLE_PARSABLE_PROGRESS`` output: one progress line at a time on stderr.

    Each phase writes a line when it starts, one every half second while it
    runs (changed or not) and a last one when it finishes. A line is the
    label and a space, then while the total is known `` NNN.NN%`` and, once
    an estimate exists, `` MMmSSs`` left; the last line ends with the time
    taken in Go's notation (`` 3s``, `` 1m5s``). Lines are padded with spaces
    to the width of the controlling terminal, if there is one, as desync
    does. (desync also prints an empty line on stdout when a phase ends; not
    here, since stdout may carry an image or an index.)
    """

    def __init__(self, stream: TextIO | None = None, interval: float = _PARSABLE_REFRESH) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._lock = threading.Lock()  # held while a line is made and written
        self._count_lock = threading.Lock()  # only for _done: add() never waits for stderr
        self._prefix = ""
        self._total = 0
        self._done = 0
        self._previous = 0
        self._began = 0
        self._changed = 0
        self._width = 0
        self._stop: threading.Event | None = None
        self._ticker: threading.Thread | None = None

    def start(self, label: str, total: int) -> None:
        """Begin a phase of ``total`` units (0 when unknown) and write its first line."""
        self.finish()
        with self._lock:
            self._prefix = label + " "
            self._total = max(0, int(total))
            with self._count_lock:
                self._done = 0
            self._previous = 0
            self._began = self._changed = time.monotonic_ns()
            self._width = _tty_width()
            self._emit(final=False)
            stop = self._stop = threading.Event()
        ticker = self._ticker = threading.Thread(target=self._tick, args=(stop,), daemon=True)
        ticker.start()

    def add(self, n: int) -> None:
        """Record ``n`` more units done; safe to call from any thread."""
        with self._count_lock:
            self._done += n

    def finish(self) -> None:
        """Stop the periodic lines and write the last one, with the time taken."""
        stop, ticker = self._stop, self._ticker
        if stop is None or ticker is None:
            return
        self._stop = self._ticker = None
        stop.set()
        if ticker is not threading.current_thread():
            ticker.join()
        with self._lock:
            self._emit(final=True)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            with self._lock:
                if stop.is_set():
                    return
                with self._count_lock:
                    done = self._done
                if done != self._previous:
                    self._changed = time.monotonic_ns()
                    self._previous = done
                self._emit(final=False)

    def _emit(self, final: bool) -> None:
        with self._count_lock:
            done = self._done
        total, now = self._total, time.monotonic_ns()
        text = self._prefix
        if total:
            text += f" {done / (total / 100):6.2f}%"
        if final:
            text += " " + _go_duration(now - self._began)
        elif total and done > 0:
            per_unit = (self._changed - self._began) // done
            left = (total - done) * per_unit - (now - self._changed)
            left = int(left / _SECOND) * _SECOND  # truncated toward zero, as Go divides
            if left > 0:
                text += " " + _pb_duration(left)
        if len(text) < self._width:
            text += " " * (self._width - len(text))
        try:
            self._stream.write(text + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr gone: progress is not worth failing for
            pass


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


def parsable_wanted() -> bool:
    """Whether desync's parsable progress lines are asked for (``DESYNC_ENABLE_PARSABLE_PROGRESS``)."""
    return bool(os.environ.get("DESYNC_ENABLE_PARSABLE_PROGRESS", ""))


def make_progress(enabled: bool = True) -> ProgressBar | ParsableProgress | None:
    """What to report progress to on stderr, as desync chooses; ``None`` for nothing.

    Parsable lines when ``DESYNC_ENABLE_PARSABLE_PROGRESS`` is set, else a bar
    when :func:`progress_wanted`, else nothing (and always nothing unless
    ``enabled``).
    """
    if not enabled:
        return None
    if parsable_wanted():
        return ParsableProgress()
    if progress_wanted():
        return ProgressBar()
    return None


@contextlib.contextmanager
def phase(progress: Progress | None, label: str, total: int, unit: str = "bytes") -> Iterator[None]:
    """Run a block as one phase of ``progress`` (started, and finished even on error).

    ``unit`` is what ``total`` and :meth:`Progress.add` count: bytes, or
    e.g. ``"chunks"`` (only :class:`ProgressBar` shows it; the protocol
    stays three plain methods)."""
    if progress is None:
        yield
        return
    if unit != "bytes" and isinstance(progress, ProgressBar):
        progress.start(label, total, unit)
    else:
        progress.start(label, total)
    try:
        yield
    finally:
        progress.finish()
