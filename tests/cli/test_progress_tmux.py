"""The progress bar and the summary lines in a real terminal: ``make`` and ``extract`` run under tmux.

A file big enough to take a second or two is made into a store and
extracted again inside a detached tmux session; the pane is captured while
they run (a bar with its throughput must show up) and at the end, where
the screen must hold exactly the two summary lines and the exit statuses:
no bar left behind, no stray characters of a longer line under a shorter
one. Without tmux the test is skipped, but fails under CI=true (.ci/run
installs tmux).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import CLI

TMUX = shutil.which("tmux")
SIZE = 160 * 1024 * 1024  # about two seconds of make on a loaded CI machine; see _blob
COLUMNS = 160

_MAKE = re.compile(
    r"^pycasync make: 160 MiB in [0-9.]+ s \([0-9.]+ [KMG]iB/s\) into \S+: \d+ chunks: \d+ stored "
    r"\([0-9.]+ MiB, [0-9.]+ MiB compressed\)(, \d+ repeats \([0-9.]+ [KM]i?B\))?$"
)
_EXTRACT = re.compile(
    r"^pycasync extract: 160 MiB in [0-9.]+ s \([0-9.]+ [KMG]iB/s\): \d+ chunks: "
    r"(\d+ repeats copied \([0-9.]+ [KM]i?B\), )?\d+ from \S+ \([0-9.]+ MiB\)$"
)
_BAR = re.compile(r"^(Storing|Assembling) +\d+% \|[=> ]+\| .* [0-9.]+ [KMG]?i?B/s +\d+:\d\d:\d\d ETA ")


@pytest.fixture
def tmux(tmp_path: Path) -> str:
    """A private tmux server's socket (killed afterwards); skip, or fail under CI=true, without tmux."""
    if TMUX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tmux is not installed (CI=true: the terminal test must run; .ci/run installs it)")
        pytest.skip("tmux is not installed")
    sock = str(tmp_path / "tmux.sock")
    yield sock
    subprocess.run([TMUX, "-S", sock, "kill-server"], capture_output=True, timeout=30)


def _blob(path: Path) -> None:
    """Random 1 MiB blocks, a few of them repeated: chunks to store, and a few repeats."""
    blocks = [os.urandom(1 << 20) for _ in range(SIZE >> 20)]
    with open(path, "wb") as f:
        for i, block in enumerate(blocks):
            f.write(blocks[i - 7] if i % 16 == 15 else block)


def _capture(sock: str) -> list[str]:
    proc = subprocess.run([TMUX, "-S", sock, "capture-pane", "-p", "-J", "-t", "t"],
                          capture_output=True, text=True, timeout=30)
    return proc.stdout.splitlines()


def test_bar_and_summaries_in_a_terminal(tmux: str, tmp_path: Path, env: dict[str, str]) -> None:
    blob, store = tmp_path / "blob.bin", tmp_path / "store"
    _blob(blob)
    script = tmp_path / "run.sh"
    py, cli = sys.executable, CLI
    script.write_text(
        f"cd {tmp_path}\n"
        f"'{py}' '{cli}' make -s '{store}' blob.caibx blob.bin; echo \"make=$?\"\n"
        f"'{py}' '{cli}' extract -s '{store}' blob.caibx out.bin; echo \"extract=$?\"\n"
        "sleep 600\n"
    )
    subprocess.run([TMUX, "-S", tmux, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                    "-x", str(COLUMNS), "-y", "20", "sh", str(script)], env=env, check=True, timeout=30)
    bars: list[str] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        screen = _capture(tmux)
        bars.extend(line for line in screen if _BAR.match(line.strip()))
        if any(line.startswith("extract=") for line in screen):
            break
        time.sleep(0.05)
    else:
        pytest.fail("make and extract did not finish in 300 s:\n" + "\n".join(_capture(tmux)))
    final = [line.rstrip() for line in _capture(tmux) if line.strip()]
    assert (tmp_path / "out.bin").read_bytes() == blob.read_bytes()
    assert len(final) == 4, final
    assert _MAKE.match(final[0]), final
    assert final[1] == "make=0"
    assert _EXTRACT.match(final[2]), final
    assert final[3] == "extract=0"
    assert bars, "no progress bar with a throughput was seen while make and extract ran"
    assert all(len(line) < COLUMNS for line in bars)
