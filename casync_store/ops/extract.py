"""The ``extract`` operation: rebuild a blob from its index and a store.

Worker threads (:class:`~casync_store.plumbing.pool.ThreadMap`) fetch, decompress and
verify chunks in parallel and write each with positional writes (``pwrite``) at its offset, so
no buffer is shared between threads and only a bounded number of chunks is in
memory. By default the blob is assembled in a temporary file next to the
output (sized first, so all-zero chunks are never written and stay holes;
the other ranges preallocated where the platform can), written back to disk
in the background as it grows, fsynced and renamed over the output: a failed
extract leaves an existing output untouched and no temporary file. That
temporary file has one fixed name per output and is locked while written
(:mod:`casync_store.ops._outputlock`): what a killed run left is found by the next
run and reused as a seed (its chunks verified, only wrong ones fetched), and
an extract to an output that another live extract is writing fails at once
with :class:`~casync_format.errors.OutputBusy` naming that process; ``-k``
locks the output itself.
``in_place`` writes into the existing file or block device, skipping every
chunk whose bytes are already there (so an interrupted run resumes), then
cuts a longer regular file to the blob's size; a block device is never
truncated and gets its zero chunks written. ``-`` writes the blob to stdout
in order, and so does an output that is a character device or a named pipe
(``/dev/null``, a tty), which is never replaced by a file. The all-zero
chunk of the index's maximum size (a run of zeros) is known by its id and
never fetched, as with desync's null-chunk seed.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Callable

from casync_format.index import Index, IndexChunk

from ..pipeline import ChunkReader, Outcome, ZeroChunk, is_zero
from ..plumbing.fileio import fdatasync, pread, pwrite_all
from ..plumbing.pool import ThreadMap, default_workers
from ..plumbing.progress import Progress, phase
from ..stores.base import Store
from ..stores.indexio import STDIO
from ._outputlock import in_place as locked_in_place
from ._outputlock import replacing

__all__ = ["ExtractStats", "extract"]

_BATCH = 4  # chunks a worker takes at a time
_FLUSH_EVERY = 128 * 1024 * 1024  # start writeback after this many bytes, so the last fsync is short


@dataclass
class ExtractStats:
    """What ``extract`` did with each chunk of the index."""

    chunks_total: int = 0
    chunks_from_store: int = 0  # fetched and verified (written, or a hole if all zero)
    chunks_in_place: int = 0  # the output held the right bytes already
    chunks_zero: int = 0  # all-zero chunks known by id: never fetched
    bytes_total: int = 0  # blob size
    bytes_written: int = 0  # bytes actually written (holes and chunks in place are not)

    def to_dict(self) -> dict[str, int]:
        """The stats with desync's dashed keys, for --print-stats."""
        return {
            "chunks-total": self.chunks_total,
            "chunks-from-store": self.chunks_from_store,
            "chunks-in-place": self.chunks_in_place,
            "chunks-zero": self.chunks_zero,
            "bytes-total": self.bytes_total,
            "bytes-written": self.bytes_written,
        }

    def count(self, outcome: Outcome, written: int) -> None:
        """Add one chunk by its outcome, ``written`` of its bytes written to the output."""
        self.chunks_total += 1
        self.bytes_written += written
        if outcome is Outcome.ZERO:
            self.chunks_zero += 1
        elif outcome is Outcome.IN_PLACE:
            self.chunks_in_place += 1
        else:
            self.chunks_from_store += 1


class _Flusher:
    """Writes the output back to disk in the background while it is assembled.

    Every ``_FLUSH_EVERY`` bytes a thread runs ``fdatasync``, so the disk works
    while the CPUs fetch and verify, and the final fsync finds little left to
    do. Only started for outputs larger than one step.
    """

    def __init__(self, fd: int, total: int) -> None:
        self._fd = fd
        self._pending = 0
        self._wake = threading.Event()
        self._stop = False
        self._error: OSError | None = None
        self._thread: threading.Thread | None = None
        if total > _FLUSH_EVERY:
            self._thread = threading.Thread(target=self._loop, name="pycasync-flusher", daemon=True)
            self._thread.start()

    def __enter__(self) -> _Flusher:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if self._thread is not None:
            self._stop = True
            self._wake.set()
            self._thread.join()
        if kind is None and self._error is not None:
            raise self._error

    def add(self, n: int) -> None:
        """Count ``n`` more bytes done; wake the thread every step."""
        self._pending += n
        if self._pending >= _FLUSH_EVERY and self._thread is not None:
            self._pending = 0
            self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                fdatasync(self._fd)
            except OSError as exc:  # raised by __exit__ (the final fsync would fail too)
                self._error = exc
                return


