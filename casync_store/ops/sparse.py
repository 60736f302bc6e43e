"""The copy-on-read file of ``mount-index --cor-file``: a blob's bytes kept as they are read.

:class:`CorFile` is desync's sparse file: a local file the size of the blob
into which every chunk a read needs is written before the read is answered
from it, so a chunk is fetched from the store only once, ever; with a state
file (``--cor-state-save``) that survives a remount. The state is desync's
format: a bitmap with one bit per index item (item ``i`` is bit ``i % 8``,
least significant first, of byte ``i // 8``; ``ceil(items / 8)`` bytes), set
when the item's bytes are in the file. It is written on :meth:`~CorFile.
save` (SIGHUP) and on close, atomically. At start, a file of the blob's size
and a state file of the index's size are used as they are; otherwise the
file is emptied and made the blob's size (holes read as zeros, so the
index's all-zero chunk is never written), and an init state
(``--cor-state-init``, possibly the same file) names the items to load at
once, in the background with ``init_workers`` threads (``--cor-init-n``).
A state file is only valid for the file and the index it was written with,
as in desync.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from casync_format.errors import ParameterError, StoreError
from casync_format.index import Index, IndexChunk

from ..pipeline import ZeroChunk
from ..plumbing.atomic import write_file_atomic

__all__ = ["CorFile", "CorOptions", "state_size", "DEFAULT_INIT_WORKERS"]

log = logging.getLogger(__name__)

DEFAULT_INIT_WORKERS = 10
"""Threads that load the chunks of an init state (desync's --cor-init-n default)."""


@dataclass(frozen=True)
class CorOptions:
    """The copy-on-read options of a mount (desync's --cor-file, --cor-state-save/-init, --cor-init-n)."""

    path: str
    state_save: str | None = None
    state_init: str | None = None
    init_workers: int = DEFAULT_INIT_WORKERS


def _failed(what: str, path: str, exc: OSError) -> StoreError:
    return StoreError(f"cannot {what} {path}: {exc.strerror or exc}")


def state_size(items: int) -> int:
    """Bytes of a state file for an index of ``items`` chunks."""
    return (items + 7) // 8


def _read_state(path: str, items: int) -> bytearray:
    """A state file's bitmap; StoreError when unreadable or not of this index's size."""
    try:
        with open(path, "rb") as f:
            raw = f.read(state_size(items) + 1)
    except OSError as exc:
        raise StoreError(f"cannot read copy-on-read state {path}: {exc.strerror or exc}") from None
    if len(raw) != state_size(items):
        raise StoreError(f"copy-on-read state {path} does not match the index ({len(raw)} bytes, "
                         f"{state_size(items)} expected)")  # fmt: skip
    return bytearray(raw)


class CorFile:
    """A copy-on-read file of an index's blob (see the module docs).

    ``fetch(item)`` returns an item's verified data (the mount's chunk
    cache); ``item_at(i)`` reads item ``i`` of ``index`` (under the lock
    its other users take; by default one of this object's own). Thread-safe:
    concurrent loads of one item write it once.
    """

    def __init__(
        self,
        options: CorOptions,
        index: Index,
        fetch: Callable[[IndexChunk], bytes],
        item_at: Callable[[int], IndexChunk] | None = None,
    ) -> None:
        if options.init_workers < 1:
            raise ParameterError(f"--cor-init-n must be at least 1, not {options.init_workers}")
        path = options.path
        self.path, self.index, self.fetch = path, index, fetch
        self._item = item_at or self._own_item
        self.state_save = options.state_save
        self.size = index.blob_size
        self._zero = ZeroChunk(index)
        self._lock = threading.Lock()
        self._item_locks: dict[int, threading.Lock] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.loaded = 0  #: chunks written to the file by this process
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open copy-on-read file {path}: {exc.strerror or exc}") from None
        self.done = bytearray(state_size(index.count))
        try:
            saved = self._resume()
            if saved is not None:
                self.done = saved
            else:
                self._reset()
                if options.state_init is not None:
                    self._preload(_read_state(options.state_init, index.count), options.init_workers)
        except BaseException:
            self.close(save=False)
            raise

    def _resume(self) -> bytearray | None:
        """The saved state, when the file and the state file both fit the index."""
        if self.state_save is None or os.fstat(self._fd).st_size != self.size:
            return None
        try:
            return _read_state(self.state_save, self.index.count)
        except StoreError as exc:
            if os.path.exists(self.state_save):
                log.warning("%s; starting the copy-on-read file afresh", exc)
            return None

    def _reset(self) -> None:
        try:
            os.ftruncate(self._fd, 0)  # nothing of an earlier content may pass for this blob's
            os.ftruncate(self._fd, self.size)
        except OSError as exc:
            raise StoreError(f"cannot size copy-on-read file {self.path}: {exc.strerror or exc}") from None

    def _preload(self, state: bytearray, workers: int) -> None:
        wanted = [i for i in range(self.index.count) if state[i // 8] >> (i % 8) & 1]
        if not wanted:
            return
        self._pool = ThreadPoolExecutor(workers, "cor-init")
        for i in wanted:
            self._pool.submit(self._preload_one, i)

    def _preload_one(self, i: int) -> None:
        try:
            self.load(i, self._item(i))
        except Exception as exc:  # a read of the range tries again and reports
            log.warning("copy-on-read init: chunk %d not loaded: %s", i, exc)

    def _own_item(self, i: int) -> IndexChunk:
        with self._lock:  # the index file is not thread-safe
            return self.index[i]

    def is_done(self, i: int) -> bool:
        """Whether item ``i`` is in the file."""
        with self._lock:
            return bool(self.done[i // 8] >> (i % 8) & 1)

    def load(self, i: int, item: IndexChunk) -> None:
        """Make sure item ``i``'s bytes are in the file (fetched and written once)."""
        if self._zero.matches(item) or self.is_done(i):
            return
        with self._lock:
            lock = self._item_locks.setdefault(i, threading.Lock())
        with lock:
            if self.is_done(i):
                return
            data = self.fetch(item)
            view = memoryview(data)
            pos = item.start
            try:
                while view:
                    n = os.pwrite(self._fd, view, pos)
                    view, pos = view[n:], pos + n
            except OSError as exc:
                raise _failed("write copy-on-read file", self.path, exc) from None
            with self._lock:
                self.done[i // 8] |= 1 << (i % 8)
                self.loaded += 1
                self._item_locks.pop(i, None)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes of the file at ``offset`` (the caller has loaded their items)."""
        try:
            return os.pread(self._fd, size, offset)
        except OSError as exc:
            raise StoreError(f"cannot read copy-on-read file {self.path}: {exc.strerror or exc}") from None

    def state(self) -> bytes:
        """The current state bitmap."""
        with self._lock:
            return bytes(self.done)

    def save(self) -> None:
        """Write the state file (when one is set), atomically."""
        if self.state_save is None:
            return
        try:
            write_file_atomic(self.state_save, self.state())
        except OSError as exc:
            raise _failed("write copy-on-read state", self.state_save, exc) from None

    def close(self, save: bool = True) -> None:
        """Stop preloading, save the state (``save``) and close the file."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        try:
            if save:
                self.save()
        finally:
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)
