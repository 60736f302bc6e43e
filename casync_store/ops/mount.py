"""FUSE mount of a blob index (``mount-index``): the blob as one read-only file, read on demand.

:class:`IndexFS` is the filesystem: a root directory (0555) holding one
regular file (0444) whose size is the blob's and whose bytes come from the
index's chunks, fetched from a store only when read. Decoded chunks go
through a :class:`ChunkCache` (LRU bounded in bytes, one fetch per chunk id at
a time however many readers want it) and are verified by the store's
``get_chunk``; the index's all-zero chunk is never fetched. Sequential reading
prefetches the next chunks in the background. A read that meets a missing or
damaged chunk, or a store error, fails with EIO and logs one line naming the
chunk and the store; the mount stays up. With a copy-on-read file
(:class:`~.sparse.CorFile`, ``--cor-file``) every chunk read is also written
there and later reads of it come from the file, across remounts when its
state is saved. :func:`mount_index` runs it through fusepy (imported only
there; the ``fuse`` extra) until the file system is unmounted (``fusermount
-u``, SIGINT, SIGTERM); SIGHUP saves the copy-on-read state and calls the
caller's ``hangup`` (a store reload) when either is used, else it unmounts.
IndexFS itself needs no fusepy, so its logic is testable without a mount.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import stat
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from casync_format.errors import CasyncError, MissingDependency, ParameterError, StoreError
from casync_format.index import Index, IndexChunk

from ..pipeline import ZeroChunk, fetch_chunk
from ..plumbing.singleflight import SingleFlight
from ..stores.base import Store
from ..stores.location import Location
from .sparse import CorFile, CorOptions

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_READAHEAD", "ChunkCache", "IndexFS", "mount_index", "mount_name"]

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
"""Decoded chunk data a mount keeps in memory by default."""
DEFAULT_READAHEAD = 8
"""Chunks fetched ahead of a sequential reader by default (0: none)."""
_SEQUENTIAL_SLACK = 1024 * 1024  # kernel readahead may reorder requests by this much
_FALLBACK_NAME = "blob"
_WRITE_OPS = (
    "chmod", "chown", "create", "link", "mkdir", "mknod", "removexattr", "rename", "rmdir",
    "setxattr", "symlink", "truncate", "unlink", "utimens", "write",
)  # fmt: skip


def mount_name(index_location: str) -> str:
    """The file name a mount shows for an index: its base name without the extension.

    ``/x/disk.img.caibx`` -> ``disk.img``; for URLs the last path segment,
    percent-decoded, without the query. When that leaves no usable file name
    (``-`` for stdin, ``.caibx``, a URL ending in ``/``), the name is ``blob``.
    """
    loc = Location.parse(index_location)
    if loc.is_url:
        path = loc.path
        base = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    else:
        base = os.path.basename(index_location.rstrip("/"))
    stem, ext = os.path.splitext(base)
    if not ext and stem.startswith("."):  # Go's filepath.Ext(".caibx") is the whole name
        stem = ""
    if index_location == "-" or stem in ("", ".", "..", "-") or "/" in stem or "\0" in stem:
        return _FALLBACK_NAME
    return stem


class ChunkCache:
    """Decoded chunks by id: least recently used first out, at most ``max_bytes`` held.

    :meth:`get` fetches a chunk that is not held, once: callers asking for a
    chunk already being fetched wait for that fetch and share its data or its
    error. A chunk larger than ``max_bytes`` is returned but not kept.
    Thread-safe.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ParameterError(f"cache size {max_bytes} is negative")
        self.max_bytes = max_bytes
        self.held = 0
        self.fetches = 0
        self.hits = 0
        self._lock = threading.Lock()
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._flight: SingleFlight[bytes] = SingleFlight()

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            if key in self._data:
                return True
        return self._flight.in_flight(key)

    def __len__(self) -> int:
        return len(self._data)

    def _held(self, key: bytes) -> bytes | None:
        """The kept data of ``key`` (now the most recently used), or None; call with the lock held."""
        data = self._data.get(key)
        if data is not None:
            self._data.move_to_end(key)
            self.hits += 1
        return data

    def get(self, key: bytes, fetch: Callable[[], bytes]) -> bytes:
        """The chunk ``key``, from memory or from ``fetch()`` (called by one thread only)."""
        with self._lock:
            data = self._held(key)
        if data is not None:
            return data

        def load() -> bytes:
            with self._lock:  # kept by a fetch that ended after the check above?
                data = self._held(key)
                if data is None:
                    self.fetches += 1
            if data is None:
                data = fetch()
                with self._lock:
                    self._keep(key, data)
            return data

        return self._flight.run(key, load)

    def _keep(self, key: bytes, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        self._data[key] = data
        self.held += len(data)
        while self.held > self.max_bytes:
            _, old = self._data.popitem(last=False)
            self.held -= len(old)


class IndexFS:
    """The operations of the mount: ``/`` holding the file ``name``, the blob of ``index``.

    An object with fusepy's ``Operations`` interface (called as
    ``fs(op, *args)``), usable without fusepy. ``mtime`` (seconds) stamps the
    file (default: now). ``ready(path)`` is called with the file's path under
    ``mountpoint`` once the kernel has mounted the file system. ``cor`` adds a
    copy-on-read file (:class:`~.sparse.CorFile`), opened here. The index is
    only read under a lock, so any seekable index file works; the store must be
    thread-safe, as every store is.
    """

    use_ns = True  # fusepy >= 3: times are integer nanoseconds

    def __init__(
        self,
        index: Index,
        store: Store,
        name: str,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        readahead: int = DEFAULT_READAHEAD,
        mtime: float | None = None,
        mountpoint: str = "",
        ready: Callable[[str], None] | None = None,
        cor: CorOptions | None = None,
    ) -> None:
        if not name or name in (".", "..") or "/" in name or "\0" in name:
            raise ParameterError(f"{name!r} cannot be the name of the mounted file")
        if readahead < 0:
            raise ParameterError(f"readahead {readahead} is negative")
        self.index, self.store, self.name = index, store, name
        self.path = "/" + name
        self.size = index.blob_size
        self.cache = ChunkCache(cache_bytes)
        avg = max(1, index.header.chunk_size_avg)
        self.readahead = min(readahead, cache_bytes // (2 * avg))  # prefetched data must not evict itself
        self._mtime_ns = int((time.time() if mtime is None else mtime) * 1e9)
        self._mountpoint, self._ready = mountpoint, ready
        self._zero = ZeroChunk(index)
        self._zeros = b""
        self._index_lock = threading.Lock()
        self._hint: tuple[int, IndexChunk] | None = None
        self._state_lock = threading.Lock()
        self._last_end = -1
        self._ahead = 0  # items below this number were already considered for prefetching
        self._queued: set[bytes] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False
        self.cor = CorFile(cor, index, self._chunk, self._item) if cor is not None else None

    def __call__(self, op: str, *args: Any) -> Any:
        method = getattr(self, op, None)
        if method is None:
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        return method(*args)

    # ------------------------------------------------------------ metadata

    def _times(self) -> dict[str, Any]:
        value: float = self._mtime_ns if self.use_ns else self._mtime_ns / 1e9
        return {"st_atime": value, "st_mtime": value, "st_ctime": value}

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        """stat(2) of the root directory or the file."""
        ids = {"st_uid": os.getuid(), "st_gid": os.getgid()}
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2, "st_size": 0, **ids, **self._times()}
        if path == self.path:
            blocks = (self.size + 511) // 512
            return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size,
                    "st_blocks": blocks, **ids, **self._times()}
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def readdir(self, path: str, fh: Any = None) -> list[str]:
        """The root's entries."""
        if path != "/":
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        return [".", "..", self.name]

    def open(self, path: str, flags: int) -> int:
        """Open the file for reading; anything else is EROFS."""
        self._check_file(path)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        """statvfs(3): the blob's size, nothing free."""
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": (self.size + 4095) // 4096, "f_bfree": 0,
                "f_bavail": 0, "f_files": 2, "f_ffree": 0, "f_namemax": 255}

    def init(self, path: str) -> None:
        """Called by libfuse once mounted: tell ``ready``."""
        if self._ready is not None:
            try:
                self._ready(os.path.join(self._mountpoint, self.name))
            except Exception:
                log.exception("the mount's ready callback failed")

    def _check_file(self, path: str) -> None:
        if path == "/":
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if path != self.path:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    # ------------------------------------------------------------ reading

    def read(self, path: str, size: int, offset: int, fh: Any = None) -> bytes:
        """Up to ``size`` bytes of the blob at ``offset``; EIO when a chunk cannot be had."""
        self._check_file(path)
        end = min(self.size, offset + size)
        if offset < 0 or offset >= end:
            return b""
        try:
            data, last = self._read_range(offset, end) if self.cor is None else self._read_cor(offset, end)
        except (CasyncError, OSError) as exc:
            log.error("%s: read of %d bytes at offset %d failed: %s", self.name, end - offset, offset, exc)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        except Exception:
            log.exception("%s: read of %d bytes at offset %d failed", self.name, end - offset, offset)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        self._after_read(offset, end, last)
        return data

    def _read_range(self, offset: int, end: int) -> tuple[bytes, int]:
        """The bytes [offset, end) and the number of the last item they touch."""
        i, item = self._locate(offset)
        pieces: list[memoryview] = []
        pos = offset
        while True:
            data = self._chunk(item)
            lo, hi = pos - item.start, min(end, item.start + item.size) - item.start
            if lo == 0 and hi == len(data) and not pieces and item.start + hi >= end:
                return data, i  # the read is exactly one chunk: no copy
            pieces.append(memoryview(data)[lo:hi])
            pos = item.start + hi
            if pos >= end:
                return (pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)), i
            i += 1
            item = self._item(i)

    def _read_cor(self, offset: int, end: int) -> tuple[bytes, int]:
        """Like :meth:`_read_range`, through the copy-on-read file: its items loaded, then read."""
        assert self.cor is not None
        i, item = self._locate(offset)
        while True:
            self.cor.load(i, item)
            if item.start + item.size >= end:
                return self.cor.read(offset, end - offset), i
            i += 1
            item = self._item(i)

    def _locate(self, offset: int) -> tuple[int, IndexChunk]:
        """The item holding ``offset``; the last answer and its successor are tried before a search."""
        with self._index_lock:
            if self._hint is not None:
                i, item = self._hint
                if item.start <= offset < item.start + item.size:
                    return i, item
                if offset >= item.start + item.size and i + 1 < self.index.count:
                    nxt = self.index[i + 1]
                    if offset < nxt.start + nxt.size:
                        self._hint = (i + 1, nxt)
                        return self._hint
            i = self.index.find(offset)
            self._hint = (i, self.index[i])
            return self._hint

    def _item(self, i: int) -> IndexChunk:
        with self._index_lock:
            return self.index[i]

    def _chunk(self, item: IndexChunk) -> bytes:
        if self._zero.matches(item):
            if not self._zeros:
                self._zeros = bytes(item.size)
            return self._zeros
        return self.cache.get(item.id, lambda: fetch_chunk(self.store, item, self.index.digest))

    # ------------------------------------------------------------ read-ahead

    def _after_read(self, offset: int, end: int, last: int) -> None:
        """Prefetch the chunks after ``last`` when the reads look sequential."""
        with self._state_lock:
            sequential = self._last_end >= 0 and abs(offset - self._last_end) <= _SEQUENTIAL_SLACK
            self._last_end = end
            if not sequential or not self.readahead or self._closed:
                self._ahead = 0
                return
            first = max(last + 1, self._ahead)  # items before were scheduled already
            stop = self._ahead = min(last + 1 + self.readahead, self.index.count)
        for i in range(first, stop):
            item = self._item(i)
            if item.id == self._zero.id or item.id in self.cache:
                continue
            with self._state_lock:
                if item.id in self._queued or self._closed:
                    continue
                self._queued.add(item.id)
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(min(self.readahead, 4), "mount-prefetch")
                self._pool.submit(self._prefetch, i, item)

    def _prefetch(self, i: int, item: IndexChunk) -> None:
        try:
            if self.cor is not None:
                self.cor.load(i, item)
            else:
                self._chunk(item)
        except Exception:  # a reader that needs the chunk fetches it again and reports the error
            pass
        finally:
            with self._state_lock:
                self._queued.discard(item.id)

    def save_state(self) -> None:
        """Write the copy-on-read state file, if there is one (on SIGHUP)."""
        if self.cor is not None:
            self.cor.save()

    def close(self) -> None:
        """Stop prefetching (waits for fetches in flight); save and close the copy-on-read file."""
        with self._state_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self.cor is not None:
            self.cor.close()


