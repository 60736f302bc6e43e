#!/usr/bin/env python3
"""Benchmark pycasync against the real casync on the same input, in one run.

Usage::

    python3 tools/bench.py [--size 1GiB] [--sizes 256MiB,2GiB] [--input FILE]
                           [--workdir DIR] [--keep] [--concurrency N] [--repeat N]
                           [--only make,make-again,extract,flat,...] [--json]
                           [--pycasync CMD] [--casync PATH] [--seed N]
                           [--tree DIR] [--flat-trees DIR,DIR]
                           [--clients N] [--load-chunks N]

Every case runs ``casync`` and ``pycasync`` on the same input file and reports
the best wall time of ``--repeat`` runs, the ratio casync/pycasync (above 1
means pycasync is faster), throughput in MB/s (10**6 bytes of input per
second) and the peak RSS of each child process (``os.wait4``; the child is
started through GNU ``/usr/bin/time`` when available, see :data:`GNU_TIME`).

Cases: ``make`` (into empty stores; the two caibx files must be byte-identical
and the two stores must hold the same chunk ids), ``make-again`` (all chunks
already in the store), ``extract`` (both outputs must hash like the input) and
``flat`` (pycasync make + extract peak RSS at each of ``--sizes``; "flat" when
the largest is within 15% + 8 MiB of the smallest). A failed check (MISMATCH,
NOT FLAT, FAILED) is shown in the table, repeated on stderr, and the script
exits 1; so does an unavailable tool (its half is skipped).

Network cases (:mod:`bench_net`): ``http-extract`` (both HTTP clients
extract from one ``pycasync chunk-server`` on 127.0.0.1) and ``http-load``
(``--clients`` threads each GET ``--load-chunks`` chunks, 0 = all: req/s,
errors, server peak RSS). Archive cases (:mod:`bench_archive`) on the
read-only ``--tree`` with desync's feature set: ``tar``, ``tar-index``
(byte-identical catar/caidx), ``untar``, ``untar-index`` (extracted trees
equal the source) and ``tar-flat`` (``tar -i``/``untar -i`` peak RSS over
``--flat-trees``). Those modules' docstrings give the details. A case whose
prerequisites are missing shows "skipped (reason)" without failing the run.

The input is generated deterministically from ``--seed`` (mostly random data,
repeated blocks and zero runs, 16 MiB at a time) unless ``--input`` names an
existing file. Page caches cannot be dropped reliably, so the input is read
once before timing, ``os.sync()`` runs (untimed) before every timed command,
and ``--repeat N`` takes the best of N runs.

A case is a :class:`Case` in :data:`CASES`: a ``prepare`` hook (untimed, per
tool), an ``argv`` builder per tool and a ``check`` run after both tools;
tools differ only in :class:`Tool` methods, so a new case is a few lines.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

__all__ = [
    "BenchError", "CASES", "Case", "CasyncTool", "Context", "GNU_TIME", "INPUT_FREE", "Measurement",
    "PycasyncTool", "Row", "Tool", "build_context", "capture", "case_flat", "chunk_names",
    "flat_verdict", "format_size", "format_table", "generate_input", "main", "parse_args", "parse_size",
    "remove", "report_json", "run_command", "sha256_file", "skipped",
]

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


def _fill_piece(rng: random.Random, n: int, pool: list[bytes]) -> bytes:
    """``n`` bytes: random, with ~8% zero runs and ~12% repeats of pool blocks."""
    buf = bytearray(rng.randbytes(n))
    for off in range(0, n, SEGMENT):
        end = min(off + SEGMENT, n)
        pick = rng.random()
        if pick < 0.08:
            buf[off:end] = bytes(end - off)
        elif pick < 0.20:
            buf[off:end] = rng.choice(pool)[: end - off]
    return bytes(buf)


def generate_input(path: str, size: int, seed: int) -> str:
    """Write the deterministic test input (reused if already there); return its sha256.

    The data is produced 16 MiB at a time, so memory stays flat at any size.
    A ``<path>.sha256`` sidecar marks a complete file.
    """
    sidecar = path + ".sha256"
    if os.path.exists(sidecar) and os.path.exists(path) and os.path.getsize(path) == size:
        with open(sidecar) as f:
            return f.read().strip()
    rng = random.Random(seed)
    pool = [rng.randbytes(SEGMENT) for _ in range(8)]
    h = hashlib.sha256()
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        left = size
        while left:
            piece = _fill_piece(rng, min(PIECE, left), pool)
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    os.replace(tmp, path)
    with open(sidecar, "w") as f:
        f.write(h.hexdigest() + "\n")
    return h.hexdigest()


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


def _prep_make_empty(ctx: Context, tool: Tool) -> None:
    remove(ctx.path(tool, "store"))
    remove(ctx.path(tool, "caibx"))


def _prep_make_again(ctx: Context, tool: Tool) -> None:
    ctx.ensure_made(tool)
    remove(ctx.path(tool, "caibx"))


def _prep_extract(ctx: Context, tool: Tool) -> None:
    ctx.ensure_made(tool)
    remove(ctx.path(tool, "out"))


def _argv_make(ctx: Context, tool: Tool) -> list[str]:
    return tool.make(ctx.path(tool, "store"), ctx.path(tool, "caibx"), ctx.input_path)


def _argv_extract(ctx: Context, tool: Tool) -> list[str]:
    return tool.extract(ctx.path(tool, "store"), ctx.path(tool, "caibx"), ctx.path(tool, "out"))


def _check_indexes(ctx: Context) -> str | None:
    """The caibx files must be byte-identical and the stores hold the same ids."""
    blobs = {}
    for tool in ctx.tools:
        with open(ctx.path(tool, "caibx"), "rb") as f:
            blobs[tool.name] = f.read()
    if len(set(blobs.values())) > 1:
        a, b = list(blobs.values())[:2]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        sizes = ", ".join(f"{k} {len(v)} bytes" for k, v in blobs.items())
        return f"MISMATCH: caibx files differ ({sizes}; first difference at byte {first})"
    ids = [chunk_names(ctx.path(tool, "store")) for tool in ctx.tools]
    if any(s != ids[0] for s in ids):
        return f"MISMATCH: stores differ ({' vs '.join(str(len(s)) for s in ids)} chunks)"
    return None


def _check_outputs(ctx: Context) -> str | None:
    """Every tool's extracted output must hash like the input."""
    bad = [t.name for t in ctx.tools if sha256_file(ctx.path(t, "out")) != ctx.input_sha]
    return f"MISMATCH: output of {', '.join(bad)} differs from the input" if bad else None


