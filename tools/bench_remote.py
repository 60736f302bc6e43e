"""Remote cases of ``tools/bench.py``: extracting from S3 (a moto server) and reading a FUSE mount.

``s3-extract`` starts a moto S3 server on 127.0.0.1 (``tests/support/moto.py``'s
``start_moto``; needs moto and pytest installed), runs ``pycasync make``
into ``s3+http://127.0.0.1:PORT/bench/store`` untimed (its index must equal
the local ``make``'s byte for byte), then times ``pycasync extract`` from
the S3 store (row ``s3-extract``) and from the local store (row
``s3-extract:local``, the baseline); both outputs must hash like the input.
casync has no S3 backend, so only pycasync runs; the check gives S3's speed
as a share of the local one. moto is a Python server, so the S3 figure is a
lower bound of what a real S3 endpoint gives. The children get throw-away
``S3_ACCESS_KEY``/``S3_SECRET_KEY`` in their environment.

``fuse-read`` mounts pycasync's index with ``pycasync mount-index`` over the
local store (a fresh mount per measurement, so the page cache starts empty),
times ``cat`` of the whole file (row ``fuse-read:cat``; the mounted file
must hash like the input) and :data:`RANDOM_READS` reads of
:data:`RANDOM_SIZE` bytes at random offsets (row ``fuse-read:random``,
checked against the input, with reads/s and latency percentiles), and times
a plain ``pycasync extract`` from the same store as the baseline (row
``fuse-read:extract``). The RSS column of the mount rows is the mount
process's peak (``VmHWM``); a mount that does not exit 0 after
``fusermount -u`` fails its row. casync's counterpart for blobs is
``casync mkdev`` (an NBD device), which needs the nbd kernel module, so it is
not compared. Missing FUSE (``/dev/fuse``, ``fusermount``) or a pycasync
without ``mount-index`` skips the case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import filecmp
import importlib
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from types import ModuleType
from typing import Callable

from bench_core import (
    CASES,
    REPO,
    BenchError,
    Case,
    Context,
    Measurement,
    Row,
    Tool,
    _best,
    _check_outputs,
    _last_line,
    remove,
    run_command,
    sha256_file,
    skipped,
)
from bench_net import READY_TIMEOUT, STOP_TIMEOUT, Child, has_command, peak_rss_kib, pycasync_tool

__all__ = [
    "BUCKET",
    "RANDOM_READS",
    "RANDOM_SIZE",
    "READY_TIMEOUT",
    "REMOTE_CASES",
    "STOP_TIMEOUT",
    "Mount",
    "case_fuse_read",
    "case_s3_extract",
    "fuse_problem",
    "load_moto",
    "peak_rss_kib",
    "random_reads",
]

BUCKET = "bench"
"""The moto bucket holding the S3 store."""
RANDOM_READS = 2000
"""Random reads of ``fuse-read:random``."""
RANDOM_SIZE = 4096
"""Bytes per random read."""
_S3_ENV = {"S3_ACCESS_KEY": "bench-access-key", "S3_SECRET_KEY": "bench-secret-key", "S3_REGION": "us-east-1"}


def _only(ctx: Context, tool: Tool) -> Context:
    """``ctx`` with only ``tool`` (for cases casync cannot run)."""
    return dataclasses.replace(ctx, tools=[tool])


def _extract_case(name: str, store: str, index: str) -> Case:
    """A timed ``extract`` of ``index`` from ``store`` whose output must hash like the input."""

    def prepare(c: Context, t: Tool) -> None:
        remove(c.path(t, "out"))

    def argv(c: Context, t: Tool) -> list[str]:
        return t.extract(store, index, c.path(t, "out"))

    return Case(name, f"extract from {store}", prepare, argv, _check_outputs)


def _speed_share(remote: Row, local: Row, tool: str) -> str:
    a, b = remote.results.get(tool), local.results.get(tool)
    if not (a and b and remote.ok and local.ok and a.wall > 0):
        return ""
    return f"{b.wall / a.wall * 100:.0f}% of the local store's speed"


# ---------------------------------------------------------------- s3-extract


def load_moto() -> ModuleType | str:
    """``tests/support/moto.py`` as a module, or why it cannot be used."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        module = importlib.import_module("tests.support.moto")
        module.require_moto()  # pytest.skip (a BaseException) when moto[server] or boto3 is missing
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        return f"moto server unavailable: {exc}"
    return module