for _op in _WRITE_OPS:

    def _refuse(self: IndexFS, *args: Any, _op: str = _op) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    _refuse.__name__ = _refuse.__qualname__ = _op
    _refuse.__doc__ = f"{_op}: refused, the mount is read-only (EROFS)."
    setattr(IndexFS, _op, _refuse)
del _op


def _import_fuse() -> Any:
    """fusepy's module, or MissingDependency / StoreError (no libfuse) when unusable."""
    try:
        import fuse  # fusepy
    except ImportError:
        raise MissingDependency("fuse", "fusepy") from None
    except OSError as exc:  # fusepy loads libfuse when imported
        raise StoreError(f"cannot mount: libfuse is not usable ({exc}); install the 'fuse' package") from None
    return fuse


@contextlib.contextmanager
def _fuse_signals(hangup: bool) -> Iterator[None]:
    """Default SIGINT/SIGTERM (and SIGHUP unless ``hangup``) dispositions: libfuse's unmounting handlers.

    libfuse only replaces a signal's default action; a Python handler would
    never run while the main thread sits in libfuse. Restored afterwards
    (outside the main thread nothing can be changed, and nothing is).
    """
    saved: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM) + (() if hangup else (signal.SIGHUP,)):
        try:
            saved[sig] = signal.signal(sig, signal.SIG_DFL)
        except ValueError:
            break
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _hangups(on_hangup: Callable[[], None] | None) -> Iterator[None]:
    """Call ``on_hangup`` for each SIGHUP, from a thread of its own, while the block runs.

    The main thread sits in libfuse, where no Python handler runs, so SIGHUP
    is blocked in it (and in every thread started from it later: libfuse's,
    the prefetchers) and taken with sigwait(). Its disposition is a Python
    handler meanwhile, so that libfuse leaves it alone. Only from the main
    thread; elsewhere SIGHUP is not touched.
    """
    if on_hangup is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = threading.Event()
    previous = signal.signal(signal.SIGHUP, lambda *_: None)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

    def wait() -> None:
        while True:
            signal.sigwait({signal.SIGHUP})
            if stop.is_set():
                return
            try:
                on_hangup()
            except Exception:
                log.exception("handling SIGHUP failed")

    thread = threading.Thread(target=wait, name="mount-sighup", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.ident is not None:
            signal.pthread_kill(thread.ident, signal.SIGHUP)
        thread.join(10)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGHUP, previous if previous is not None else signal.SIG_DFL)