def case_flat(ctx: Context) -> list[Row]:
    """pycasync make + extract peak RSS at each of ``ctx.sizes``: flat or not."""
    tool = next((t for t in ctx.tools if t.name == "pycasync"), None)
    if tool is None:
        return [Row("flat", 0, check="skipped (pycasync unavailable)", ok=False)]
    rows: dict[str, list[Row]] = {"make": [], "extract": []}
    for size in sorted(ctx.sizes):
        src = os.path.join(ctx.workdir, f"input-{size}-{ctx.seed}.bin")
        sha = ctx.input_sha if src == ctx.input_path else generate_input(src, size, ctx.seed)
        store, index, out = (os.path.join(ctx.workdir, f"flat.{w}") for w in ("store", "caibx", "out"))
        for op, argv in (
            ("make", tool.make(store, index, src)),
            ("extract", tool.extract(store, index, out)),
        ):
            os.sync()
            m = run_command(argv)
            row = Row(f"flat:{op}", size, {tool.name: m})
            if m.returncode != 0:
                row.ok, row.check = False, f"FAILED: {_last_line(m.stderr)}"
            rows[op].append(row)
        if rows["extract"][-1].ok and sha256_file(out) != sha:
            rows["extract"][-1].ok, rows["extract"][-1].check = False, "MISMATCH: output differs from input"
        for path in (store, index, out) if ctx.keep or src == ctx.input_path else (store, index, out, src):
            remove(path)
    for op_rows in rows.values():
        flat_verdict(op_rows, tool.name)
    return rows["make"] + rows["extract"]


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


CASES: dict[str, Callable[[Context], list[Row]]] = {
    "make": Case("make", "make into empty stores", _prep_make_empty, _argv_make, _check_indexes),
    "make-again": Case(
        "make-again", "make, all chunks present", _prep_make_again, _argv_make, _check_indexes
    ),
    "extract": Case("extract", "extract to a new file", _prep_extract, _argv_extract, _check_outputs),
    "flat": case_flat,
}
"""Case name -> runner, in run order; ``--only`` picks a subset."""

INPUT_FREE: set[str] = set()
"""Cases that need no generated input."""

# The extra case modules import this one as ``bench`` (even when it runs as a
# script) and add their cases to CASES and INPUT_FREE.
sys.modules.setdefault("bench", sys.modules[__name__])
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
for _extra in ("bench_net", "bench_archive", "bench_remote"):
    importlib.import_module(_extra)


# ---------------------------------------------------------------- report


def _cells(row: Row, names: list[str]) -> list[str]:
    cells = [row.case, format_size(row.size)]
    walls, rates, rss = [], [], []
    for name in names:
        m = row.results.get(name)
        ok = m is not None and m.returncode == 0
        walls.append(f"{m.wall:.2f}" if ok and m else ("FAIL" if m else "-"))
        rates.append(f"{row.size / 1e6 / m.wall:.0f}" if ok and m and m.wall > 0 else "-")
        rss.append(f"{m.maxrss_kib / 1024:.0f}" if m else "-")
    ratio = row.ratio()
    ok_both = all(m.returncode == 0 for m in row.results.values())
    cells += [*walls, f"{ratio:.2f}x" if ratio and ok_both else "-", *rates, *rss, row.check]
    return cells


