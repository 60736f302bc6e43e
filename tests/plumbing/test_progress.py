"""Tests of the progress bar (casync_store.plumbing.progress).

The bar draws only when wanted (a terminal, or ``DESYNC_PROGRESSBAR_ENABLED``),
survives concurrent add() calls, ends its line, and counts without a total.
"""

from __future__ import annotations

import io
import threading

from casync_store.plumbing.progress import ProgressBar, make_progress, progress_wanted


def test_progress_bar_draws_and_is_thread_safe():
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.start("Testing", 4000)

    def work() -> None:
        for _ in range(1000):
            bar.add(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.finish()
    text = out.getvalue()
    assert text.endswith("\n") and "Testing" in text
    assert "100%" in text.rsplit("\r", 1)[-1]
    bar.start("Unknown", 0)
    bar.add(7)
    bar.finish()
    assert out.getvalue().rstrip("\n").rsplit("\r", 1)[-1].startswith("Unknown 7")


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
