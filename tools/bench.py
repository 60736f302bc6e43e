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
``--flat-trees``). The OTA case (:mod:`bench_ota`), ``ota``: v1 is ``/usr``'s
files concatenated up to ``--size``, v2 is v1 edited (in place, shifting
insertions, a deletion, a repeated region, new data); both tools extract v2
from a ``pycasync chunk-server`` with no seed, v1's image and v1's index as
seed, and the check compares the chunks each fetched with the chunks that are
really new. Those modules' docstrings give the details. A case whose
prerequisites are missing shows "skipped (reason)" without failing the run.

The input is generated deterministically from ``--seed`` (mostly random data,
repeated blocks and zero runs, 16 MiB at a time) unless ``--input`` names an
existing file. Page caches cannot be dropped reliably, so the input is read
once before timing, ``os.sync()`` runs (untimed) before every timed command,
and ``--repeat N`` takes the best of N runs.

A case is a :class:`Case` in :data:`CASES`: a ``prepare`` hook (untimed, per
tool), an ``argv`` builder per tool and a ``check`` run after both tools;
tools differ only in :class:`Tool` methods, so a new case is a few lines.
This file is the driver (options, report, main); :mod:`bench_core` holds the
measuring, the tools, the context and :class:`Case`, :mod:`bench_cases` the
input and the local cases, and each case module registers its cases in
``bench_core.CASES``, in run order.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cases import generate_input  # registers the local cases first
from bench_core import (
    CASES,
    GNU_TIME,
    INPUT_FREE,
    REPO,
    BenchError,
    CasyncTool,
    Context,
    PycasyncTool,
    Row,
    Tool,
    format_size,
    parse_size,
    sha256_file,
)

for _module in ("bench_net", "bench_archive", "bench_remote", "bench_ota"):
    importlib.import_module(_module)  # each registers its cases in CASES, in run order

__all__ = ["build_context", "format_table", "main", "parse_args", "report_json"]


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
                   os.path.abspath(args.tree), args.flat_trees, args.clients, args.load_chunks,
                   size_arg=args.size)


def compile_like_installed(workdir: str) -> None:
    """Give the pycasync runs byte-compiled modules, as an installed package has.

    A checkout run with ``PYTHONDONTWRITEBYTECODE=1`` (set in some sandboxes)
    would recompile every module on every run, about 30 ms per command that
    no installed copy pays. The compiled files go under ``WORKDIR/pycache``
    (``PYTHONPYCACHEPREFIX``), never into the checkout.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    targets = [os.path.join(REPO, name) for name in ("casync_format", "casync_store", "pycasync.py")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *targets], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    """Run the selected cases, print the table (or JSON); 1 if any check failed."""
    args = parse_args(argv)
    workdir = os.path.abspath(args.workdir) if args.workdir else tempfile.mkdtemp(prefix="pycasync-bench-")
    os.makedirs(workdir, exist_ok=True)
    compile_like_installed(workdir)
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