@contextlib.contextmanager
def _s3_environment() -> Iterator[None]:
    """Throw-away S3 credentials for the children (moto accepts any)."""
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(_S3_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def case_s3_extract(ctx: Context) -> list[Row]:
    """pycasync extract from an S3 store on a moto server, against the same from the local store."""
    tool = pycasync_tool(ctx)
    if tool is None:
        return skipped("s3-extract", "pycasync unavailable")
    moto = load_moto()
    if isinstance(moto, str):
        return skipped("s3-extract", moto)
    ctx.ensure_made(tool)
    index, local = ctx.path(tool, "caibx"), ctx.path(tool, "store")
    moto_dir = os.path.join(ctx.workdir, "moto")
    os.makedirs(moto_dir, exist_ok=True)
    one = _only(ctx, tool)
    with _s3_environment():
        server = moto.start_moto(moto_dir)
        try:
            moto.make_bucket(server.endpoint, BUCKET)
            netloc = urllib.parse.urlsplit(server.endpoint).netloc
            store = f"s3+http://{netloc}/{BUCKET}/store?lookup=path"
            s3_index = os.path.join(ctx.workdir, "s3.caibx")
            res = run_command(tool.make(store, s3_index, ctx.input_path))
            if res.returncode != 0:
                raise BenchError(f"make into {store} (setup) failed: {_last_line(res.stderr)}")
            remote = _extract_case("s3-extract", store, s3_index)(one)[0]
        finally:
            server.stop()
            remove(moto_dir)
    baseline = _extract_case("s3-extract:local", local, index)(one)[0]
    notes = ["casync has no S3 store (not compared)"]
    if remote.ok and not filecmp.cmp(s3_index, index, shallow=False):
        remote.ok, remote.check = False, "MISMATCH: the index made into S3 differs from the local make's"
    share = _speed_share(remote, baseline, tool.name)
    remote.check = "; ".join([remote.check, *notes, *([share] if share else [])])
    remove(s3_index)
    return [remote, baseline]


# ---------------------------------------------------------------- fuse-read


def fuse_problem(tool: Tool) -> str | None:
    """Why ``fuse-read`` cannot run here, or None."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not shutil.which("fusermount"):
        return "no fusermount (Debian package 'fuse')"
    if not has_command(tool, "mount-index"):
        return "pycasync has no mount-index command"
    return None


class Mount(Child):
    """A ``pycasync mount-index`` child process (a context manager that unmounts it)."""

    what = "mount-index"

    def __init__(self, tool: Tool, store: str, index: str, mountpoint: str) -> None:
        self.mountpoint = mountpoint
        os.makedirs(mountpoint, exist_ok=True)
        name = os.path.splitext(os.path.basename(index))[0]
        self.file = os.path.join(mountpoint, name)
        super().__init__([*tool.command, "mount-index", "-s", store, index, mountpoint])

    def ready(self) -> bool:
        return os.path.ismount(self.mountpoint) and os.path.exists(self.file)

    def _request_stop(self) -> None:
        """``fusermount -u`` (the mount process then exits)."""
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount", "-u", self.mountpoint], capture_output=True, check=False)

    def _force_stop(self) -> None:
        """A lazy unmount, then kill."""
        subprocess.run(["fusermount", "-u", "-z", self.mountpoint], capture_output=True, check=False)
        super()._force_stop()

    def verdict(self, row: Row) -> None:
        """Unmount and fail ``row`` when the mount did not exit 0."""
        code = self.stop()
        if code != 0:
            row.ok = False
            row.check += f"; MOUNT EXIT {code} after fusermount -u: {self.stderr()}"


def random_reads(path: str, source: str, count: int, size: int, seed: int) -> tuple[float, list[float], int]:
    """Time ``count`` preads of ``size`` bytes at random offsets of ``path``.

    Returns (wall seconds, per-read seconds, reads differing from ``source``);
    the comparison happens after the timing.
    """
    total = os.path.getsize(source)
    rng = random.Random(seed)
    offsets = [rng.randrange(max(1, total - size + 1)) for _ in range(count)]
    got: list[bytes] = []
    latencies: list[float] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        for off in offsets:
            t0 = time.perf_counter()
            got.append(os.pread(fd, size, off))
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
    finally:
        os.close(fd)
    with open(source, "rb") as f:
        bad = sum(1 for off, data in zip(offsets, got) if os.pread(f.fileno(), size, off) != data)
    return wall, latencies, bad


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _time_cat(ctx: Context, tool: Tool, row: Row, mountpoint: str) -> None:
    with Mount(tool, ctx.path(tool, "store"), ctx.path(tool, "caibx"), mountpoint) as mount:
        os.sync()
        m = run_command(["cat", mount.file])
        m.maxrss_kib = mount.peak_rss_kib()  # the file system's peak, not cat's
        row.results[tool.name] = _best(row.results.get(tool.name), m)
        if m.returncode != 0:
            row.ok, row.check = False, f"cat FAILED: {_last_line(m.stderr)}; mount: {mount.stderr()}"
        elif sha256_file(mount.file) != ctx.input_sha:
            row.ok, row.check = False, "MISMATCH: the mounted file differs from the input"
        mount.verdict(row)


def _time_random(ctx: Context, tool: Tool, row: Row, mountpoint: str, seed: int) -> None:
    with Mount(tool, ctx.path(tool, "store"), ctx.path(tool, "caibx"), mountpoint) as mount:
        try:
            wall, latencies, bad = random_reads(mount.file, ctx.input_path, RANDOM_READS, RANDOM_SIZE, seed)
        except OSError as exc:
            row.ok, row.check = False, f"random reads FAILED: {exc}; mount: {mount.stderr()}"
            mount.verdict(row)
            return
        row.results[tool.name] = _best(row.results.get(tool.name), Measurement(wall, mount.peak_rss_kib(), 0))
        p50, p99 = (_percentile(latencies, q) * 1e6 for q in (0.5, 0.99))
        if bad:
            row.ok, row.check = False, f"MISMATCH: {bad} of {RANDOM_READS} reads differ from the input"
        elif row.ok:
            row.check = (f"{RANDOM_READS / wall:.0f} reads/s of {RANDOM_SIZE} B at random offsets, "
                         f"p50 {p50:.0f} us, p99 {p99:.0f} us")
        mount.verdict(row)


def case_fuse_read(ctx: Context) -> list[Row]:
    """Sequential and random reads of a ``mount-index`` mount, against a plain extract."""
    tool = pycasync_tool(ctx)
    if tool is None:
        return skipped("fuse-read", "pycasync unavailable")
    problem = fuse_problem(tool)
    if problem:
        return skipped("fuse-read", problem)
    ctx.ensure_made(tool)
    mountpoint = os.path.join(ctx.workdir, "mnt")
    cat = Row("fuse-read:cat", ctx.input_size, check="ok")
    rand = Row("fuse-read:random", RANDOM_READS * RANDOM_SIZE)
    for attempt in range(ctx.repeat):
        if cat.ok:
            _time_cat(ctx, tool, cat, mountpoint)
        if rand.ok:
            _time_random(ctx, tool, rand, mountpoint, ctx.seed + attempt)
    remove(mountpoint)
    baseline = _extract_case("fuse-read:extract", ctx.path(tool, "store"), ctx.path(tool, "caibx"))(
        _only(ctx, tool))[0]
    share = _speed_share(cat, baseline, tool.name)
    notes = [share.replace("local store", "extract") if share else "",
             "casync mkdev (blob over NBD) not compared"]
    cat.check = "; ".join(x for x in (cat.check, *notes) if x)
    return [cat, rand, baseline]


REMOTE_CASES: dict[str, Callable[[Context], list[Row]]] = {
    "s3-extract": case_s3_extract,
    "fuse-read": case_fuse_read,
}
"""The remote cases, in run order (registered in :data:`bench_core.CASES`)."""
CASES.update(REMOTE_CASES)
