"""The local directory store: casync's layout ``<dir>/xxxx/<id>.cacnk``.

Chunks are filed under the first four hex digits of their id. Writes go to a
temporary file in the chunk's directory, are fsynced and then renamed, so a
chunk is visible under its final name only when it is complete, and any
number of processes may write the same store at once. Reads of a store used as
a cache refresh the chunk's mtime (:meth:`LocalStore.touch`), so age-based
cache cleaning keeps what is in use.

Whatever sits under a chunk name is read only if it is a regular file inside
the store, no bigger than a chunk can be: a symbolic link (also a symlinked
``xxxx`` directory), FIFO, device, socket, directory or oversize file there is
an invalid chunk (:class:`ChunkInvalid`), is refused before it is read, does
not count as present, and :meth:`LocalStore.remove_chunk` removes the entry
itself (never what a link points to).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
from collections.abc import Iterator

from casync_format.chunk import max_encoded_size
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.errors import CasyncError, ChunkInvalid, ChunkMissing, StoreError

from ..plumbing.atomic import TEMP_PREFIX, write_file_atomic
from .base import PruneStore
from .layout import CHUNK_SUFFIX, chunk_dir, chunk_file, is_chunk_dir, parse_chunk_file

__all__ = ["LocalStore", "CHUNK_SUFFIX"]

STALE_TEMP_AGE = 3600.0  # seconds after which an unfinished chunk write is abandoned
MAX_CHUNK_FILE = max_encoded_size(CA_CHUNK_SIZE_LIMIT_MAX)  # no chunk file can be bigger
# Never follow a link out of the store, never block on a FIFO (it is refused after fstat).
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISREG, "a file")]


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class LocalStore(PruneStore):
    """A chunk store in a local directory (created on first write)."""

    def __init__(self, path: str, verify: bool = True, sync: bool = True, compression: str = "zstd") -> None:
        self.path = path
        self.verify = verify
        self.sync = sync
        self.compression = compression
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"store {path} is not a directory")

    def __str__(self) -> str:
        return self.path

    def chunk_path(self, chunk_id: bytes) -> str:
        """Where the chunk's file lives."""
        return os.path.join(self.path, chunk_dir(chunk_id), chunk_file(chunk_id))

    def get_raw(self, chunk_id: bytes) -> bytes:
        return self._read_chunk(chunk_id, MAX_CHUNK_FILE)

    def _read_chunk(self, chunk_id: bytes, limit: int) -> bytes:
        """The bytes of the chunk's file, if it is a regular file of at most ``limit`` bytes."""
        directory = chunk_dir(chunk_id)
        try:
            dir_fd = os.open(os.path.join(self.path, directory), _OPEN_DIR)
        except OSError as exc:
            raise self._open_error(chunk_id, exc, f"its directory {directory}") from None
        try:
            fd = os.open(chunk_file(chunk_id), _OPEN_FILE, dir_fd=dir_fd)
        except OSError as exc:
            raise self._open_error(chunk_id, exc, "it") from None
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ChunkInvalid(chunk_id, None, f"it is {_kind(st.st_mode)}, not a chunk file", self)
            if st.st_size > limit:
                raise self._too_big(chunk_id, st.st_size, limit)
            return self._read_fd(chunk_id, fd, st.st_size, limit)
        except OSError as exc:
            raise StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: {exc.strerror}") from None
        finally:
            os.close(fd)

    def _read_fd(self, chunk_id: bytes, fd: int, expected: int, limit: int) -> bytes:
        """Read to the end, at most ``limit`` bytes (a file may grow after fstat)."""
        parts: list[bytes] = []
        total = 0
        while True:
            part = os.read(fd, min(max(expected + 1 - total, 65536), limit + 1 - total))
            if not part:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            parts.append(part)
            total += len(part)
            if total > limit:
                raise self._too_big(chunk_id, total, limit)

    def _too_big(self, chunk_id: bytes, size: int, limit: int) -> ChunkInvalid:
        cause = f"it is a file of {size} bytes, more than a chunk can be ({limit})"
        return ChunkInvalid(chunk_id, None, cause, self)

    def _open_error(self, chunk_id: bytes, exc: OSError, what: str) -> CasyncError:
        if exc.errno == errno.ENOENT:
            # A miss in a directory that is not there is most likely a typo: say so.
            detail = "" if os.path.isdir(self.path) else "no such directory"
            return ChunkMissing(chunk_id, self, detail)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):  # O_NOFOLLOW met a link, ...
            path = self.chunk_path(chunk_id)
            try:
                kind = _kind(os.lstat(path if what == "it" else os.path.dirname(path)).st_mode)
            except OSError:
                kind = "not a regular file"
            return ChunkInvalid(chunk_id, None, f"{what} is {kind}, not part of the store", self)
        return StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: {exc.strerror}")

    def has_chunk(self, chunk_id: bytes) -> bool:
        """Whether a regular file of a chunk's size sits under the name (inside the store)."""
        path = self.chunk_path(chunk_id)
        try:
            if stat.S_ISLNK(os.lstat(os.path.dirname(path)).st_mode):
                return False
            st = os.lstat(path)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CHUNK_FILE

    def check(self) -> None:
        if not os.path.isdir(self.path):
            raise StoreError(f"store {self} does not exist")

    def touch(self, chunk_id: bytes) -> None:
        """Set the chunk's mtime to now (a cache hit keeps it fresh)."""
        with contextlib.suppress(OSError):  # a read-only cache still serves reads
            os.utime(self.chunk_path(chunk_id))

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        path = self.chunk_path(chunk_id)
        try:
            try:
                # No directory fsync: a lost rename loses the chunk, never shows garbage.
                write_file_atomic(path, blob, sync=self.sync, sync_dir=False)
            except FileNotFoundError:  # the first chunk of its prefix directory
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_file_atomic(path, blob, sync=self.sync, sync_dir=False)
        except OSError as exc:
            raise StoreError(f"store {self}: cannot write chunk {chunk_id.hex()}: {exc.strerror}") from None

    def iter_chunk_ids(self) -> Iterator[bytes]:
        try:
            top = sorted(e.name for e in os.scandir(self.path) if is_chunk_dir(e.name) and e.is_dir())
        except FileNotFoundError:
            raise StoreError(f"store {self} does not exist") from None
        except OSError as exc:
            raise StoreError(f"store {self}: cannot list: {exc.strerror}") from None
        for prefix in top:
            # One sub-directory at a time: at most ~1/65536 of the store in memory.
            try:
                names = sorted(e.name for e in os.scandir(os.path.join(self.path, prefix)))
            except FileNotFoundError:  # removed since the top level was listed
                continue
            except OSError as exc:
                raise StoreError(f"store {self}: cannot list {prefix}: {exc.strerror}") from None
            for name in names:
                chunk_id = parse_chunk_file(name, prefix)
                if chunk_id is not None:
                    yield chunk_id

    def prune(self, keep: set[bytes] | frozenset[bytes]) -> int:
        """Remove unreferenced chunks, and temp files that crashed writers left behind."""
        count = super().prune(keep)
        self.remove_stale_temps()
        return count

    def remove_stale_temps(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Delete our temp files older than ``max_age`` seconds; returns how many.

        A writer killed mid-chunk (power cut, SIGKILL, an input file that
        shrank under its mmap) leaves ``.pycasync-tmp-*`` files that no chunk
        listing shows; anything that old is no write still in progress.
        """
        removed = 0
        cutoff = time.time() - max_age
        for directory in self._prefix_dirs():
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory):
                    if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed += 1
        return removed

    def _prefix_dirs(self) -> list[str]:
        try:
            names = [e.name for e in os.scandir(self.path) if is_chunk_dir(e.name) and e.is_dir()]
        except OSError:
            return []
        return [os.path.join(self.path, name) for name in sorted(names)]

    def remove_chunk(self, chunk_id: bytes) -> None:
        """Remove the entry under the chunk's name, whatever it is; never a link's target.

        A symlinked prefix directory is no part of the store: the link itself
        goes (what it points to stays), taking every name under it along.
        """
        path = self.chunk_path(chunk_id)
        prefix = os.path.dirname(path)
        try:
            if stat.S_ISLNK(os.lstat(prefix).st_mode):
                os.unlink(prefix)
                return
            try:
                os.unlink(path)  # a file, symlink, FIFO or device node: the entry itself
            except IsADirectoryError:
                shutil.rmtree(path)  # does not follow the links inside it
            except PermissionError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):  # unlink(2) of a directory: EPERM
                    raise
                shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"store {self}: cannot remove chunk {chunk_id.hex()}: {exc.strerror}") from None
