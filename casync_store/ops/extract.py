"""The ``extract`` operation: rebuild a blob from its index, seeds and a store.

The index is cut into jobs by :meth:`~.seed.SeedSet.plan` (runs of chunks found
consecutive in a seed, else single chunks); worker threads
(:class:`~casync_store.plumbing.pool.ThreadMap`) keep chunks already in place,
copy seed runs (cloned by :func:`~casync_store.plumbing.clone.copy_range` where
the filesystem shares blocks) and repeats from the output itself
(:class:`~.seed.SelfSeed`), verifying every such byte and fetching what does
not match, and fetch, decompress and verify the rest in parallel; each chunk is
written with positional writes (``pwrite``) at its offset, so no buffer is
shared between threads and only a bounded number of chunks is in memory. By
default the blob is assembled in a temporary file next to the output (sized
first, so all-zero chunks are never written and stay holes; the other ranges
preallocated where the platform can), written back to disk in the background as
it grows, fsynced and renamed over the output: a failed extract leaves an
existing output untouched and no temporary file. That temporary file has one
fixed name per output and is locked while written
(:mod:`casync_store.ops._outputlock`): what a killed run left is found by the
next run and reused as a seed (its chunks verified, only wrong ones fetched),
and an extract to an output that another live extract is writing fails at once
with :class:`~casync_format.errors.OutputBusy` naming that process; ``-k``
locks the output itself. ``in_place`` writes into the existing file or block
device, skipping every chunk whose bytes are already there (so an interrupted
run resumes), then cuts a longer regular file to the blob's size; a block
device is never truncated and gets its zero chunks written. ``-`` writes the
blob to stdout in order, and so does an output that is a character device or a
named pipe (``/dev/null``, a tty), which is never replaced by a file. The
all-zero chunk of the index's maximum size (a run of zeros) is known by its id
and never fetched, as with desync's null-chunk seed.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from casync_format.index import Index, IndexChunk

from ..pipeline import ChunkReader, Outcome, ZeroChunk, is_zero
from ..plumbing.clone import block_size, can_clone, copy_range
from ..plumbing.fileio import fdatasync, pread, pwrite_all
from ..plumbing.pool import ThreadMap, default_workers
from ..plumbing.progress import Progress, phase
from ..plumbing.writeback import Writeback
from ..stores.base import Store
from ..stores.indexio import STDIO
from ._extractstats import ExtractStats, SourceStats
from ._outputlock import in_place as locked_in_place
from ._outputlock import replacing
from .seed import ATTEMPT, Job, Seed, SeedSet, SelfSeed, parse_seed, prepare

__all__ = ["ExtractStats", "SourceStats", "extract"]

_BATCH = 4  # chunks a worker takes at a time
_FLUSH_EVERY = 128 * 1024 * 1024  # start writeback after this many bytes, so the last fsync is short


def extract(
    index: Index,
    output_path: str | os.PathLike[str],
    store: Store,
    concurrency: int | None = None,
    in_place: bool = False,
    progress: Progress | None = None,
    seeds: Sequence[Seed | str | os.PathLike[str]] = (),
    invalid_seeds: str = "fail",
) -> ExtractStats:
    """Write the blob of ``index`` to ``output_path`` from ``seeds`` and ``store`` (see the module).

    ``seeds`` are :class:`~.seed.Seed` objects or ``--seed`` texts
    (:func:`~.seed.parse_seed`); ``invalid_seeds`` is ``fail``, ``skip`` or
    ``regenerate`` (see :func:`~.seed.prepare`). Raises SeedError (naming the
    seed), ChunkMissing, ChunkInvalid, StoreError (naming chunk and store) or
    OSError; then an existing output is unchanged (unless ``in_place``).
    """
    output_path = os.fspath(output_path)
    wanted = [parse_seed(os.fspath(s)) if isinstance(s, (str, os.PathLike)) else s for s in seeds]
    began = time.monotonic()
    stats = ExtractStats(bytes_total=index.blob_size)
    stats.add_sources(store)
    with prepare(wanted, index, invalid_seeds, concurrency, progress) as seedset:
        stats.seeds = len(seedset.seeds) + 1
        with phase(progress, f"{ATTEMPT}Assembling", index.blob_size):
            if output_path == STDIO:
                _to_stream(index, sys.stdout.buffer, store, concurrency, stats, progress, seedset)
            elif _is_stream_device(output_path):
                # /dev/null, a tty or a named pipe: written in order, never replaced by a file.
                with open(output_path, "wb") as out:
                    _to_stream(index, out, store, concurrency, stats, progress, seedset)
            elif in_place or _is_block_device(output_path):
                with locked_in_place(output_path) as fd:
                    _in_place(index, output_path, fd, store, concurrency, stats, progress, seedset)
            else:
                with replacing(output_path) as (fd, leftover):
                    os.ftruncate(fd, index.blob_size)
                    _preallocate(fd, index)
                    # A dead run's bytes are a seed: each chunk found there intact is kept.
                    old = min(leftover, index.blob_size)
                    work = _FileWriter(fd, store, index, old, old > 0, seedset)
                    _run(work, index, concurrency, stats, progress, fd)
    stats.seconds = time.monotonic() - began
    return stats


def _run(
    work: _FileWriter,
    index: Index,
    concurrency: int | None,
    stats: ExtractStats,
    progress: Progress | None,
    fd: int,
) -> None:
    threads = default_workers(concurrency)
    stats.blocksize = block_size(fd)
    with Writeback(lambda: fdatasync(fd), _FLUSH_EVERY) as flusher, ThreadMap(
        work, work.jobs(index), threads, in_flight=4 * _BATCH * threads, ordered=False, batch=_BATCH
    ) as results:
        try:
            for done in results:
                for fate, size, written, source, read in done.chunks:
                    flusher.add(written)
                    stats.count(fate, size, written, source, read)
                    if progress is not None:
                        progress.add(size)
                stats.bytes_copied_from_seeds += done.copied
                stats.bytes_cloned_from_seeds += done.cloned
        except BaseException:
            work.self_seed.abort()  # no worker may wait for a job that will never run
            raise


class _Done:
    """What one job did: ``(outcome, size, bytes written, source store, stored bytes read)`` per chunk,
    bytes copied and cloned."""

    __slots__ = ("chunks", "cloned", "copied")

    def __init__(self) -> None:
        self.chunks: list[tuple[Outcome, int, int, Store | None, int]] = []
        self.copied = 0
        self.cloned = 0


class _FileWriter:
    """Does one job of the plan: chunks in place are kept, seed runs copied, the rest fetched.

    Every byte from a seed or from the output itself is hashed against its
    chunk id before it counts; a chunk that does not match (a seed changed
    while we ran) is fetched from the store instead. The all-zero chunk of
    the maximum size is recognised by its id and never fetched: past the old
    end of the output it stays a hole.
    """

    def __init__(
        self, fd: int, store: Store, index: Index, old_size: int, check: bool, seedset: SeedSet | None = None
    ) -> None:
        self.fd = fd
        self.source = ChunkReader(store, index)
        self.digest = index.digest
        self.old_size = old_size  # bytes of the output that existed before
        self.check = check  # compare existing bytes to the chunk first (in place)
        self.seedset = seedset or SeedSet(())
        self.self_seed = SelfSeed()
        self.clonable = {seed: can_clone(seed.fd, fd) for seed in self.seedset.seeds}
        self.self_clonable = can_clone(fd, fd)

    def jobs(self, index: Index) -> Iterator[Job]:
        """The plan, with the self-seed's repeats flagged."""
        zero = self.source.zero
        return self.self_seed.mark(self.seedset.plan(index, zero), zero)

    def __call__(self, job: Job) -> _Done:
        try:
            done = _Done()
            self._do(job, done)
            return done
        except BaseException:
            self.self_seed.abort()
            raise
        finally:
            self.self_seed.release(job)

    def _do(self, job: Job, done: _Done) -> None:
        items = [item for item in job.items if not self._kept(item, done)] if self.check else job.items
        if not items:
            return
        if job.seed is not None:
            base = job.items[0].start
            for run in _consecutive(items):
                src = job.src + run[0].start - base
                self._copy(job.seed.fd, src, run, done, self.clonable[job.seed], Outcome.SEED)
            return
        (item,) = items
        if job.repeat:
            at = self.self_seed.wait(item.id)
            if at >= 0:
                self._copy(self.fd, at, items, done, self.self_clonable, Outcome.SELF_SEED)
                return
        self._fetch(item, done)

    def _kept(self, item: IndexChunk, done: _Done) -> bool:
        """Whether the output holds ``item`` already (then it is counted in place)."""
        if item.start >= self.old_size:
            return False
        old = pread(self.fd, item.size, item.start)
        if len(old) != item.size or self.digest(old) != item.id:
            return False
        done.chunks.append((Outcome.IN_PLACE, item.size, 0, None, 0))
        self.self_seed.written(item)
        return True

    def _copy(
        self, src_fd: int, src: int, run: list[IndexChunk], done: _Done, clonable: bool, fate: Outcome
    ) -> None:
        """Copy ``run`` from ``src_fd`` at ``src`` into place, verified; what fails comes from the store."""
        start = run[0].start
        length = run[-1].start + run[-1].size - start
        # A seed that fails to read (short, EIO) is a seed that does not match: the store
        # fills in. A failing output fails again on that write, and that error is raised.
        if clonable:  # blocks are shared where they line up: read back what landed
            try:
                cloned, copied = copy_range(src_fd, src, self.fd, start, length)
            except OSError:  # ShortSourceError included
                cloned, copied = 0, 0
            data = memoryview(pread(self.fd, length, start))
        else:
            cloned, copied = 0, length
            try:
                data = memoryview(pread(src_fd, length, src))
            except OSError:
                data = memoryview(b"")
        bad = []
        for item in run:
            piece = data[item.start - start : item.start - start + item.size]
            if len(piece) == item.size and self.digest(piece) == item.id:
                if not clonable:
                    pwrite_all(self.fd, piece, item.start)
                done.chunks.append((fate, item.size, item.size, None, 0))
                self.self_seed.written(item)
            else:
                bad.append(item)
        for item in bad:
            lost = min(item.size, copied)
            copied, cloned = copied - lost, max(0, cloned - (item.size - lost))
            self._fetch(item, done)
        done.copied += copied
        done.cloned += cloned

    def _fetch(self, item: IndexChunk, done: _Done) -> None:
        # Past the old end a zero chunk reads as zero from the hole truncate makes.
        skip_zero = item.start >= self.old_size
        fast = self.source.fetch_into(item, self.fd, skip_zero)  # a local store's one C call
        if fast is not None:
            fate, written, source, read = fast
        else:
            fate, data, source, read = self.source.fetch(item)
            written = 0 if skip_zero and is_zero(data) else item.size
            if written:
                pwrite_all(self.fd, data, item.start)
        done.chunks.append((fate, item.size, written, source, read))
        if written:
            self.self_seed.written(item)


