"""Atomic, durable file writes: temp file, write, fsync, rename.

Every file pycasync creates (chunks, indexes, extracted blobs, config) is
written to a temporary file in the destination's directory and renamed over
the final name only once its content is complete and on disk, so a crash or a
failed operation never leaves a valid-looking name over partial data. The
temporary file is removed on error.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from .fileio import fdatasync

__all__ = ["atomic_write", "write_file_atomic", "temp_name", "TEMP_PREFIX"]

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


_counter = itertools.count()
_O_BINARY = getattr(os, "O_BINARY", 0)


def temp_name() -> str:
    """A temporary file name unique per process and call (pid + counter)."""
    return f"{TEMP_PREFIX}{os.getpid()}-{next(_counter)}"


def _create_temp(directory: str, mode: int) -> tuple[int, str]:
    """Create a new, exclusive temporary file in ``directory``.

    The name is unique per process and call (pid + counter), so concurrent
    writers never share one, and ``mode`` goes through the umask as for any
    new file; cheaper than :func:`tempfile.mkstemp` plus a chmod.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY
    while True:
        tmp = os.path.join(directory, temp_name())
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:  # left over by a crashed process with our pid
            continue


@contextlib.contextmanager
def _temp_fd(path: str, mode: int, sync: bool, sync_dir: bool) -> Iterator[int]:
    """Yield a raw fd of a new temp file that replaces ``path`` on success."""
    directory = os.path.dirname(path) or "."
    try:
        fd, tmp = _create_temp(directory, mode)
    except OSError as exc:  # name the file the caller asked for, not our temp name
        raise type(exc)(exc.errno, exc.strerror, path) from None
    try:
        try:
            yield fd
            if sync:
                fdatasync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync and sync_dir:
        _fsync_dir(directory)


def _existing_mode(path: str) -> int | None:
    """The permission bits of the regular file at ``path`` (None: there is none)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def atomic_write(
    path: str, mode: int = 0o644, sync: bool = True, sync_dir: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` when the block ends cleanly.

    On an exception the temporary file is deleted and ``path`` is untouched.
    ``sync`` flushes the data to disk before the rename (so the name never
    points at garbage after a crash); ``sync_dir`` also fsyncs the directory
    after it (so the rename itself survives a crash). An existing file's
    permission bits are kept; an existing directory at ``path`` is refused
    before anything is written.
    """
    path = os.path.abspath(path)
    keep_mode = _existing_mode(path)
    with _temp_fd(path, mode, sync, sync_dir) as fd, open(fd, "wb", closefd=False) as f:
        if keep_mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, keep_mode)  # replacing a file keeps its permissions
        yield f


def write_file_atomic(
    path: str, data: bytes, mode: int = 0o644, sync: bool = True, sync_dir: bool = True
) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`).

    The lean path for small files such as chunks: no file object, one write
    call in the common case.
    """
    with _temp_fd(path, mode, sync, sync_dir) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
