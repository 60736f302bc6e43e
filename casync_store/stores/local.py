"""The local directory store: casync's layout ``<dir>/xxxx/<id>.cacnk``.

An ``uncompressed`` store (desync's store option) keeps each chunk's data as
it is, at ``<dir>/xxxx/<id>`` (:func:`~.layout.chunk_suffix`); it keeps the
Store contract all the same (``get_raw`` returns encoded bytes, ``put_raw``
takes them), so ``cache`` and ``chop`` convert between the two kinds. An
encrypted store (a ``cipher``) seals each file as desync does, named
``<id>.cacnk<cipher.suffix>``; files under other suffixes are not its chunks.

Chunks are filed under the first four hex digits of their id. Writes go to a
temporary file in the chunk's directory and are renamed, so a chunk is
visible under its final name only when it is complete, and any number of
processes may write the same store at once. Durability: outside
:meth:`LocalStore.writing` each chunk is fsynced before its rename; inside it
(make, chop, tar -i, cache) the chunks are written without a flush each and
made durable together by one ``syncfs`` of the store's filesystem
(:meth:`LocalStore.flush`), which make and tar -i call before their index is
written and every writer at the end of its block. A crash in between can
leave chunk files that lost their data (empty, as ext4, XFS and btrfs leave a
renamed file whose data never reached the disk): such a file does not count
as present (:meth:`LocalStore.holds_chunk`), so the next writer stores the
chunk again, and no index names it before it was flushed. Reads of a store used as
a cache refresh the chunk's mtime (:meth:`LocalStore.touch`), so age-based
cache cleaning keeps what is in use.

Whatever sits under a chunk name is read only if it is a regular file inside
the store, no bigger than a chunk can be: a symbolic link (also a symlinked
``xxxx`` directory), FIFO, device, socket, directory or oversize file there is
an invalid chunk (:class:`ChunkInvalid`), is refused before it is read, does
not count as present, and :meth:`LocalStore.remove_chunk` removes the entry
itself (never what a link points to).

Pruning beside writers: a writer (``make``, ``chop``, ``tar -i``, ``cache``)
runs inside :meth:`LocalStore.writing`, which registers it as
``.pycasync-writers/w-PID-RANDOM`` (a file it holds an flock on for the
whole run, holding its start time; registering takes the store lock, an
flock on the directory ``.pycasync-writers`` itself, shared for a moment; a
store that does not exist yet is registered in when the first chunk creates
it), and refreshes the mtime of every chunk it finds present
(:meth:`LocalStore.refresh_chunk`, never following a link). :meth:`LocalStore.prune`
takes that lock exclusively for a moment to read the live registrations
(removing those no process holds any more: a writer killed with -9), and then
never removes a chunk whose mtime is at or after the earliest registration
of a live writer (less :data:`PRUNE_SLACK`) or its own start (the next tick
of the file system's clock after it began): every chunk a writer that runs
then, or starts later, writes or finds present is kept, while chunks written
before the prune began (and before any live writer) can go. A chunk is removed by renaming it aside,
checking its mtime again and only then unlinking it, so a refresh that comes
between the look and the removal puts it back; a refresh after the rename
finds no chunk and the writer stores it again. Neither side waits for the
other longer than a registration takes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from typing import Callable

from casync_format import chunk as chunk_codec
from casync_format.chunk import max_encoded_size
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.encrypt import ChunkCipher
from casync_format.errors import CasyncError, ChunkInvalid, ChunkMissing, StoreError

from ..plumbing.atomic import TEMP_PREFIX, temp_name, write_file_atomic
from ..plumbing.fileio import sync_filesystem
from ..plumbing.pool import default_workers
from ..plumbing.writeback import Writeback
from . import _chunkfile as chunkfile
from ._writers import LOCK_NAME, PRUNE_SLACK, WRITERS_DIR, prune_cutoff, register_writer, release_writer
from .base import PruneStore, Store
from .layout import CHUNK_SUFFIX, chunk_dir, chunk_file, chunk_suffix, is_chunk_dir, parse_chunk_file

_log = logging.getLogger(__name__)

__all__ = ["LocalStore", "CHUNK_SUFFIX", "LOCK_NAME", "WRITERS_DIR", "PRUNE_SLACK"]

STALE_TEMP_AGE = 3600.0  # seconds after which an unfinished chunk write is abandoned
EARLY_FLUSH = 64 << 20  # bytes of deferred chunks between background flushes
_PRUNE_ASIDE = TEMP_PREFIX + "prune-"  # a chunk prune is about to remove (stale: removed like a temp)
MAX_CHUNK_FILE = max_encoded_size(CA_CHUNK_SIZE_LIMIT_MAX)  # no chunk file can be bigger
# What a name in the store turned out to be, for messages (chunkfile never follows a link out of
# the store and never blocks on a FIFO: it opens O_NOFOLLOW|O_NONBLOCK and refuses after fstat).
_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"),
          (stat.S_ISREG, "a file")]


# The methods a chunk read goes through: fetch_into's C call stands in for them only where none
# is overridden.
_READ_PATH = ("fetch", "fetch_stored", "get_chunk", "get_raw", "decode", "_read_chunk")


def _os_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class LocalStore(PruneStore):
    """A chunk store in a local directory (created on first write)."""

    tells_sizes = True  # a stat per chunk

    def __init__(
        self, path: str | os.PathLike[str], verify: bool = True, sync: bool = True, compression: str = "zstd",
        uncompressed: bool = False, cipher: ChunkCipher | None = None,
    ) -> None:
        self.path = path = os.fspath(path)
        self.verify = verify
        self.sync = sync
        self.compression = compression
        #: chunks kept as plain data at ``xxxx/<id>`` (desync's ``uncompressed`` store option)
        self.uncompressed = uncompressed
        self.cipher = cipher  #: desync's encryption: each file sealed, named ``...<cipher.suffix>``
        self._suffix = chunk_suffix(uncompressed) + (cipher.suffix if cipher else "")
        self._max_file = CA_CHUNK_SIZE_LIMIT_MAX if uncompressed else MAX_CHUNK_FILE
        self._max_file += cipher.overhead if cipher else 0
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"store {path} is not a directory")
        self._writers_lock = threading.Lock()  # writing(): one registration per store object
        self._writers = 0
        self._registration: tuple[str, int] | None = None
        self._register_later = False
        self._unflushed = False  # chunks written inside writing() since the last flush
        self._early = Writeback(lambda: sync_filesystem(self.path), EARLY_FLUSH)

    def __str__(self) -> str:
        return self.path

    def chunk_path(self, chunk_id: bytes) -> str:
        """Where the chunk's file lives."""
        return os.path.join(self.path, chunk_dir(chunk_id), self._file(chunk_id))

    def _file(self, chunk_id: bytes) -> str:
        return chunk_file(chunk_id, self._suffix)

    def get_raw(self, chunk_id: bytes) -> bytes:
        """The chunk's stored bytes; an uncompressed store's data is encoded here."""
        blob = self._read_chunk(chunk_id, self._max_file)
        return chunk_codec.encode(blob, self.compression) if self.uncompressed else blob

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """The chunk's verified data; an uncompressed store's file is the data itself."""
        if not self.uncompressed:
            return super().get_chunk(chunk_id, digest, size, max_size)
        limit = (size if size is not None else max_size) + (self.cipher.overhead if self.cipher else 0)
        return self.check_plain(chunk_id, self._read_chunk(chunk_id, limit), digest, size)

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """:meth:`get_chunk`, this store named as the source, with the bytes its file held."""
        if not self.uncompressed:
            return self.fetch_stored(chunk_id, digest, size, max_size)
        data = self.get_chunk(chunk_id, digest, size, max_size)
        return data, self, len(data)

    def fetch_into(
        self, chunk_id: bytes, digest: Digest, size: int, fd: int, offset: int, skip_zero: bool
    ) -> tuple[int, Store, int] | None:
        """:meth:`~.base.Store.fetch_into` in one C call for a zstd store's file (see :mod:`._chunkfile`)."""
        fetch = chunkfile.fetch
        if fetch is None or self.uncompressed or self.cipher is not None or self.compression != "zstd":
            return None
        if not self._own_read_path():
            return None
        algo = chunkfile.DIGEST_ALGOS.get(digest.name) if self.verify else 0
        if algo is None:
            return None
        directory = os.path.join(self.path, chunk_dir(chunk_id))
        name = self._file(chunk_id)
        limit = self._max_file
        step, written, stored = fetch(directory, name, limit, size, chunk_id, algo, fd, offset, skip_zero)
        return (written, self, stored) if step == 0 else None

    def _own_read_path(self) -> bool:
        """Whether this object reads chunks as LocalStore does (a subclass may read, or count, otherwise)."""
        cls = type(self)
        return all(getattr(cls, name) is getattr(LocalStore, name) for name in _READ_PATH)

    def _read_chunk(self, chunk_id: bytes, limit: int) -> bytes:
        """The bytes of the chunk's file, if it is a regular file of at most ``limit`` bytes."""
        directory = chunk_dir(chunk_id)
        step, value = chunkfile.read(os.path.join(self.path, directory), self._file(chunk_id), limit)
        if step == 0:
            return value if self.cipher is None else self.cipher.decrypt(value, chunk_id, self)
        if step == 1:
            raise self._open_error(chunk_id, _os_error(value), f"its directory {directory}")
        if step == 2:
            raise self._open_error(chunk_id, _os_error(value), "it")
        if step == 3:
            raise ChunkInvalid(chunk_id, None, f"it is {_kind(value)}, not a chunk file", self)
        if step == 4:
            raise self._too_big(chunk_id, value, limit)
        raise StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: {os.strerror(value)}")

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
        return self._plausible(st.st_mode, st.st_size)

    def _plausible(self, mode: int, size: int) -> bool:
        """A regular file of a size a chunk file can have (never empty: chunks are not)."""
        return stat.S_ISREG(mode) and 0 < size <= self._max_file

    def holds_chunk(self, chunk_id: bytes) -> bool:
        """:meth:`has_chunk` and :meth:`refresh_chunk` in one look (four system calls)."""
        return self._refresh(chunk_id, self._plausible)

    def check(self) -> None:
        if not os.path.isdir(self.path):
            raise StoreError(f"store {self} does not exist")

    def refresh_chunk(self, chunk_id: bytes) -> bool:
        """Set the chunk's mtime to now; False if no chunk file is there (any more).

        Neither a symlinked prefix directory nor a link under the chunk name
        is followed (a link's own time is set). A store the process may not
        change (read-only, another owner) still counts as holding the chunk.

        The name is looked up again after the time is set: a prune that
        renamed the chunk aside between the lookup of ``utime`` and its
        update may not have seen the new time, and then removes the file; the
        name being there afterwards means the prune's recheck came later (and
        keeps it) or the chunk was put back or stored anew.
        """
        return self._refresh(chunk_id, lambda mode, _size: stat.S_ISREG(mode))

    def _refresh(self, chunk_id: bytes, accept: Callable[[int, int], bool]) -> bool:
        """Set the chunk's mtime, look its name up again and ``accept(mode, size)`` what is there."""
        directory = os.path.join(self.path, chunk_dir(chunk_id))
        step, value, size = chunkfile.refresh(directory, self._file(chunk_id))
        if step == 0:
            return accept(value, size)
        if value == errno.ENOENT:
            return False
        # A link where the prefix directory should be is not the store's; any other
        # failure (read-only store, another owner) still counts as holding the chunk.
        return step != 1 or value not in (errno.ELOOP, errno.ENOTDIR)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Run a block as a registered writer of this store: a prune meanwhile keeps its chunks.

        See the module's notes. Registration is best effort: a store whose
        root cannot be written (read-only, no flock) goes unregistered.
        Raises :class:`StoreError` if a prune holds the store lock longer
        than :data:`LOCK_WAIT`.
        """
        with self._writers_lock:
            self._writers += 1
            if self._writers == 1:
                if os.path.isdir(self.path):
                    self._registration = register_writer(self.path, str(self))
                else:  # created by the first chunk written (put_raw), registered then
                    self._register_later = True
        try:
            yield
            self.flush()
        finally:
            with self._writers_lock:
                self._writers -= 1
                if self._writers == 0:
                    self._register_later = False
                    registration, self._registration = self._registration, None
                    if registration is not None:
                        release_writer(registration)

    def _register_now(self) -> None:
        """Register a writer whose store did not exist when it began (the first chunk creates it)."""
        with self._writers_lock:
            if self._register_later:
                self._register_later = False
                os.makedirs(self.path, exist_ok=True)
                self._registration = register_writer(self.path, str(self))

    def prune_cutoff(self) -> int:
        """The mtime (ns) from which on an unreferenced chunk is kept (:func:`~._writers.prune_cutoff`)."""
        if not os.path.isdir(self.path):
            raise StoreError(f"store {self} does not exist")
        return prune_cutoff(self.path, str(self))

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        """Store encoded bytes (decoded to the data first for an uncompressed store)."""
        if self.uncompressed:
            blob = chunk_codec.decode(blob, chunk_id, None, store=self)
        self._write(chunk_id, blob)

    def store_chunk(self, chunk_id: bytes, data: bytes | memoryview, blob: bytes | None = None) -> None:
        """Store a chunk: its data as it is in an uncompressed store, else encoded (or ``blob``)."""
        if self.uncompressed:
            self._write(chunk_id, bytes(data))
        else:
            super().store_chunk(chunk_id, data, blob)

    def _write(self, chunk_id: bytes, blob: bytes) -> None:
        if self._register_later:
            self._register_now()
        path = self.chunk_path(chunk_id)
        # Inside writing() the block's flush makes the chunks durable together.
        deferred = self.sync and self._writers > 0
        sync = self.sync and not deferred
        if self.cipher is not None:
            blob = self.cipher.encrypt(blob)
        try:
            if sync:  # No directory fsync: a lost rename loses the chunk, never shows garbage.
                self._retry_in_new_dir(path, lambda: write_file_atomic(path, blob, sync=True, sync_dir=False))
            else:
                self._retry_in_new_dir(path, lambda: self._write_unsynced(path, blob))
        except OSError as exc:
            raise StoreError(f"store {self}: cannot write chunk {chunk_id.hex()}: {exc.strerror}") from None
        if deferred:
            self._unflushed = True
            self._early.add(len(blob))

    @staticmethod
    def _retry_in_new_dir(path: str, write: Callable[[], None]) -> None:
        """``write()``, and again after creating the prefix directory if that is missing."""
        try:
            write()
        except FileNotFoundError:  # the first chunk of its prefix directory
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write()

    @staticmethod
    def _write_unsynced(path: str, blob: bytes) -> None:
        """Write ``blob`` to a temp file beside ``path`` and rename it over ``path``, in one call."""
        directory, name = os.path.split(path)
        while True:
            step, code = chunkfile.write(directory, temp_name(), name, blob, 0o644)
            if step == 0:
                return
            if step != 1 or code != errno.EEXIST:  # EEXIST: a dead process's temp with our pid
                raise OSError(code, os.strerror(code), path)

    def write_workers(self, concurrency: int | None = None) -> int:
        """One thread more than the CPUs: inside :meth:`writing` (or unsynced) no write waits for the disk."""
        return default_workers(concurrency) + 1

    def flush(self) -> None:
        """Make the chunks written inside :meth:`writing` durable: one ``syncfs`` of the store.

        Raises :class:`StoreError` naming the store if the flush fails.
        """
        error = self._early.wait()
        if not self._unflushed:
            return
        self._unflushed = False
        try:
            if error is not None:
                raise error
            sync_filesystem(self.path)
        except OSError as exc:
            self._unflushed = True
            raise StoreError(f"store {self}: cannot flush chunks to disk: {exc.strerror}") from None

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
                chunk_id = parse_chunk_file(name, prefix, self._suffix)
                if chunk_id is not None:
                    yield chunk_id

    def prune(
        self, keep: set[bytes] | frozenset[bytes], *, removed: Callable[[bytes, int], None] | None = None
    ) -> int:
        """Remove unreferenced chunks, and temp files that crashed writers left behind.

        A chunk a live writer wrote or found present is kept (see the
        module's notes); anything under a chunk name that is not a regular
        file goes whatever its time. ``removed(id, file size)`` is called
        for each chunk removed (-1: not a regular file).
        """
        cutoff = self.prune_cutoff()
        _log.info("store %s: prune keeps every chunk with an mtime at or after %d ns", self, cutoff)
        count = 0
        for cid in self.iter_chunk_ids():
            if cid not in keep:
                size = self._remove_unused(cid, cutoff)
                if size is not None:
                    count += 1
                    if removed is not None:
                        removed(cid, size)
        self.remove_stale_temps()
        return count

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        """The chunk file's size (what :meth:`has_chunk` accepts), None when there is none."""
        path = self.chunk_path(chunk_id)
        try:
            if stat.S_ISLNK(os.lstat(os.path.dirname(path)).st_mode):
                return None
            st = os.lstat(path)
        except OSError:
            return None
        return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CHUNK_FILE else None

    def _remove_unused(self, chunk_id: bytes, cutoff: int) -> int | None:
        """Remove an unreferenced chunk unless its mtime is at or after ``cutoff``.

        Returns the size of the file removed (-1 for what was no regular
        file), None when nothing was removed."""
        name = chunk_id.hex()
        file_name = self._file(chunk_id)
        try:
            dir_fd = os.open(os.path.join(self.path, chunk_dir(chunk_id)), chunkfile.OPEN_DIR)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # a symlinked prefix: no part of the store
                self.remove_chunk(chunk_id)
                return -1
            raise StoreError(f"store {self}: cannot remove chunk {name}: {exc.strerror}") from None
        aside = f"{_PRUNE_ASIDE}{os.getpid()}-{file_name}"
        try:
            st = os.stat(file_name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):  # a link, FIFO, directory ...: never a chunk
                self.remove_chunk(chunk_id)
                return -1
            if st.st_mtime_ns >= cutoff:
                return None  # written or found present by a live writer
            os.rename(file_name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            if os.stat(aside, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns >= cutoff:
                # Refreshed between the look and the rename: put it back (unless stored anew).
                with contextlib.suppress(FileExistsError):
                    os.link(aside, file_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
                os.unlink(aside, dir_fd=dir_fd)
                return None
            os.unlink(aside, dir_fd=dir_fd)
            return st.st_size
        except FileNotFoundError:
            return None  # removed meanwhile
        except OSError as exc:
            raise StoreError(f"store {self}: cannot remove chunk {name}: {exc.strerror}") from None
        finally:
            os.close(dir_fd)

    def remove_stale_temps(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Delete our temp files older than ``max_age`` seconds; returns how many.

        A writer killed mid-chunk (power cut, SIGKILL) leaves
        ``.pycasync-tmp-*`` files that no chunk listing shows (and a prune
        killed between renaming a chunk aside and removing it, the chunk);
        anything that old is no write still in progress.
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