def format_table(rows: list[Row], names: list[str]) -> str:
    """The result rows as an aligned text table."""
    head = ["case", "size"]
    head += [f"{n} s" for n in names] + ["ratio"] + [f"{n} MB/s" for n in names]
    head += [f"{n} RSS MiB" for n in names] + ["check"]
    table = [head] + [_cells(r, names) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = [
        "  ".join(
            c.ljust(w) if i in (0, 1, len(head) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report_json(ctx: Context, rows: list[Row], versions: dict[str, str]) -> str:
    """Machine-readable results."""
    out = {
        "versions": versions,
        "input": {"path": ctx.input_path, "size": ctx.input_size, "sha256": ctx.input_sha},
        "repeat": ctx.repeat,
        "rows": [dict(asdict(r), ratio=r.ratio()) for r in rows],
        "ok": all(r.ok for r in rows),
    }
    return json.dumps(out, indent=2)


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description="casync vs pycasync benchmark", allow_abbrev=False)
    p.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="generated input size")
    p.add_argument("--sizes", default="256MiB,2GiB", help="input sizes for the RSS flatness check")
    p.add_argument("--input", help="use this existing file instead of generated data")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated input")
    p.add_argument("--workdir", help="scratch directory (default: a new tempdir under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (and generated inputs)")
    p.add_argument("--concurrency", "-n", type=int, help="pycasync -n (default: its own)")
    p.add_argument("--pycasync", default=f"{shlex.quote(sys.executable)} {REPO}/pycasync.py")
    p.add_argument("--casync", default="/usr/bin/casync")
    p.add_argument("--repeat", type=int, default=1, help="best of N timed runs per tool")
    p.add_argument("--only", default=",".join(CASES), help=f"comma list of: {', '.join(CASES)}")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--tree", default="/usr/share", help="real directory tree of the archive cases")
    p.add_argument("--flat-trees", default="/usr/share/doc,/usr/share", help="trees for tar-flat")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients of http-load")
    p.add_argument("--load-chunks", type=int, default=1024, help="chunks per http-load client (0: all)")
    args = p.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in args.only if c not in CASES]
    if unknown or min(args.repeat, args.clients, args.load_chunks + 1) < 1:
        p.error(f"unknown case(s) {', '.join(unknown)}" if unknown else "need --repeat, --clients >= 1")
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.flat_trees = [os.path.abspath(t) for t in args.flat_trees.split(",") if t.strip()]
    return args


def build_context(args: argparse.Namespace, workdir: str) -> Context:
    """Tools plus the (generated or given) input, read once to warm the page cache."""
    tools: list[Tool] = [
        CasyncTool([args.casync]),
        PycasyncTool(shlex.split(args.pycasync), args.concurrency),
    ]
    path, size, sha = "", 0, ""
    if all(name in INPUT_FREE for name in args.only):
        pass
    elif args.input:
        path = os.path.abspath(args.input)
        size, sha = os.path.getsize(path), sha256_file(path)
    else:
        path = os.path.join(workdir, f"input-{args.size}-{args.seed}.bin")
        size, sha = args.size, generate_input(path, args.size, args.seed)
    return Context(tools, workdir, path, size, sha, args.repeat, args.seed, args.sizes, args.keep,
                   os.path.abspath(args.tree), args.flat_trees, args.clients, args.load_chunks)


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases, print the table (or JSON); 1 if any check failed."""
    args = parse_args(argv)
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="pycasync-bench-")
    os.makedirs(workdir, exist_ok=True)
    try:
        ctx = build_context(args, workdir)
        versions = {t.name: t.version() for t in ctx.tools}
        versions["rss"] = f"GNU time ({GNU_TIME})" if GNU_TIME else "os.wait4 (includes bench.py's own peak)"
        missing = [t.name for t in ctx.tools if versions[t.name].startswith("unavailable")]
        ctx.tools = [t for t in ctx.tools if t.name not in missing]
        if not args.json:
            for name, text in versions.items():
                print(f"{name}: {text}")
            what = f"{ctx.input_path} ({format_size(ctx.input_size)})" if ctx.input_path else "none"
            print(f"input: {what}, tree {ctx.tree}, workdir {workdir}", flush=True)
        rows: list[Row] = []
        for name in args.only:
            try:
                rows += CASES[name](ctx)
            except BenchError as exc:
                rows.append(Row(name, ctx.input_size, check=f"FAILED: {exc}", ok=False))
            if not args.json:
                print(f"  {name}: done", file=sys.stderr, flush=True)
        names = [t.name for t in ctx.tools]
        print(report_json(ctx, rows, versions) if args.json else format_table(rows, names))
        bad = [r for r in rows if not r.ok]
        for r in bad:
            print(f"*** {r.case} {format_size(r.size)}: {r.check}", file=sys.stderr)
        for name in missing:
            print(f"*** {name} is unavailable, its half was skipped: {versions[name]}", file=sys.stderr)
        return 1 if bad or missing else 0
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
