"""Atomic, durable file writes: temp file, write, fsync, rename.

Every file pycasync creates (chunks, indexes, extracted blobs, config) is
written to a temporary file in the destination's directory and renamed over
the final name only once its content is complete and on disk, so a crash or a
failed operation never leaves a valid-looking name over partial data. The
temporary file is removed on error.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

__all__ = ["atomic_write", "write_file_atomic", "TEMP_PREFIX"]

TEMP_PREFIX = ".pycasync-tmp-"


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory or ".", os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str, mode: int = 0o644, sync: bool = True, sync_dir: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` when the block ends cleanly.

    On an exception the temporary file is deleted and ``path`` is untouched.
    ``sync`` fsyncs the data before the rename (so the name never points at
    garbage after a crash); ``sync_dir`` also fsyncs the directory after it
    (so the rename itself survives a crash).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync and sync_dir:
        _fsync_dir(directory)


def write_file_atomic(
    path: str, data: bytes, mode: int = 0o644, sync: bool = True, sync_dir: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, mode, sync, sync_dir) as f:
        f.write(data)


def _read_umask() -> int:
    """The process umask, read once at import (before worker threads exist)."""
    try:  # Linux: read it without changing it
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _read_umask()
