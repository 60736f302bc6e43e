"""Tests of the progress bar and the size/time formatting (casync_store.plumbing.progress).

The bar draws only when wanted (a terminal, or ``DESYNC_PROGRESSBAR_ENABLED``),
survives concurrent add() calls, shows throughput, fits the terminal's width,
never leaves characters of a longer earlier line behind, and blanks its line
when a phase ends. What a terminal shows is computed by replaying the bytes
written (carriage return, newline, overwrite); tests/cli/test_progress_tmux.py
checks the same in a real terminal.
"""

from __future__ import annotations

import io
import threading

import pytest

from casync_store.plumbing import progress as progress_module
from casync_store.plumbing.progress import (
    ProgressBar,
    format_bytes,
    format_seconds,
    make_progress,
    phase,
    progress_wanted,
    timed,
)


def screen(written: str) -> list[str]:
    """The lines a terminal shows after ``written`` (\\r returns, \\n starts a line, the rest overwrites)."""
    lines = [[]]  # type: list[list[str]]
    col = 0
    for ch in written:
        if ch == "\r":
            col = 0
        elif ch == "\n":
            lines.append([])
            col = 0
        else:
            line = lines[-1]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = ch
            col += 1
    return ["".join(line).rstrip() for line in lines]


class Clock:
    """A settable monotonic clock for the bar."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module, "time", fake)
    return fake


def test_progress_bar_is_thread_safe_and_blanks_its_line():
    out = io.StringIO()
    bar = ProgressBar(out, columns=100)
    bar.start("Testing", 4000)

    def work() -> None:
        for _ in range(1000):
            bar.add(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.line(99).startswith("Testing 100% |")
    bar.finish()
    assert "Testing" in out.getvalue()
    assert screen(out.getvalue()) == [""]  # nothing of the bar is left
    bar.finish()  # a second finish writes nothing
    assert screen(out.getvalue()) == [""]


def test_redraws_never_leave_stray_characters(clock: Clock):
    out = io.StringIO()
    bar = ProgressBar(out, columns=120)
    bar.start("Assembling", 200 * 1024 * 1024)
    assert screen(out.getvalue())[-1] == bar.line(119)
    # Throughput rising then falling, sizes crossing unit boundaries: lines of varying length.
    for seconds, n in [(1, 1023), (2, 50 << 20), (3, 1), (50, 1), (4000, 1 << 20), (4001, 100 << 20)]:
        clock.now = 1000.0 + seconds
        bar.add(n)
        assert screen(out.getvalue())[-1] == bar.line(119)
    assert "KiB/s" in screen(out.getvalue())[-1] and " ETA " in screen(out.getvalue())[-1]
    bar.finish()
    assert screen(out.getvalue()) == [""]


def test_shorter_line_over_longer_one_is_padded(clock: Clock):
    out = io.StringIO()
    bar = ProgressBar(out, columns=200)
    bar.start("Storing", 0)
    clock.now += 1
    bar.add(999 << 20)  # "999 MiB  999 MiB/s"
    long_line = screen(out.getvalue())[-1]
    clock.now += 1000
    bar.add(1)  # "999 MiB  1.00 MiB/s 0:16:41": shorter rate text
    now = screen(out.getvalue())[-1]
    assert now == bar.line(199)
    assert len(out.getvalue().rsplit("\r", 1)[-1]) >= len(long_line)  # spaces over the old text


def test_line_shows_throughput_and_eta(clock: Clock):
    bar = ProgressBar(io.StringIO(), columns=100)
    bar.start("Storing", 100 << 20)
    clock.now += 2
    bar.add(50 << 20)
    text = bar.line(99)
    assert text.startswith("Storing  50% |")
    assert "50.0 MiB / 100 MiB" in text and "25.0 MiB/s" in text
    assert text.endswith("0:00:02 ETA 0:00:02")


def test_line_fits_narrow_terminals(clock: Clock):
    bar = ProgressBar(io.StringIO(), columns=40)
    bar.start("Assembling", 1 << 30)
    clock.now += 1
    bar.add(1 << 29)
    for width in (20, 39, 60, 79):
        assert len(bar.line(width)) <= width
    assert "|" not in bar.line(39)  # no room for a bar: the numbers only
    assert "|" in bar.line(79)


def test_unknown_total_and_other_units(clock: Clock):
    out = io.StringIO()
    bar = ProgressBar(out, columns=80)
    with phase(bar, "Verifying", 0, "chunks"):
        clock.now += 2
        bar.add(10)
        assert bar.line(79) == "Verifying 10 chunks  5 chunks/s  0:00:02"
    bar.start("Unknown", 0)
    bar.add(7)
    assert bar.line(79).startswith("Unknown 7 B ")
    bar.finish()
    assert screen(out.getvalue()) == [""]


def test_phase_keeps_the_protocol_for_other_progress_objects():
    calls = []

    class Plain:
        def start(self, label: str, total: int) -> None:
            calls.append((label, total))

        def add(self, n: int) -> None:
            pass

        def finish(self) -> None:
            calls.append("finish")

    with phase(Plain(), "Verifying", 0, "chunks"):
        pass
    assert calls == [("Verifying", 0), "finish"]


def test_formatting_for_people():
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536, 25 * 2**20 + 2**18, 805 * 2**20, 2**30)] == [
        "0 B", "1023 B", "1.00 KiB", "1.50 KiB", "25.2 MiB", "805 MiB", "1.00 GiB",
    ]
    assert format_bytes(1000 * 2**20) == "0.98 GiB"
    assert [format_seconds(s) for s in (0.42, 12.34, 125, 3725)] == ["0.42 s", "12.3 s", "2m05s", "1h02m05s"]
    assert timed(2**30, 4.0) == "1.00 GiB in 4.00 s (256 MiB/s)"
    assert timed(0, 0.0) == "0 B in 0.00 s"


def test_progress_only_when_wanted(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("DESYNC_PROGRESSBAR_ENABLED", raising=False)
    monkeypatch.delenv("DESYNC_ENABLE_PARSABLE_PROGRESS", raising=False)
    assert not progress_wanted(io.StringIO())
    assert progress_wanted(Tty())
    monkeypatch.setenv("DESYNC_PROGRESSBAR_ENABLED", "1")
    assert progress_wanted(io.StringIO())
    assert make_progress(False) is None
    assert isinstance(make_progress(True), ProgressBar)
    monkeypatch.setenv("DESYNC_PROGRESSBAR_ENABLED", "")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert make_progress(True) is None
