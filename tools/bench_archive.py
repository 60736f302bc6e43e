"""Archive cases of ``tools/bench.py``: casync make/extract against pycasync tar/untar on a real tree.

The tree is ``--tree`` (default /usr/share), read-only: nothing is copied.
Before the first archive case its manifest is taken once (every regular file
is read, which also warms the page cache for both tools): per path, the full
``st_mode``, owner, size, nanosecond mtime, device number, symlink target,
sha256 of the content and the ``user.*`` xattrs. casync runs with desync's
feature set (``CasyncTool.features``, flags 0xb000000010001f22).

- ``tar``: ``casync make --with=... OUT.catar TREE`` vs ``pycasync tar
  OUT.catar TREE``; the two catar files must be byte-identical.
- ``tar-index``: the same into empty stores (``--store=S OUT.caidx`` vs
  ``tar -i -s S OUT.caidx``); the caidx files must be byte-identical and the
  stores hold the same chunk files.
- ``untar`` / ``untar-index``: ``casync extract --with=...`` vs ``pycasync
  untar`` (``-i -s S`` with each tool's own caidx and store, made untimed if
  the cases above did not run) into a new directory; each extracted tree must
  match the source's manifest, and is removed after the check.
- ``tar-flat``: pycasync ``tar -i`` and ``untar -i`` peak RSS on each of
  ``--flat-trees``, smallest tree first; "flat" as in ``flat``.

The size column is the tree's regular-file bytes, so MB/s is file data per
second. A missing tree, or a pycasync without ``tar``/``untar``, gives a
"skipped (reason)" row.
"""

from __future__ import annotations

import os
import stat
from typing import Callable

import bench_net
from bench_core import (
    CASES,
    INPUT_FREE,
    PIECE,
    BenchError,
    Case,
    Context,
    Row,
    Tool,
    _last_line,
    chunk_names,
    flat_verdict,
    remove,
    run_command,
    sha256_file,
    skipped,
)

__all__ = [
    "ARCHIVE_CASES",
    "ArchiveCase",
    "MANIFEST_FIELDS",
    "Manifest",
    "case_tar_flat",
    "compare_manifests",
    "first_difference",
    "tree_bytes",
    "tree_manifest",
]

MANIFEST_FIELDS = ("mode", "uid", "gid", "size", "mtime_ns", "rdev", "target", "sha256", "xattrs")
"""What :func:`tree_manifest` records per path, in its tuples' order."""
Manifest = dict[bytes, tuple[object, ...]]
"""Relative path -> the :data:`MANIFEST_FIELDS` of one entry."""


# ---------------------------------------------------------------- trees


def _raise(exc: OSError) -> None:
    raise exc


def _user_xattrs(path: bytes) -> tuple[tuple[str, bytes], ...]:
    try:
        names = sorted(n for n in os.listxattr(path, follow_symlinks=False) if n.startswith("user."))
        return tuple((n, os.getxattr(path, n, follow_symlinks=False)) for n in names)
    except OSError:  # a file system without xattrs: nothing to compare
        return ()


def _entry(path: bytes) -> tuple[object, ...]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    regular, directory = kind == stat.S_IFREG, kind == stat.S_IFDIR
    return (
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size if regular else 0,
        st.st_mtime_ns,
        st.st_rdev if kind in (stat.S_IFBLK, stat.S_IFCHR) else 0,
        os.readlink(path) if kind == stat.S_IFLNK else None,
        sha256_file(path) if regular else None,
        _user_xattrs(path) if regular or directory else (),
    )


def tree_manifest(root: str) -> Manifest:
    """Relative path (b"." for the root) -> :data:`MANIFEST_FIELDS` of every entry under ``root``."""
    top = os.fsencode(root)
    out = {b".": _entry(top)}
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, top)] = _entry(path)
    return out