def extract(
    index: Index,
    output_path: str | os.PathLike[str],
    store: Store,
    concurrency: int | None = None,
    in_place: bool = False,
    progress: Progress | None = None,
) -> ExtractStats:
    """Write the blob of ``index`` to ``output_path`` from ``store`` (see the module).

    Raises ChunkMissing, ChunkInvalid, StoreError (naming chunk and store) or
    OSError; then an existing output is unchanged (unless ``in_place``).
    """
    output_path = os.fspath(output_path)
    stats = ExtractStats(bytes_total=index.blob_size)
    with phase(progress, "Assembling", index.blob_size):
        if output_path == STDIO:
            _to_stream(index, sys.stdout.buffer, store, concurrency, stats, progress)
        elif _is_stream_device(output_path):
            # /dev/null, a tty or a named pipe: written in order, never replaced by a file.
            with open(output_path, "wb") as out:
                _to_stream(index, out, store, concurrency, stats, progress)
        elif in_place or _is_block_device(output_path):
            with locked_in_place(output_path) as fd:
                _in_place(index, output_path, fd, store, concurrency, stats, progress)
        else:
            with replacing(output_path) as (fd, leftover):
                os.ftruncate(fd, index.blob_size)
                _preallocate(fd, index)
                # A dead run's bytes are a seed: each chunk found there intact is kept.
                seed = min(leftover, index.blob_size)
                work = _FileWriter(fd, store, index, seed, seed > 0)
                _run(work, index, concurrency, stats, progress, fd)
    return stats


def _run(
    work: Callable[[IndexChunk], tuple[Outcome, int, int]],
    index: Index,
    concurrency: int | None,
    stats: ExtractStats,
    progress: Progress | None,
    fd: int,
) -> None:
    threads = default_workers(concurrency)
    with _Flusher(fd, index.blob_size) as flusher, ThreadMap(
        work, iter(index), threads, in_flight=4 * _BATCH * threads, ordered=False, batch=_BATCH
    ) as results:
        for fate, size, written in results:
            flusher.add(written)
            stats.count(fate, written)
            if progress is not None:
                progress.add(size)


class _FileWriter:
    """Fetches one chunk and writes it at its offset (skipping what needn't be).

    The all-zero chunk of the maximum size (what a run of zeros is cut into)
    is recognised by its id and never fetched: its data follows from the id.
    """

    def __init__(self, fd: int, store: Store, index: Index, old_size: int, check: bool) -> None:
        self.fd = fd
        self.source = ChunkReader(store, index)
        self.digest = index.digest
        self.old_size = old_size  # bytes of the output that existed before
        self.check = check  # compare existing bytes to the chunk first (in place)

    def __call__(self, item: IndexChunk) -> tuple[Outcome, int, int]:
        """``(outcome, size, bytes written)`` for one index item."""
        if self.check and item.start < self.old_size:
            old = pread(self.fd, item.size, item.start)
            if len(old) == item.size and self.digest(old) == item.id:
                return Outcome.IN_PLACE, item.size, 0
        fate, data = self.source.read(item)
        # Past the old end a zero chunk reads as zero from the hole truncate makes.
        if item.start >= self.old_size and is_zero(data):
            return fate, item.size, 0
        pwrite_all(self.fd, data, item.start)
        return fate, item.size, item.size


def _is_stream_device(path: str) -> bool:
    """A character device or FIFO: no seeking, no renaming over it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _in_place(
    index: Index,
    path: str,
    fd: int,
    store: Store,
    concurrency: int | None,
    stats: ExtractStats,
    progress: Progress | None,
) -> None:
    device = stat.S_ISBLK(os.fstat(fd).st_mode)
    size = os.lseek(fd, 0, os.SEEK_END)
    if device and size < index.blob_size:
        raise OSError(errno.ENOSPC, f"device {path} holds {size} bytes, the blob needs {index.blob_size}")
    # A device has no holes: every zero chunk that is not there yet gets written.
    old_size = size if not device else index.blob_size + 1
    work = _FileWriter(fd, store, index, old_size, True)
    _run(work, index, concurrency, stats, progress, fd)
    if not device:
        os.ftruncate(fd, index.blob_size)
    os.fsync(fd)


def _to_stream(
    index: Index,
    out: BinaryIO,
    store: Store,
    concurrency: int | None,
    stats: ExtractStats,
    progress: Progress | None,
) -> None:
    threads = default_workers(concurrency)
    source = ChunkReader(store, index)
    with ThreadMap(source.read, iter(index), threads, 4 * _BATCH * threads, batch=_BATCH) as results:
        for fate, data in results:
            out.write(data)
            stats.count(fate, len(data))
            if progress is not None:
                progress.add(len(data))
    out.flush()


def _data_ranges(index: Index) -> Iterator[tuple[int, int]]:
    """Merged ``(offset, length)`` ranges of the chunks that are not all zero."""
    zero = ZeroChunk(index)
    start = end = 0
    for item in index:
        if zero.matches(item):
            if end > start:
                yield start, end - start
            start = end = item.start + item.size
        else:
            end = item.start + item.size
    if end > start:
        yield start, end - start


def _preallocate(fd: int, index: Index) -> None:
    """Reserve disk space for the data ranges, where the platform supports it."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or not index.count:
        return
    for offset, length in _data_ranges(index):
        try:
            fallocate(fd, offset, length)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", -1)):
                return  # the filesystem cannot: extract without it
            raise
