"""The ``make`` operation: chunk a blob, store its chunks, write its index.

A regular file or block device is read by offset (``pread``), never
memory-mapped: a file that shrinks under a map, or a device whose read
fails, kills the process with SIGBUS, which Python cannot catch. The
chunker's parallel boundary search reads segments into a few reused buffers
(:func:`~casync_format.chunker.iter_file_chunks`), and the workers of a
:class:`~casync_store.plumbing.pool.ThreadMap` read each chunk at its
offset, hash it and, when a store is given, compress and store the chunks
the store does not hold yet (a chunk repeated within the run is handled
once). A short read, or a file's size or modification time at the end that
differs from the start, raises :class:`~casync_format.errors.InputChanged`
and no index is written; a device's read error is an OSError. Results come
back in blob order and are streamed into the index, which replaces its
final name only once complete; at most a few dozen chunks are in flight, so
memory stays flat however large the input. A pipe (``-`` for stdin) is cut
with the streaming chunker. The index is byte-identical to ``casync make``'s.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

from casync_format.chunker import DEFAULT_PARAMS, ChunkerParams, chunk_stream, iter_file_chunks
from casync_format.compress import COMPRESSIONS
from casync_format.constants import CA_FORMAT_BLOB_INDEX_FLAGS
from casync_format.digest import SHA512_256, Digest
from casync_format.errors import InputChanged, ParameterError
from casync_format.index import IndexHeader

from ..pipeline import ChunkWorker, Span, StoreStats
from ..plumbing.config import StoreOptions
from ..plumbing.fileio import pread, same_file
from ..plumbing.pool import ThreadMap, default_workers
from ..plumbing.progress import Progress, counted, format_bytes, phase, timed
from ..stores.base import WriteStore, require_writable
from ..stores.indexio import STDIO, index_writer
from ..stores.indexstore import is_remote_location

__all__ = ["MakeStats", "make", "blob_index_header", "iter_chunk_ids"]

_SEGMENT = 4 * 1024 * 1024  # parallel cut search: bytes per segment (bounds read-ahead)


@dataclass
class MakeStats(StoreStats):
    """What make did: its chunks by outcome, byte counts, and the time it took."""

    seconds: float = 0.0
    stored_into: str = ""  # the store's location ("" without a store)

    def to_dict(self) -> dict[str, Any]:
        """desync's keys first (``ChunksAccepted``: chunks in the index; ``ChunksProduced``: chunks the
        chunker cut, the same number here, as no cut is thrown away), then ours, dashed."""
        left_out = ("seconds", "stored-into")
        ours = {key: value for key, value in super().to_dict().items() if key not in left_out}
        return {"ChunksAccepted": self.chunks_total, "ChunksProduced": self.chunks_total, **ours,
                "seconds": round(self.seconds, 3)}

    def summary(self) -> str:
        """One line for people: size, time, throughput, and what happened to the chunks."""
        head = f"{timed(self.bytes_total, self.seconds)}"
        if not self.stored_into:
            return f"{head}: {self.chunks_total} chunks ({self.chunks_unique} unique), index only (no store)"
        head += f" into {self.stored_into}: {self.chunks_total} chunks"
        stored = counted(self.chunks_stored, "stored", self.bytes_stored_uncompressed,
                         f"{format_bytes(self.bytes_stored)} compressed")
        parts = [stored, counted(self.chunks_in_store, "already in the store", self.bytes_in_store),
                 counted(self.chunks_duplicate, "repeats", self.bytes_duplicate)]
        done = ", ".join(part for part in parts if part)
        return head + (f": {done}" if done else "")


def blob_index_header(params: ChunkerParams, digest: Digest) -> IndexHeader:
    """The header ``casync make`` writes for a blob chunked with ``params``."""
    return IndexHeader(
        CA_FORMAT_BLOB_INDEX_FLAGS | digest.flag, params.min_size, params.avg_size, params.max_size
    )


def make(
    index_path: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    store: WriteStore | None = None,
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    compression: str | None = None,
    progress: Progress | None = None,
    options_for: Callable[[str], StoreOptions] | None = None,
) -> MakeStats:
    """Chunk ``input_path`` into ``store`` and write its index to ``index_path``.

    ``-`` reads stdin (streaming) / writes the index to stdout; the index may
    also be a remote location (``options_for`` gives its store's options, see
    :func:`~.indexio.index_writer`). Without a store only the index is
    written. ``compression`` (zstd, xz or gzip) is that of the chunks
    stored; None takes the store's own (``store.compression``, zstd by
    default). Raises :class:`StoreError`, :class:`OSError` or
    :class:`ParameterError`; on failure no index is left.
    """
    index_path, input_path = os.fspath(index_path), os.fspath(input_path)
    if store is not None:
        store = require_writable(store)
    if not is_remote_location(index_path) and same_file(index_path, input_path):
        raise ParameterError(f"the index {index_path} and the input are the same file")
    if compression is not None and compression not in COMPRESSIONS:
        raise ParameterError(f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    workers = default_workers(concurrency)
    began = time.monotonic()
    stats = MakeStats(stored_into=str(store) if store is not None else "")
    header = blob_index_header(params, digest)
    with contextlib.ExitStack() as stack:
        if store is not None:
            stack.enter_context(store.writing())  # a prune meanwhile keeps our chunks
        source = stack.enter_context(_open_input(input_path))
        spans = source.spans(params, workers)
        work = ChunkWorker(None, store, digest, compression, source.read)
        # Hashing is CPU-bound (one thread per CPU); a store that waits on each write
        # gets more threads (its own count), and smaller batches keep them all busy.
        threads, batch = (workers, 4) if store is None else (store.write_workers(workers), 2)
        stack.enter_context(phase(progress, "Chunking" if store is None else "Storing", source.size))
        writer = stack.enter_context(index_writer(index_path, header, options_for))
        with ThreadMap(work, spans, threads, 4 * batch * threads, batch=batch) as results:
            for cid, size, fate, nbytes in results:
                writer.add(cid, size)
                stats.count(fate, size, nbytes)
                if progress is not None:
                    progress.add(size)
        source.check()  # before the index is committed: a changed input leaves none
        if store is not None:
            store.flush()  # no index names a chunk that is not on disk
        stats.chunks_unique = stats.chunks_total - stats.chunks_duplicate
    stats.seconds = time.monotonic() - began
    return stats


def iter_chunk_ids(
    input_path: str | os.PathLike[str],
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    offset: int = 0,
) -> Iterator[tuple[int, int, bytes]]:
    """Chunk ``input_path`` (``-``: stdin) and yield ``(start, size, id)`` in order.

    Nothing is stored; this is make's chunking and hashing without the index.
    ``offset`` starts chunking at that byte (positions still count from 0 of
    the file), like ``desync chunk --start``.
    """
    workers = default_workers(concurrency)
    with _open_input(os.fspath(input_path)) as source:
        source.skip(offset)
        work = ChunkWorker(None, None, digest, "zstd", source.read)
        start = offset
        spans = source.spans(params, workers)
        with ThreadMap(work, spans, workers, 16 * workers, batch=4) as results:
            for cid, size, _fate, _nbytes in results:
                yield start, size, cid
                start += size
        source.check()


class _Input:
    """An input read sequentially: a pipe, a socket, a character device (or nothing: empty)."""

    read: Callable[[int, int], bytes] | None = None  # set when spans are (start, size) to read

    def __init__(self, fileobj: BinaryIO | None, size: int = 0) -> None:
        self.file = fileobj
        self.size = size  # 0 when unknown (a stream)
        self._spans: list[Iterator[Span]] = []

    def skip(self, offset: int) -> None:
        """Start the input at byte ``offset`` (chunk positions count from there)."""
        while self.file is not None and offset > 0:
            got = len(self.file.read(min(offset, 1 << 20)))
            if not got:
                break
            offset -= got

    def spans(self, params: ChunkerParams, workers: int) -> Iterator[Span]:
        """The chunks as ``(start, data)``, cut by the streaming chunker."""
        if self.file is None:
            return iter(())
        return chunk_stream(self.file, params)

    def check(self) -> None:
        """Raise :class:`InputChanged` if the input changed while it was read (files only)."""

    def close(self) -> None:
        """Stop a chunker that has not run to its end (its search threads)."""
        for spans in self._spans:
            close = getattr(spans, "close", None)
            if close is not None:
                close()


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[_Input]:
    if path == STDIO:
        yield _Input(sys.stdin.buffer)
        return
    with open(path, "rb") as f:
        source = _by_offset_or_stream(f, path)
        try:
            yield source
        finally:
            source.close()


def _by_offset_or_stream(f: BinaryIO, path: str) -> _Input:
    """Read a regular file or block device by offset; anything else as a stream.

    Nothing is memory-mapped: a mapped file that shrinks, or a device whose
    read fails, would end the process with SIGBUS instead of an error.
    """
    st = os.fstat(f.fileno())
    if stat.S_ISREG(st.st_mode):
        return _FileInput(f.fileno(), path, st.st_size, st)
    if not stat.S_ISBLK(st.st_mode):
        return _Input(f)  # pipes, sockets, character devices: a stream
    try:
        size = os.lseek(f.fileno(), 0, os.SEEK_END)
    except OSError:
        return _Input(f)
    return _FileInput(f.fileno(), path, size, None)


class _FileInput(_Input):
    """A file or device read by offset; a short read (or a file's changed size/mtime) is InputChanged."""

    def __init__(self, fd: int, path: str, size: int, st: os.stat_result | None) -> None:
        super().__init__(None, size)
        self.fd = fd
        self.path = path
        self.total = size
        self.stat = st  # a regular file's size and mtime at the start (None: a device)
        self.base = 0  # the offset chunking starts at (skip)
        self.read = self._read

    def skip(self, offset: int) -> None:
        if offset > 0:
            self.base = min(offset, self.total)
            self.size = self.total - self.base

    def spans(self, params: ChunkerParams, workers: int) -> Iterator[Span]:
        segment = -(-_SEGMENT // params.max_size) * params.max_size
        spans = iter_file_chunks(self._read_into, self.size, params, workers, segment_size=segment)
        self._spans.append(spans)  # closed with the input: its search threads stop
        return spans

    def _read(self, start: int, size: int) -> bytes:
        data = pread(self.fd, size, self.base + start)
        if len(data) != size:
            raise self._changed(f"read {len(data)} of {size} bytes at offset {self.base + start}")
        return data

    def _read_into(self, view: memoryview, offset: int) -> None:
        offset += self.base
        size, got = len(view), 0
        while got < size:
            with view[got:] as rest:
                n = _pread_into(self.fd, rest, offset + got)
            if n <= 0:
                raise self._changed(f"read {got} of {size} bytes at offset {offset}")
            got += n

    def _changed(self, detail: str) -> InputChanged:
        return InputChanged(self.path, detail)

    def check(self) -> None:
        before = self.stat
        if before is None:
            return
        now = os.fstat(self.fd)
        if now.st_size != before.st_size or now.st_mtime_ns != before.st_mtime_ns:
            raise self._changed(
                f"size {before.st_size} -> {now.st_size}, mtime_ns {before.st_mtime_ns} -> {now.st_mtime_ns}"
            )


_PREADV = hasattr(os, "preadv")


def _pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` at ``offset``; the byte count (0 at the end of the file)."""
    if _PREADV:
        return os.preadv(fd, [view], offset)
    data = pread(fd, len(view), offset)
    view[: len(data)] = data
    return len(data)