def _consecutive(items: list[IndexChunk]) -> Iterator[list[IndexChunk]]:
    """``items`` in runs without gaps between them."""
    run = [items[0]]
    for item in items[1:]:
        if item.start != run[-1].start + run[-1].size:
            yield run
            run = []
        run.append(item)
    yield run


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
    seedset: SeedSet,
) -> None:
    device = stat.S_ISBLK(os.fstat(fd).st_mode)
    size = os.lseek(fd, 0, os.SEEK_END)
    if device and size < index.blob_size:
        raise OSError(errno.ENOSPC, f"device {path} holds {size} bytes, the blob needs {index.blob_size}")
    # A device has no holes: every zero chunk that is not there yet gets written.
    old_size = size if not device else index.blob_size + 1
    work = _FileWriter(fd, store, index, old_size, True, seedset)
    _run(work, index, concurrency, stats, progress, fd)
    if not device:
        os.ftruncate(fd, index.blob_size)
    os.fsync(fd)


class _StreamReader:
    """One job's verified bytes, in order: seed runs read (bad chunks from the store), the rest fetched."""

    def __init__(self, store: Store, index: Index) -> None:
        self.source = ChunkReader(store, index)
        self.digest = index.digest

    def __call__(self, job: Job) -> tuple[list[tuple[Outcome, int, Store | None, int]], bytes, int]:
        if job.seed is None:
            fate, data, source, read = self.source.fetch(job.items[0])
            return [(fate, len(data), source, read)], data, 0
        try:
            raw = memoryview(pread(job.seed.fd, job.length, job.src))
        except OSError:  # an unreadable seed is one that does not match: the store fills in
            raw = memoryview(b"")
        base, parts, copied = job.items[0].start, [], 0
        fates: list[tuple[Outcome, int, Store | None, int]] = []
        for item in job.items:
            piece = raw[item.start - base : item.start - base + item.size]
            if len(piece) == item.size and self.digest(piece) == item.id:
                fates.append((Outcome.SEED, item.size, None, 0))
                copied += item.size
                parts.append(piece)
            else:
                fate, data, source, read = self.source.fetch(item)
                fates.append((fate, item.size, source, read))
                parts.append(memoryview(data))
        return fates, b"".join(parts), copied


def _to_stream(
    index: Index,
    out: BinaryIO,
    store: Store,
    concurrency: int | None,
    stats: ExtractStats,
    progress: Progress | None,
    seedset: SeedSet,
) -> None:
    threads = default_workers(concurrency)
    reader = _StreamReader(store, index)
    jobs = seedset.plan(index, reader.source.zero)  # a pipe cannot be read back: no self-seed
    with ThreadMap(reader, jobs, threads, 4 * _BATCH * threads, batch=_BATCH) as results:
        for fates, data, copied in results:
            out.write(data)
            for fate, size, source, read in fates:
                stats.count(fate, size, 0, source, read)
            stats.bytes_written += len(data)
            stats.bytes_copied_from_seeds += copied
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
