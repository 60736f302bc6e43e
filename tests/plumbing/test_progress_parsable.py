"""Tests of desync's parsable progress lines (``DESYNC_ENABLE_PARSABLE_PROGRESS``).

The format is desync's (``progressbar.go`` over the ``pb`` v1 library, bar
and counters off): ``LABEL `` then `` NNN.NN%`` while the total is known,
`` MMmSSs`` left once estimated, and on the last line of a phase the time
taken in Go's notation; one line per update, a line at start, every half
second and at the end. Checked on the class and through real CLI runs.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

import pytest

from casync_store.plumbing import progress as progress_mod
from casync_store.plumbing.progress import ParsableProgress, ProgressBar, make_progress
from tests.support import CLI, ROOT, rng_bytes

__all__: list[str] = []

# one line of desync's parsable progress: prefix, percent, then time left or time taken
LINE = re.compile(r"^(?P<label>.*?) (?: (?P<pct>[ \d]{2}\d\.\d\d)%)?(?: (?P<time>\S+))?$")
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+s$")
PB_DURATION = re.compile(r"^(\d+d)?(\d+h)?\d\dm\d\ds$")


def test_go_and_pb_durations() -> None:
    s = 1_000_000_000
    assert progress_mod._go_duration(0) == "0s"
    assert progress_mod._go_duration(int(4.9 * s)) == "4s"
    assert progress_mod._go_duration(65 * s) == "1m5s"
    assert progress_mod._go_duration(3600 * s) == "1h0m0s"
    assert progress_mod._go_duration((2 * 3600 + 1) * s) == "2h0m1s"
    assert progress_mod._pb_duration(5 * s) == "00m05s"
    assert progress_mod._pb_duration(125 * s) == "02m05s"
    assert progress_mod._pb_duration(3600 * s) == "60m00s"  # pb writes hours only past one
    assert progress_mod._pb_duration((3600 + 61) * s) == "1h01m01s"
    assert progress_mod._pb_duration((2 * 86400 + 7200 + 5) * s) == "2d2h00m05s"


def test_lines_of_a_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "_tty_width", lambda: 0)
    out = io.StringIO()
    p = ParsableProgress(out, interval=0.05)
    p.start("Assembling", 400)
    for _ in range(4):
        time.sleep(0.08)
        p.add(50)
    p.finish()
    p.finish()  # twice is harmless
    lines = out.getvalue().split("\n")
    assert lines[-1] == ""  # every line ends with a newline, no carriage returns
    lines = lines[:-1]
    assert "\r" not in out.getvalue()
    assert lines[0] == "Assembling    0.00%"
    assert len(lines) >= 5  # start, at least a tick per add, end
    assert re.fullmatch(r"Assembling   50\.00% 0s", lines[-1])
    pcts = []
    for line in lines:
        m = LINE.match(line)
        assert m and m["label"] == "Assembling" and m["pct"], line
        pcts.append(float(m["pct"]))
    assert pcts == sorted(pcts)


def test_time_left_and_unknown_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "_tty_width", lambda: 0)
    clock = [10**12]
    monkeypatch.setattr(progress_mod.time, "monotonic_ns", lambda: clock[0])
    out = io.StringIO()
    p = ParsableProgress(out, interval=3600)  # no ticks: lines drawn by hand below
    p.start("Chunking", 1000)
    clock[0] += 10 * 10**9  # 100 units in 10 s: 900 left take 90 s
    p.add(100)
    p._changed, p._previous = clock[0], 100
    p._emit(final=False)
    clock[0] += 5 * 10**9
    p._emit(final=False)  # 5 s since the last change: 85 s left
    p.finish()
    assert out.getvalue().split("\n")[:4] == [
        "Chunking    0.00%",
        "Chunking   10.00% 01m30s",
        "Chunking   10.00% 01m25s",
        "Chunking   10.00% 15s",
    ]
    out = io.StringIO()
    p = ParsableProgress(out, interval=3600)
    p.start("Verifying", 0)  # no total: no percent, as desync (pb) does
    p.add(5)
    p.finish()
    assert out.getvalue() == "Verifying \nVerifying  0s\n"


def test_padded_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "_tty_width", lambda: 30)
    out = io.StringIO()
    p = ParsableProgress(out, interval=3600)
    p.start("Storing", 10)
    p.finish()
    assert out.getvalue() == "Storing    0.00%".ljust(30) + "\n" + "Storing    0.00% 0s".ljust(30) + "\n"


def test_the_periodic_line_every_half_second(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod, "_tty_width", lambda: 0)
    out = io.StringIO()
    p = ParsableProgress(out)
    p.start("Storing", 10)
    time.sleep(1.3)
    p.finish()
    # at 0, 0.5 s, 1 s and the end (a loaded machine may delay the second tick past the end)
    assert len(out.getvalue().splitlines()) in (3, 4)


@pytest.mark.parametrize(
    ("environ", "kind"),
    [
        ({"DESYNC_ENABLE_PARSABLE_PROGRESS": "1"}, ParsableProgress),
        ({"DESYNC_ENABLE_PARSABLE_PROGRESS": "yes", "DESYNC_PROGRESSBAR_ENABLED": "1"}, ParsableProgress),
        ({"DESYNC_ENABLE_PARSABLE_PROGRESS": "", "DESYNC_PROGRESSBAR_ENABLED": "1"}, ProgressBar),
        ({"DESYNC_ENABLE_PARSABLE_PROGRESS": ""}, type(None)),
    ],
)
def test_which_progress(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], kind: type) -> None:
    monkeypatch.delenv("DESYNC_PROGRESSBAR_ENABLED", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    assert isinstance(make_progress(True), kind)
    assert make_progress(False) is None


# --- through the command line -----------------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    # a new session: no controlling terminal, so no padding (as under a service manager)
    return subprocess.run(
        [sys.executable, CLI, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
        start_new_session=True,
    )


def _phases(stderr: bytes) -> list[tuple[str, list[float], str]]:
    """``(label, percents, time taken)`` per phase, checking every line's form."""
    phases: list[tuple[str, list[float], str]] = []
    current: list[float] = []
    for line in stderr.decode().split("\n")[:-1]:
        m = LINE.match(line)
        assert m and m["pct"], f"not a progress line: {line!r}"
        current.append(float(m["pct"]))
        if m["time"] and GO_DURATION.match(m["time"]) and not PB_DURATION.match(m["time"]):
            phases.append((m["label"], current, m["time"]))
            current = []
        else:
            assert m["time"] is None or PB_DURATION.match(m["time"]), line
    assert not current, "a phase without its last line"
    return phases


