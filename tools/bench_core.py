"""The core of ``tools/bench.py``: measuring children, the two tools, a run's context, cases.

:func:`run_command` runs one child and measures its wall time and peak RSS
(through GNU ``time`` when available, see :data:`GNU_TIME`). :class:`Tool`
and its two subclasses say how casync and pycasync spell each operation.
:class:`Context` is a run's shared state, :class:`Row` one line of the
result table, :class:`Case` a casync-vs-pycasync comparison (untimed
``prepare`` per tool, timed ``argv``, then ``check``). Case modules register
their runners in :data:`CASES` (run order) and, when they need no generated
input, in :data:`INPUT_FREE`; ``tools/bench.py`` imports them in order.

Settle: every timed run starts right after its preparation, with the disk
flushed before and after that preparation. On a VM that reports free memory
back to its host (Firecracker's page reporting, here), a page the guest has
not touched since costs a host fault of ~20 us when a write first fills it:
writing 1 GiB into such pages takes ~6 s of system time instead of ~0.5 s.
A preparation that removes the last output frees memory that the next run
reuses only if it starts before the host takes that memory back (2 s), so a
long flush between the two (casync leaves its output unflushed) would give
one tool fresh memory and the other reused memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = [
    "BenchError", "CASES", "Case", "CasyncTool", "Context", "FLAT_RATIO", "FLAT_SLACK_KIB", "GNU_TIME",
    "INPUT_FREE", "MIB", "Measurement", "PIECE", "PycasyncTool", "REPO", "Row", "SEGMENT", "Tool",
    "capture", "chunk_names", "flat_verdict", "format_size", "parse_size", "remove", "run_command",
    "sha256_file", "skipped",
]  # fmt: skip

MIB = 1 << 20
PIECE = 16 * MIB  # generation granularity: bounded memory
SEGMENT = MIB  # unit of a zero run / repeated block
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAT_RATIO = 1.15
FLAT_SLACK_KIB = 8 * 1024


# ---------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """One child process run: wall seconds, peak RSS in KiB, exit code."""

    wall: float
    maxrss_kib: int
    returncode: int
    stderr: str = ""


def _find_gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (it can report its child's peak RSS)."""
    path = shutil.which("time", path="/usr/bin:/bin")
    if not path:
        return None
    try:
        res = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return path if "GNU" in res.stdout + res.stderr else None


GNU_TIME = _find_gnu_time()
"""GNU time, used as a thin launcher so the child's peak RSS excludes ours.

Python spawns children with vfork, and Linux charges the peak RSS of the
mm an ``execve`` replaces to the new program, so ``os.wait4`` alone reports
at least this script's own peak RSS. Launched from the small ``time``
process, the measured program starts from a ~1 MiB footprint.
"""


def run_command(argv: list[str]) -> Measurement:
    """Run ``argv`` (stdout discarded), wait for it with ``os.wait4`` and measure it."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss.name, *argv] if GNU_TIME else argv
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
        lines = rss.read().split()
    maxrss = int(lines[-1]) if GNU_TIME and lines and lines[-1].isdigit() else usage.ru_maxrss
    return Measurement(wall, maxrss, proc.returncode, text[-2000:])


def capture(argv: list[str]) -> str:
    """Run ``argv`` and return its first output line (or the error)."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    text = (res.stdout.strip() or res.stderr.strip()).replace("\n", "; ")
    return text if res.returncode == 0 else f"unavailable (exit {res.returncode}: {text[:200]})"


# ---------------------------------------------------------------- tools


class Tool:
    """How one implementation spells each operation."""

    name = "tool"

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def version(self) -> str:
        """The tool's version line."""
        return capture([*self.command, "--version"])

    def make(self, store: str, index: str, src: str) -> list[str]:
        """argv chunking ``src`` into ``store``, writing the blob index ``index``."""
        raise NotImplementedError

    def extract(self, store: str, index: str, out: str) -> list[str]:
        """argv rebuilding the blob of ``index`` from ``store`` into ``out``."""
        raise NotImplementedError

    def tar(self, out: str, tree: str, store: str | None = None) -> list[str]:
        """argv packing ``tree`` into the catar ``out`` (with ``store``: a caidx plus chunks)."""
        raise NotImplementedError

    def untar(self, archive: str, out: str, store: str | None = None) -> list[str]:
        """argv unpacking the catar ``archive`` (with ``store``: a caidx) into the directory ``out``."""
        raise NotImplementedError


