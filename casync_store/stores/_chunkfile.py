"""A local store's work on one chunk file: read it, write it, refresh it; in C where built.

Each of the three is a short run of system calls on ``DIR/NAME`` (a chunk's
prefix directory and file name) that decides nothing: it reports what
happened as a status tuple, and :mod:`.local` turns that into results and
errors. The functions here are the pure-Python reference; where the C
extension is built (and ``PYCASYNC_PUREPYTHON`` is not set) :data:`read`,
:data:`write` and :data:`refresh` are its ``read_chunk_file``,
``write_chunk_file`` and ``refresh_chunk_file`` (``casync_format/_chunkfile.c``),
which do the same calls with the GIL released once instead of once per call,
and give the same tuples:

- ``read(dir, name, limit)``: ``(0, bytes)``; ``(1, errno)`` the directory
  did not open (``O_DIRECTORY|O_NOFOLLOW``); ``(2, errno)`` the file did not
  open (``O_NOFOLLOW|O_NONBLOCK``); ``(3, st_mode)`` not a regular file;
  ``(4, size)`` more than ``limit`` bytes; ``(5, errno)`` fstat or read failed.
- ``write(dir, temp, name, data, mode)``: ``(0, 0)``; ``(1, errno)`` the
  directory or the new ``temp`` (``O_EXCL``) did not open; ``(2, errno)`` the
  write, ``(3, errno)`` the close, ``(4, errno)`` the rename over ``name``
  failed (then ``temp`` is removed). No flush: callers that need one use
  :func:`~..plumbing.atomic.write_file_atomic`.
- ``refresh(dir, name)``: ``(0, st_mode, st_size)`` after setting ``name``'s
  times to now and looking it up again, never following a link;
  ``(step, errno, 0)`` with step 1 (directory), 2 (utime) or 3 (lstat).

:data:`fetch` has no Python twin: it is C's ``fetch_chunk_file`` (built where
libzstd's and OpenSSL's headers were found) or None.
``fetch(dir, name, limit, size, id, algo, fd, offset, skip_zero)`` reads the
file as ``read`` does, zstd-decompresses it into exactly ``size`` bytes,
checks its digest (``algo`` 1 SHA-512/256, 2 SHA-256, 0 none) against ``id``
and ``pwrite``s it to ``fd`` at ``offset`` (not when ``skip_zero`` and it is
all zero), with the GIL released once: ``(0, bytes written, file size)``.
Any other outcome is ``(step, 0, ...)`` with step 1-5 as ``read``, 6 (not a
zstd frame of ``size`` bytes), 7 (digest differs, nothing written) or 8 (the
write failed); the caller then takes its Python path, which raises the right
error, so only a verified chunk is ever written here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import Any, Callable

from casync_format._accel import c_module

__all__ = ["BACKEND", "DIGEST_ALGOS", "OPEN_DIR", "fetch", "read", "refresh", "write"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: How a chunk's prefix directory (or a store's root) is opened: never through a link.
OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC


def read_py(directory: str, name: str, limit: int) -> tuple[int, Any]:
    """The reference of ``read``: see the module's notes."""
    try:
        dir_fd = os.open(directory, OPEN_DIR)
    except OSError as exc:
        return 1, exc.errno
    try:
        fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
    except OSError as exc:
        return 2, exc.errno
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return 3, st.st_mode
        if st.st_size > limit:
            return 4, st.st_size
        return _read_to_end(fd, st.st_size, limit)
    except OSError as exc:
        return 5, exc.errno
    finally:
        os.close(fd)


def _read_to_end(fd: int, expected: int, limit: int) -> tuple[int, Any]:
    """Read to the end, at most ``limit`` bytes (a file may grow after fstat).

    A regular file's read returns fewer bytes than asked only at its end, so
    asking one byte more than fstat said ends the loop in one call.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        want = min(max(expected + 1 - total, 65536), limit + 1 - total)
        part = os.read(fd, want)
        if part:
            parts.append(part)
            total += len(part)
            if total > limit:
                return 4, total
        if len(part) < want:
            return 0, parts[0] if len(parts) == 1 else b"".join(parts)


def write_py(directory: str, temp: str, name: str, data: bytes, mode: int) -> tuple[int, int]:
    """The reference of ``write``: see the module's notes."""
    try:
        dir_fd = os.open(directory, OPEN_DIR)
    except OSError as exc:
        return 1, exc.errno or 0
    try:
        try:
            fd = os.open(temp, _CREATE, mode, dir_fd=dir_fd)
        except OSError as exc:
            return 1, exc.errno or 0
        step = 2
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            step = 3
        except OSError as exc:
            return _undo(dir_fd, temp, fd, step, exc)
        try:
            os.close(fd)
            step = 4
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            return _undo(dir_fd, temp, None, step, exc)
        return 0, 0
    finally:
        os.close(dir_fd)


def _undo(dir_fd: int, temp: str, fd: int | None, step: int, exc: OSError) -> tuple[int, int]:
    """Close and remove a temp file whose write failed at ``step``."""
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(temp, dir_fd=dir_fd)
    return step, exc.errno or errno.EIO


def refresh_py(directory: str, name: str) -> tuple[int, int, int]:
    """The reference of ``refresh``: see the module's notes."""
    try:
        dir_fd = os.open(directory, OPEN_DIR)
    except OSError as exc:
        return 1, exc.errno or 0, 0
    step = 2
    try:
        os.utime(name, dir_fd=dir_fd, follow_symlinks=False)
        step = 3
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return 0, st.st_mode, st.st_size
    except OSError as exc:
        return step, exc.errno or 0, 0
    finally:
        os.close(dir_fd)


_C = c_module("chunk-file")
BACKEND = "c" if _C is not None else "python"
read: Callable[[str, str, int], tuple[int, Any]] = read_py
write: Callable[[str, str, str, bytes, int], tuple[int, int]] = write_py
refresh: Callable[[str, str], tuple[int, int, int]] = refresh_py
if _C is not None:
    read, write, refresh = _C.read_chunk_file, _C.write_chunk_file, _C.refresh_chunk_file
_FETCH = c_module("chunk-fetch")
fetch: Callable[[str, str, int, int, bytes, int, int, int, bool], tuple[int, int, int]] | None = (
    _FETCH.fetch_chunk_file if _FETCH is not None else None
)
#: ``fetch``'s ``algo`` for each digest name (casync_format.digest)
DIGEST_ALGOS = {"sha512-256": 1, "sha256": 2}