def test_cli_make_and_extract_write_desync_lines(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    content = rng_bytes(6 << 20, 21)
    src, store = os.path.join(tmp_path, "img"), os.path.join(tmp_path, "store")
    index, out = os.path.join(tmp_path, "img.caibx"), os.path.join(tmp_path, "out")
    with open(src, "wb") as f:
        f.write(content)
    env = dict(env, DESYNC_ENABLE_PARSABLE_PROGRESS="1")

    made = _cli(env, "make", "-s", store, index, src)
    assert made.returncode == 0, made.stderr
    (label, pcts, _), = _phases(made.stderr)
    assert label == "Storing" and pcts[0] == 0.0 and pcts[-1] == 100.0 and pcts == sorted(pcts)

    got = _cli(env, "extract", "-s", store, index, out)
    assert got.returncode == 0, got.stderr
    (label, pcts, _), = _phases(got.stderr)
    assert label == "Attempt 1: Assembling" and pcts[0] == 0.0 and pcts[-1] == 100.0  # desync's label
    assert got.stderr.decode().startswith("Attempt 1: Assembling    0.00%\n")

    # with a seed without an index: desync's phases, chunking the seed first
    os.unlink(out)
    seeded = _cli(env, "extract", "-s", store, "--seed", src, index, out)
    assert seeded.returncode == 0, seeded.stderr
    labels = [label for label, _pcts, _ in _phases(seeded.stderr)]
    # (nothing to validate: a seed chunked just now is read and hashed as it is used)
    assert labels == ["Attempt 1: Chunking Seed 1", "Attempt 1: Assembling"], labels
    # with an index seed its ranges are validated first
    os.unlink(out)
    seeded = _cli(env, "extract", "-s", store, "--seed", f"{index}:{src}", index, out)
    assert seeded.returncode == 0, seeded.stderr
    labels = [label for label, _pcts, _ in _phases(seeded.stderr)]
    assert labels == ["Attempt 1: Validating", "Attempt 1: Assembling"], labels
    with open(out, "rb") as f:
        assert f.read() == content

    # to stdout: the image is untouched by progress (desync's stray empty line is not copied)
    piped = _cli(env, "extract", "-s", store, index, "-")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == content
    assert _phases(piped.stderr)[-1][1][-1] == 100.0


def test_cli_without_the_variable_is_quiet(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    src, index = os.path.join(tmp_path, "img"), os.path.join(tmp_path, "img.caibx")
    with open(src, "wb") as f:
        f.write(rng_bytes(1 << 20, 22))
    made = _cli(dict(env, DESYNC_ENABLE_PARSABLE_PROGRESS=""), "make", index, src)
    assert made.returncode == 0 and made.stderr == b""


def test_add_never_waits_for_a_blocked_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers keep counting while stderr (a full pipe, say) blocks the line being written."""
    import threading

    monkeypatch.setattr(progress_mod, "_tty_width", lambda: 0)
    release, writing = threading.Event(), threading.Event()

    class Stuck(io.StringIO):
        def write(self, text: str) -> int:
            if "%" in text and not text.startswith("Storing    0.00%"):
                writing.set()
                release.wait(10)
            return super().write(text)

    p = ParsableProgress(Stuck(), interval=0.02)
    p.start("Storing", 100)
    p.add(1)
    assert writing.wait(5)  # the ticker is stuck in write()
    started = time.monotonic()
    for _ in range(99):
        p.add(1)
    assert time.monotonic() - started < 1
    release.set()
    p.finish()
