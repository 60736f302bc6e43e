"""Positional file I/O that works wherever Python does.

``os.pread``/``os.pwrite`` (no shared file offset, so worker threads can read
and write one file at once) and ``os.fdatasync`` exist on Linux and macOS but
not everywhere: on Windows, :func:`pread` and :func:`pwrite_all` fall back to
``lseek`` plus ``read``/``write`` under one process-wide lock, and
:data:`fdatasync` to ``os.fsync``; :func:`sync_filesystem` is Linux's
``syncfs`` where libc has it, else ``os.sync``. Operations import these
instead of calling the platform functions directly.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from typing import Any, Callable

__all__ = ["pread", "pwrite_all", "fdatasync", "same_file", "sync_filesystem"]

fdatasync = getattr(os, "fdatasync", os.fsync)

_seek_lock = threading.Lock()  # only for the fallback: one shared offset per fd


def _pread_fallback(fd: int, size: int, offset: int) -> bytes:
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        parts, left = [], size
        while left:
            part = os.read(fd, left)
            if not part:
                break
            parts.append(part)
            left -= len(part)
        return b"".join(parts)


def _pwrite_fallback(fd: int, data: bytes | memoryview, offset: int) -> int:
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


_pread = getattr(os, "pread", None) or _pread_fallback
_pwrite = getattr(os, "pwrite", None) or _pwrite_fallback


def pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    data = _pread(fd, size, offset)
    if len(data) == size or not data:
        return data
    parts = [data]  # a short read before the end: read on
    got = len(data)
    while got < size:
        more = _pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``, looping over short writes."""
    n = _pwrite(fd, data, offset)
    if n == len(data):
        return
    view = memoryview(data)[n:]
    offset += n
    while view:
        n = _pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through links too); ``-`` is never a file."""
    if "-" in (a, b):
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet): compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def _load_syncfs() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # imported only when a flush is due

    try:
        func: Any = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int

    def call(fd: int) -> int:
        if func(fd) == 0:
            return 0
        return ctypes.get_errno() or errno.EIO

    return call


_syncfs: list[Callable[[int], int] | None] = []  # looked up on first use


def sync_filesystem(path: str) -> None:
    """Make everything written to the filesystem holding ``path`` durable (data and renames).

    One ``syncfs`` on Linux (the whole filesystem, also what other processes
    wrote to it), ``os.sync`` elsewhere. Raises OSError if the flush fails.
    """
    if not _syncfs:
        _syncfs.append(_load_syncfs())
    syncfs = _syncfs[0]
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        err = syncfs(fd)
        if err:
            raise OSError(err, os.strerror(err), path)
    finally:
        os.close(fd)