class CasyncTool(Tool):
    """Debian's C casync."""

    name = "casync"
    features = tuple(f"--with={w}" for w in ("32bit-uids", "nsec-time", "permissions", "symlinks",
                                              "device-nodes", "fifos", "sockets", "xattrs"))
    """desync's archive feature set (flags 0xb000000010001f22) in casync's spelling."""

    def make(self, store: str, index: str, src: str) -> list[str]:
        return [*self.command, f"--store={store}", "make", index, src]

    def extract(self, store: str, index: str, out: str) -> list[str]:
        return [*self.command, f"--store={store}", "--seed-output=no", "extract", index, out]

    def tar(self, out: str, tree: str, store: str | None = None) -> list[str]:
        return [*self.command, *self.features, *([f"--store={store}"] if store else []), "make", out, tree]

    def untar(self, archive: str, out: str, store: str | None = None) -> list[str]:
        opts = [f"--store={store}", "--seed-output=no"] if store else []
        return [*self.command, *self.features, *opts, "extract", archive, out]


class PycasyncTool(Tool):
    """pycasync's desync-style CLI."""

    name = "pycasync"

    def __init__(self, command: list[str], concurrency: int | None) -> None:
        super().__init__(command)
        self.extra = ["-n", str(concurrency)] if concurrency else []

    def make(self, store: str, index: str, src: str) -> list[str]:
        return [*self.command, "make", "-s", store, *self.extra, index, src]

    def extract(self, store: str, index: str, out: str) -> list[str]:
        return [*self.command, "extract", "-s", store, *self.extra, index, out]

    def tar(self, out: str, tree: str, store: str | None = None) -> list[str]:
        return [*self.command, "tar", *(["-i", "-s", store] if store else []), *self.extra, out, tree]

    def untar(self, archive: str, out: str, store: str | None = None) -> list[str]:
        return [*self.command, "untar", *(["-i", "-s", store] if store else []), *self.extra, archive, out]


# ---------------------------------------------------------------- context


@dataclass
class Row:
    """One line of the result table."""

    case: str
    size: int
    results: dict[str, Measurement] = field(default_factory=dict)
    check: str = ""
    ok: bool = True

    def ratio(self) -> float | None:
        """casync time / pycasync time (>1: pycasync is faster)."""
        c, p = self.results.get("casync"), self.results.get("pycasync")
        return c.wall / p.wall if c and p and p.wall > 0 else None


@dataclass
class Context:
    """Shared state of a run: tools, input file and per-tool paths."""

    tools: list[Tool]
    workdir: str
    input_path: str
    input_size: int
    input_sha: str
    repeat: int
    seed: int = 0
    sizes: list[int] = field(default_factory=list)
    keep: bool = False
    tree: str = "/usr/share"
    flat_trees: list[str] = field(default_factory=list)
    clients: int = 64
    load_chunks: int = 1024
    memo: dict[str, object] = field(default_factory=dict)  # cases' cached facts (tree manifests)
    size_arg: int = 0  # --size as given (cases that make their own input scale by it)

    def path(self, tool: Tool, what: str) -> str:
        """Per-tool scratch path: ``what`` is store, caibx or out."""
        return os.path.join(self.workdir, f"{tool.name}.{what}")

    def ensure_made(self, tool: Tool) -> None:
        """Run ``make`` untimed if the tool's index or store is missing."""
        index, store = self.path(tool, "caibx"), self.path(tool, "store")
        if os.path.exists(index) and os.path.isdir(store):
            return
        remove(index)
        res = run_command(tool.make(store, index, self.input_path))
        if res.returncode != 0:
            raise BenchError(f"{tool.name} make (setup) failed: {res.stderr.strip()}")


