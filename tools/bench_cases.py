"""The local cases of ``tools/bench.py`` and its deterministic input.

``make`` (into empty stores; the two caibx files must be byte-identical and
the two stores must hold the same chunk ids), ``make-again`` (all chunks
already in the store), ``extract`` (both outputs must hash like the input)
and ``flat`` (pycasync make + extract peak RSS at each of ``--sizes``;
"flat" when the largest is within 15% + 8 MiB of the smallest).
:func:`generate_input` writes the input: mostly random data, repeated blocks
and zero runs, 16 MiB at a time.
"""

from __future__ import annotations

import hashlib
import os
import random

from bench_core import (
    CASES,
    PIECE,
    SEGMENT,
    Case,
    Context,
    Row,
    Tool,
    _check_outputs,
    _last_line,
    chunk_names,
    flat_verdict,
    remove,
    run_command,
    sha256_file,
)

__all__ = ["LOCAL_CASES", "case_flat", "generate_input"]


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



LOCAL_CASES = {
    "make": Case("make", "make into empty stores", _prep_make_empty, _argv_make, _check_indexes),
    "make-again": Case(
        "make-again", "make, all chunks present", _prep_make_again, _argv_make, _check_indexes
    ),
    "extract": Case("extract", "extract to a new file", _prep_extract, _argv_extract, _check_outputs),
    "flat": case_flat,
}
"""The local cases, in run order (registered first in :data:`bench_core.CASES`)."""
CASES.update(LOCAL_CASES)