def tree_bytes(root: str) -> int:
    """Total size of the regular files under ``root`` (no content read)."""
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root, onerror=_raise):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def compare_manifests(want: Manifest, got: Manifest) -> str | None:
    """None if equal, else the number of differing paths and the first few differences."""
    problems = []
    for key in sorted(want.keys() | got.keys()):
        shown = key.decode("utf-8", "backslashreplace")
        if key not in got:
            problems.append(f"{shown} missing")
        elif key not in want:
            problems.append(f"{shown} extra")
        elif want[key] != got[key]:
            diffs = [f"{n} {a!r} != {b!r}" for n, a, b in zip(MANIFEST_FIELDS, want[key], got[key]) if a != b]
            problems.append(f"{shown}: {', '.join(diffs)}")
    if not problems:
        return None
    return f"{len(problems)} paths differ, e.g. {'; '.join(problems[:3])}"[:600]


def first_difference(a: str, b: str) -> int | None:
    """Offset of the first byte where files ``a`` and ``b`` differ, None if identical."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            x, y = fa.read(PIECE), fb.read(PIECE)
            if x != y:
                return off + next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
            if not x:
                return None
            off += len(x)


def _source(ctx: Context) -> Manifest:
    """The manifest of ``ctx.tree``, taken once per run."""
    key = f"manifest:{ctx.tree}"
    if key not in ctx.memo:
        ctx.memo[key] = tree_manifest(ctx.tree)
    return ctx.memo[key]  # type: ignore[return-value]


def _size(ctx: Context) -> int:
    key = f"bytes:{ctx.tree}"
    if key not in ctx.memo:
        ctx.memo[key] = tree_bytes(ctx.tree)
    return ctx.memo[key]  # type: ignore[return-value]


# ---------------------------------------------------------------- cases


def _why_not(ctx: Context, trees: list[str]) -> str | None:
    """Why the archive cases cannot run here, or None."""
    for tree in trees:
        if not os.path.isdir(tree):
            return f"no directory {tree}"
    tool = bench_net.pycasync_tool(ctx)
    key = "archive-commands"
    if tool is not None and key not in ctx.memo:
        ctx.memo[key] = all(bench_net.has_command(tool, verb) for verb in ("tar", "untar"))
    if tool is not None and not ctx.memo[key]:
        return "pycasync has no tar/untar command"
    return None


class ArchiveCase(Case):
    """A :class:`bench.Case` on ``ctx.tree``: skipped without its prerequisites."""

    def __call__(self, ctx: Context) -> list[Row]:
        reason = _why_not(ctx, [ctx.tree])
        if reason:
            return skipped(self.name, reason)
        _source(ctx)  # read the tree once, untimed: a warm page cache for both tools
        return super().__call__(ctx)


def _outputs(ctx: Context, tool: Tool, index: bool) -> tuple[str, str | None]:
    """The tool's archive (catar, or caidx and its store)."""
    if index:
        return ctx.path(tool, "caidx"), ctx.path(tool, "tstore")
    return ctx.path(tool, "catar"), None


def _prep_tar(index: bool) -> Callable[[Context, Tool], None]:
    def prepare(ctx: Context, tool: Tool) -> None:
        archive, store = _outputs(ctx, tool, index)
        remove(archive)
        if store:
            remove(store)

    return prepare


def _argv_tar(index: bool) -> Callable[[Context, Tool], list[str]]:
    def argv(ctx: Context, tool: Tool) -> list[str]:
        archive, store = _outputs(ctx, tool, index)
        return tool.tar(archive, ctx.tree, store)

    return argv


def _check_tar(index: bool) -> Callable[[Context], str | None]:
    def check(ctx: Context) -> str | None:
        if len(ctx.tools) < 2:
            return None
        (a, sa), (b, sb) = (_outputs(ctx, t, index) for t in ctx.tools[:2])
        off = first_difference(a, b)
        if off is not None:
            sizes = f"{os.path.getsize(a)} vs {os.path.getsize(b)} bytes"
            return f"MISMATCH: {os.path.basename(a)} and {os.path.basename(b)} differ at byte {off} ({sizes})"
        if sa and sb and chunk_names(sa) != chunk_names(sb):
            return f"MISMATCH: stores differ ({len(chunk_names(sa))} vs {len(chunk_names(sb))} chunks)"
        return None

    return check