def mount_index(
    index: Index,
    store: Store,
    mountpoint: str | os.PathLike[str],
    name: str,
    *,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    readahead: int = DEFAULT_READAHEAD,
    mtime: float | None = None,
    ready: Callable[[str], None] | None = None,
    foreground: bool = True,
    cor: CorOptions | None = None,
    hangup: Callable[[], None] | None = None,
) -> None:
    """Mount the blob of ``index`` as ``mountpoint/name`` (read-only) and serve it until unmounted.

    Blocks until ``fusermount -u MOUNTPOINT``, SIGINT or SIGTERM (libfuse
    unmounts), then returns. ``cache_bytes`` bounds the decoded chunks held in
    memory, ``readahead`` the chunks prefetched for sequential readers,
    ``mtime`` stamps the file (pass the index file's; default now) and
    ``ready(file_path)`` is called once mounted. ``foreground=False`` lets
    libfuse daemonize (it forks in C: only safe while the process has no
    other threads). ``cor`` keeps the bytes read in a copy-on-read file
    (:class:`~.sparse.CorFile`; its state saved on SIGHUP and at the end);
    ``hangup`` is called on each SIGHUP (e.g. to reload the stores of a
    :class:`~..stores.swap.SwapStore`). With either, SIGHUP no longer
    unmounts. The caller keeps ownership of ``index`` and ``store``.
    Raises ParameterError for a mount point that is not a directory,
    MissingDependency without fusepy and StoreError without libfuse or when
    the mount fails.
    """
    mountpoint = os.fspath(mountpoint)
    if not os.path.isdir(mountpoint):
        raise ParameterError(f"mount point {mountpoint} is not a directory")
    fuse = _import_fuse()
    mountpoint = os.path.abspath(mountpoint)
    made: list[IndexFS] = []

    def on_hangup() -> None:
        for fs in made:
            fs.save_state()
        if hangup is not None:
            hangup()

    wants_hangup = cor is not None or hangup is not None
    with _hangups(on_hangup if wants_hangup else None):  # before any thread starts: they inherit the mask
        fs = IndexFS(index, store, name, cache_bytes=cache_bytes, readahead=readahead, mtime=mtime,
                     mountpoint=mountpoint, ready=ready, cor=cor)
        made.append(fs)
        fs.use_ns = "use_ns" in fuse.FUSE.__init__.__code__.co_names  # fusepy 2 takes float seconds
        try:
            with _fuse_signals(hangup=wants_hangup):
                fuse.FUSE(fs, mountpoint, foreground=foreground, nothreads=False, ro=True, fsname="pycasync",
                          subtype="pycasync", kernel_cache=True, default_permissions=True)
        except RuntimeError as exc:  # fuse_main failed; libfuse printed why on stderr
            raise StoreError(f"cannot mount {name} at {mountpoint} (libfuse error {exc})") from None
        finally:
            fs.close()