class BenchError(Exception):
    """A tool failed in a way that makes the rest of a case meaningless."""


def remove(path: str) -> None:
    """Remove a file or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def sha256_file(path: str) -> str:
    """Hex sha256 of a file, read in pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            buf = f.read(PIECE)
            if not buf:
                return h.hexdigest()
            h.update(buf)


def chunk_names(store: str) -> set[str]:
    """The chunk file names of a local store."""
    names: set[str] = set()
    for _dirpath, _dirs, files in os.walk(store):
        names.update(f for f in files if f.endswith(".cacnk"))
    return names


# ---------------------------------------------------------------- input


def parse_size(text: str) -> int:
    """``"1GiB"``, ``"256M"``, ``"4096"`` -> bytes (K/M/G/T are binary multiples)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (try 256MiB, 1G, 4096)")
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * (1 << (10 * power)))


def format_size(n: int) -> str:
    """Bytes as a short binary-unit string."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.2f}{unit}"
    return f"{n}B"


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    """A casync-vs-pycasync comparison: untimed prepare, timed argv, then check.

    ``check`` returns a problem description, or None when all is well.
    """

    name: str
    description: str
    prepare: Callable[[Context, Tool], None]
    argv: Callable[[Context, Tool], list[str]]
    check: Callable[[Context], str | None]
    size: Callable[[Context], int] | None = None  # the size column; default: the input's

    def __call__(self, ctx: Context) -> list[Row]:
        row = Row(self.name, self.size(ctx) if self.size else ctx.input_size)
        for _ in range(ctx.repeat):
            for tool in ctx.tools:
                # The last run's dirty data goes to disk before this one's preparation, so the
                # memory its preparation frees (a removed output) is still free when the tool
                # starts: see ``settle`` in the module's notes.
                os.sync()
                self.prepare(ctx, tool)
                os.sync()
                m = run_command(self.argv(ctx, tool))
                row.results[tool.name] = _best(row.results.get(tool.name), m)
                if m.returncode != 0:
                    row.ok, row.check = False, f"{tool.name} FAILED: {_last_line(m.stderr)}"
                    return [row]
        problem = self.check(ctx)
        row.ok, row.check = problem is None, problem or "ok"
        return [row]


def _best(old: Measurement | None, new: Measurement) -> Measurement:
    """Fastest wall time, highest peak RSS seen (a failure always wins)."""
    if old is None or new.returncode != 0:
        return new
    fastest = new if new.wall < old.wall else old
    return Measurement(fastest.wall, max(old.maxrss_kib, new.maxrss_kib), 0, fastest.stderr)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no stderr)"


def _check_outputs(ctx: Context) -> str | None:
    """Every tool's extracted output must hash like the input."""
    bad = [t.name for t in ctx.tools if sha256_file(ctx.path(t, "out")) != ctx.input_sha]
    return f"MISMATCH: output of {', '.join(bad)} differs from the input" if bad else None


def skipped(name: str, reason: str) -> list[Row]:
    """The row of a case that cannot run here (not a failure)."""
    return [Row(name, 0, check=f"skipped ({reason})")]


def flat_verdict(rows: list[Row], tool: str) -> None:
    """Mark the largest size's row "flat" or "NOT FLAT" against the smallest."""
    if len(rows) < 2 or not all(r.ok for r in rows):
        return
    small, large = rows[0].results[tool].maxrss_kib, rows[-1].results[tool].maxrss_kib
    growth = f"{(large - small) / small * 100:+.1f}% vs {format_size(rows[0].size)}"
    if large <= small * FLAT_RATIO + FLAT_SLACK_KIB:
        rows[-1].check = f"flat ({growth})"
    else:
        rows[-1].ok, rows[-1].check = False, f"NOT FLAT ({growth})"



CASES: dict[str, Callable[[Context], list[Row]]] = {}
"""Case name -> runner, in run order; ``--only`` picks a subset (filled by the case modules)."""

INPUT_FREE: set[str] = set()
"""Cases that need no generated input."""