def _out_dir(ctx: Context, tool: Tool, index: bool) -> str:
    return ctx.path(tool, "itree" if index else "tree")


def _prep_untar(index: bool) -> Callable[[Context, Tool], None]:
    def prepare(ctx: Context, tool: Tool) -> None:
        remove(_out_dir(ctx, tool, index))
        archive, store = _outputs(ctx, tool, index)
        if os.path.exists(archive) and (store is None or os.path.isdir(store)):
            return
        remove(archive)
        res = run_command(tool.tar(archive, ctx.tree, store))
        if res.returncode != 0:
            raise BenchError(f"{tool.name} tar (setup) failed: {_last_line(res.stderr)}")

    return prepare


def _argv_untar(index: bool) -> Callable[[Context, Tool], list[str]]:
    def argv(ctx: Context, tool: Tool) -> list[str]:
        archive, store = _outputs(ctx, tool, index)
        return tool.untar(archive, _out_dir(ctx, tool, index), store)

    return argv


def _check_untar(index: bool) -> Callable[[Context], str | None]:
    def check(ctx: Context) -> str | None:
        problems = []
        for tool in ctx.tools:
            out = _out_dir(ctx, tool, index)
            problem = compare_manifests(_source(ctx), tree_manifest(out))
            if problem:
                problems.append(f"{tool.name}: {problem}")
            if not ctx.keep:
                remove(out)
        return f"MISMATCH: {' | '.join(problems)}" if problems else None

    return check


def case_tar_flat(ctx: Context) -> list[Row]:
    """pycasync ``tar -i`` and ``untar -i`` peak RSS on each of ``ctx.flat_trees``: flat or not."""
    tool = bench_net.pycasync_tool(ctx)
    reason = "pycasync unavailable" if tool is None else _why_not(ctx, ctx.flat_trees)
    if tool is None or reason:
        return skipped("tar-flat", reason or "")
    rows: dict[str, list[Row]] = {"tar-index": [], "untar-index": []}
    store, index, out = (os.path.join(ctx.workdir, f"tflat.{w}") for w in ("store", "caidx", "tree"))
    for size, tree in sorted((tree_bytes(t), t) for t in ctx.flat_trees):
        steps = (("tar-index", tool.tar(index, tree, store)), ("untar-index", tool.untar(index, out, store)))
        for op, argv in steps:
            os.sync()
            m = run_command(argv)
            row = Row(f"tar-flat:{op}", size, {tool.name: m}, check=os.path.basename(tree))
            if m.returncode != 0:
                row.ok, row.check = False, f"FAILED: {_last_line(m.stderr)}"
            rows[op].append(row)
        for path in (store, index, out):
            remove(path)
    for op_rows in rows.values():
        flat_verdict(op_rows, tool.name)
    return rows["tar-index"] + rows["untar-index"]


def _tar_case(name: str, text: str, index: bool) -> ArchiveCase:
    return ArchiveCase(name, text, _prep_tar(index), _argv_tar(index), _check_tar(index), _size)


def _untar_case(name: str, text: str, index: bool) -> ArchiveCase:
    return ArchiveCase(name, text, _prep_untar(index), _argv_untar(index), _check_untar(index), _size)


ARCHIVE_CASES: dict[str, Callable[[Context], list[Row]]] = {
    "tar": _tar_case("tar", "catar of a tree", False),
    "tar-index": _tar_case("tar-index", "caidx of a tree into an empty store", True),
    "untar": _untar_case("untar", "catar into a new directory", False),
    "untar-index": _untar_case("untar-index", "caidx into a new directory", True),
    "tar-flat": case_tar_flat,
}
"""The archive cases, in run order (in :data:`bench_core.CASES` and :data:`bench_core.INPUT_FREE`)."""
CASES.update(ARCHIVE_CASES)
INPUT_FREE.update(ARCHIVE_CASES)
