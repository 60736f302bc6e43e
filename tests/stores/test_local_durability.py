"""How a local store makes chunks durable: per chunk outside a writer block, together inside it.

Real processes traced with ``strace``: ``make`` writes its chunks without a
flush each, and one ``syncfs`` of the store comes before the index is renamed
into place; a chunk-server's PUT (no writer block) is fsynced before its
rename. A chunk file that a crash left empty does not count as present: the
next ``make`` stores the chunk again. :class:`Writeback` runs its flush in the
background every step and reports a failure at ``wait``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from casync_format.index import read_index
from casync_store import LocalStore
from casync_store.plumbing.writeback import Writeback
from tests.support import ROOT
from tests.support.cli import Server, chunk_files, data, ok, run
from tests.support.loopfs import unavailable

PYCASYNC = os.path.join(ROOT, "pycasync.py")


def _strace() -> str:
    path = shutil.which("strace")
    if path is None:
        unavailable("strace is not installed")
    assert path is not None
    return path


def _traced(env: dict[str, str], log: str, *args: str) -> list[str]:
    """Run pycasync under strace (all threads); the traced calls, one per line, in order."""
    calls = "trace=syncfs,fdatasync,fsync,rename,renameat,renameat2"
    argv = [_strace(), "-f", "-qq", "-e", calls, "-o", log, sys.executable, PYCASYNC, *args]
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    with open(log) as f:
        return [line for line in f if not line.rstrip().endswith("= -1 ENOENT (No such file or directory)")]


def _renames_of(lines: list[str], pattern: str) -> list[int]:
    return [i for i, line in enumerate(lines) if "rename" in line and re.search(pattern, line)]


def test_make_flushes_the_store_before_the_index(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    src, store, index = (os.path.join(tmp_path, n) for n in ("in.bin", "store", "out.caibx"))
    with open(src, "wb") as f:
        f.write(data(3 << 20, 7))
    lines = _traced(env, os.path.join(tmp_path, "trace"), "make", "-s", store, "-m", "16:64:256", index, src)
    chunks = _renames_of(lines, r"\.cacnk\"")
    index_at = _renames_of(lines, r"out\.caibx\"")
    syncs = [i for i, line in enumerate(lines) if line.split()[1].startswith("syncfs(")]
    assert len(chunks) == len(chunk_files(store)) > 20
    assert len(index_at) == 1 and syncs, lines
    assert max(chunks) < syncs[-1] < index_at[0]  # every chunk renamed, then flushed, then the index
    assert not [line for line in lines if "fdatasync(" in line and ".cacnk" in line]
    per_chunk = [line for line in lines if line.split()[1].startswith(("fdatasync(", "fsync("))]
    assert len(per_chunk) <= 3, per_chunk  # the index's own, not one per chunk


def test_chunk_server_put_is_durable_per_chunk(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    src, store, target = (os.path.join(tmp_path, n) for n in ("in.bin", "store", "target"))
    with open(src, "wb") as f:
        f.write(data(1 << 20, 8))
    ok(env, "make", "-s", store, "-m", "16:64:256", os.path.join(tmp_path, "a.caibx"), src)
    os.makedirs(target)
    log = os.path.join(tmp_path, "trace")
    tracer = (_strace(), "-f", "-qq", "-e", "trace=fdatasync,fsync", "-o", log, sys.executable, PYCASYNC)
    server = Server(env, "-s", target, "-w", program=tracer)
    try:
        ok(env, "cache", "-s", store, "-c", server.url, os.path.join(tmp_path, "a.caibx"))
    finally:
        pid = server.proc.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():  # the chunk-server strace runs: it ends, then strace
                os.kill(int(child), signal.SIGTERM)
        server.stop()
    with open(log) as f:
        flushes = [line for line in f if "fdatasync(" in line or "fsync(" in line]
    assert len(chunk_files(target)) == len(chunk_files(store)) > 5
    assert len(flushes) >= len(chunk_files(target))


def test_an_empty_chunk_file_is_stored_again(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    src, store, index = (os.path.join(tmp_path, n) for n in ("in.bin", "store", "out.caibx"))
    with open(src, "wb") as f:
        f.write(data(1 << 20, 9))
    ok(env, "make", "-s", store, "-m", "16:64:256", index, src)
    with open(index, "rb") as f:
        ids = [item.id for item in read_index(f)]
    local = LocalStore(store)
    emptied = [local.chunk_path(cid) for cid in ids[:3]]
    for path in emptied:  # what a power cut leaves of a renamed chunk whose data never reached the disk
        open(path, "wb").close()
    assert not local.holds_chunk(ids[0]) and not local.has_chunk(ids[0])
    assert local.holds_chunk(ids[5])
    ok(env, "make", "-s", store, "-m", "16:64:256", index, src)
    assert all(os.path.getsize(p) > 0 for p in emptied)
    out = os.path.join(tmp_path, "out.bin")
    ok(env, "extract", "-s", store, index, out)
    with open(out, "rb") as a, open(src, "rb") as b:
        assert a.read() == b.read()
    assert run(env, "verify", "-s", store).returncode == 0


def test_writeback_flushes_in_the_background_every_step() -> None:
    calls: list[str] = []
    started = threading.Event()

    def flush() -> None:
        calls.append(threading.current_thread().name)
        started.set()

    with Writeback(flush, 100) as wb:
        wb.add(99)
        assert calls == []
        wb.add(1)
        assert started.wait(5)
        assert wb.wait() is None
        wb.add(250)
        wb.wait()
    assert calls == ["pycasync-writeback", "pycasync-writeback"]


def test_writeback_reports_a_failed_flush(tmp_path: os.PathLike[str]) -> None:
    fd = os.open(os.path.join(tmp_path, "f"), os.O_RDONLY | os.O_CREAT)
    os.close(fd)  # fdatasync of a closed descriptor: EBADF, a real failing flush

    wb = Writeback(lambda: os.fdatasync(fd), 10)
    wb.add(10)
    error = wb.wait()
    assert isinstance(error, OSError)
    with pytest.raises(OSError), Writeback(lambda: os.fdatasync(fd), 10) as again:
        again.add(10)
