"""The ``tar`` operation: a directory tree to a catar archive or a chunked caidx index.

The tree is read by :func:`walk_tree` (:mod:`casync_store.ops._walk`, re-exported
here with :class:`TreeEvent`): children in ``strcmp`` order, what the feature
flags ask for, casync's exclusions. Its events drive a
:class:`~casync_format.catar.CatarWriter` (:func:`write_tree`). :func:`tar`
writes the archive to a file (atomically) or stdout through a 1 MiB buffer;
:func:`tar_index` encodes it straight into a push chunker
(:class:`~casync_format.chunker.StreamCutter`; file contents are read into
its buffer, no pipe, no archive thread, no temporary archive) inside the
worker pool make uses, which hashes/compresses/stores the chunks (a bounded
window of chunks in flight), and writes the index atomically. Both are byte-identical to ``casync
make`` with the same feature flags (and chunk sizes). A file that shrinks,
grows or is rewritten while its content is archived (its payload ends early,
or its size or modification time after the read differ from the walk's)
raises :class:`~casync_format.errors.InputChanged` naming it, and no
archive or index is left.

API (stable)::

    walk_tree(source_dir: str | bytes, feature_flags: int = DESYNC_TAR_FLAGS,
              one_file_system: bool = False, no_time: bool = False) -> Iterator[TreeEvent]
    TreeEvent(kind: str, entry: Entry | None, path: bytes, payload: BinaryIO | None)
    write_tree(writer: CatarWriter, events: Iterable[TreeEvent]) -> TarStats
    tar(source_dir, output, *, feature_flags=DESYNC_TAR_FLAGS, one_file_system=False,
        no_time=False) -> TarStats
    tar_index(source_dir, index_path, store, *, params=DEFAULT_PARAMS, digest=SHA512_256,
              concurrency=None, feature_flags=DESYNC_TAR_FLAGS, one_file_system=False,
              no_time=False, compression=None, progress=None) -> TarStats
    index_events(events: Iterable[TreeEvent], index_path, store, *, feature_flags=DESYNC_TAR_FLAGS,
                 params=DEFAULT_PARAMS, digest=SHA512_256, concurrency=None, compression=None,
                 progress=None) -> TarStats          # tar_index's pipeline for any event source
    index_flags(feature_flags: int, digest: Digest) -> int
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import io
import os
import stat
import sys
from collections.abc import Generator, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO, Callable, cast

from casync_format.catar import DESYNC_TAR_FLAGS, CatarWriter, Entry, normalize_feature_flags
from casync_format.chunker import DEFAULT_PARAMS, READINTO_TYPES, ChunkerParams, StreamCutter
from casync_format.constants import CA_FORMAT_SHA512_256
from casync_format.digest import SHA512_256, Digest
from casync_format.errors import FormatError, InputChanged, ParameterError
from casync_format.index import IndexHeader

from ..pipeline import ChunkWorker, StoreStats
from ..plumbing.atomic import atomic_write
from ..plumbing.config import StoreOptions
from ..plumbing.pool import ThreadMap, default_workers
from ..plumbing.progress import Progress, phase
from ..stores.base import WriteStore, require_writable
from ..stores.indexio import STDIO, index_writer
from ._walk import PathLike, TreeEvent, walk_tree

__all__ = [
    "TarStats", "TreeEvent", "walk_tree", "write_tree", "tar", "tar_index", "index_events", "index_flags",
    "DESYNC_TAR_FLAGS",
]

_OUT_BLOCK = 1 << 20  # buffer of tar's archive writes: one write syscall per MiB
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_ARENA_MAX = -8
_TRIM_THRESHOLD = 8 << 20
_ARENA_MAX = 2
_MALLOC_TUNED: list[bool] = []


def _bound_malloc() -> None:
    """Keep glibc's heap from growing with the archive size (once per process).

    The pipeline allocates and frees ~1 MiB buffers and chunk-sized bytes on
    several threads; glibc's *dynamic* mmap threshold then moves them onto
    the heap, whose top is rarely trimmed, and the peak RSS of ``tar -i``
    grew with the tree (165 MiB for /usr/share). A fixed trim threshold
    (which also fixes the mmap threshold) keeps it flat. At most two malloc
    arenas (instead of one per worker thread, each keeping up to the
    threshold) save another ~9 MiB at no measurable cost: /usr/share peaks
    at ~48 MiB. A no-op where ``mallopt`` does not exist (not glibc).
    """
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED.append(True)
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    mallopt(_M_ARENA_MAX, _ARENA_MAX)


@dataclass
class TarStats:
    """What ``tar`` archived, and for an index what was chunked and stored."""

    directories: int = 0
    files: int = 0  # regular files
    symlinks: int = 0
    devices: int = 0
    others: int = 0  # fifos and sockets
    payload_bytes: int = 0  # regular file content
    archive_bytes: int = 0  # size of the catar stream
    chunks: StoreStats | None = None  # tar_index only

    def to_dict(self) -> dict[str, int]:
        """The stats with desync-style dashed keys (chunk counts merged in)."""
        data = {k.replace("_", "-"): v for k, v in asdict(self).items() if k != "chunks"}
        if self.chunks is not None:
            data.update(self.chunks.to_dict())
        return data


def write_tree(writer: CatarWriter, events: Iterable[TreeEvent]) -> TarStats:
    """Feed walk events to ``writer`` (begin, enter/add/leave, finish); return what was written."""
    try:
        return _write_events(writer, events)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a walk stopped early releases its directory fds now


def _write_events(writer: CatarWriter, events: Iterable[TreeEvent]) -> TarStats:
    stats = TarStats()
    for _ in _encode_events(writer, events, stats):
        pass
    return stats


def _encode_events(writer: CatarWriter, events: Iterable[TreeEvent], stats: TarStats) -> Iterator[None]:
    """Feed ``events`` to ``writer``, counting into ``stats``; pause (yield) after each event.

    The pause comes before the walk moves on, so a payload the writer left
    pending is still readable then.
    """
    depth = 0
    pending = isinstance(writer, _ChunkingCatarWriter)  # large payloads are read after the pause
    for kind, entry, path, payload in events:
        if kind == "enter":
            if depth == 0:
                writer.begin(entry)  # type: ignore[arg-type]
            else:
                writer.enter(entry)  # type: ignore[arg-type]
            depth += 1
            stats.directories += 1
        elif kind == "file":
            if pending:
                writer.pending_path = path  # type: ignore[attr-defined]
            try:
                writer.add(entry, payload)  # type: ignore[arg-type]
            except FormatError:
                _raise_if_changed(path, entry, payload)  # type: ignore[arg-type]
                raise
            if payload is not None and not (pending and writer.pending is not None):  # type: ignore[attr-defined]
                _raise_if_changed(path, entry, payload)  # type: ignore[arg-type]
            if entry.mode & 0o170000 == stat.S_IFREG:  # type: ignore[union-attr]
                stats.files += 1
                stats.payload_bytes += entry.size  # type: ignore[union-attr]
            else:
                _count_entry(stats, entry)  # type: ignore[arg-type]
        elif kind == "leave":
            depth -= 1
            if depth == 0:
                writer.finish()
            else:
                writer.leave()
        else:
            raise ParameterError(f"unknown tree event {kind!r}")
        yield
    if depth != 0:
        raise FormatError("tree walk ended inside a directory")
    stats.archive_bytes = writer.offset


def _raise_if_changed(path: bytes, entry: Entry, payload: BinaryIO | None) -> None:
    """Raise :class:`InputChanged` if the file behind ``payload`` is no longer what the walk saw.

    Its size must still be ``entry.size`` and (unless the walk zeroed times)
    its mtime ``entry.mtime_ns``. A payload that is not a file (an event
    source of another kind) is not checked.
    """
    if payload is None:
        return
    try:
        st = os.fstat(payload.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and ValueError
        return
    if not stat.S_ISREG(st.st_mode):
        return
    if st.st_size != entry.size or (entry.mtime_ns and st.st_mtime_ns != entry.mtime_ns):
        raise InputChanged(os.fsdecode(path), f"size {entry.size} -> {st.st_size}")


def _count_entry(stats: TarStats, entry: Entry) -> None:
    kind = stat.S_IFMT(entry.mode)
    if kind == stat.S_IFREG:
        stats.files += 1
        stats.payload_bytes += entry.size
    elif kind == stat.S_IFLNK:
        stats.symlinks += 1
    elif kind in (stat.S_IFBLK, stat.S_IFCHR):
        stats.devices += 1
    else:
        stats.others += 1


def _check_source(source_dir: PathLike) -> None:
    """A missing source is a failure naming it (like a missing input file), not a usage error."""
    st = os.stat(source_dir)  # FileNotFoundError etc. name the path
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "source is not a directory", os.fsdecode(source_dir))


def tar(
    source_dir: PathLike,
    output: str | os.PathLike[str],
    *,
    feature_flags: int = DESYNC_TAR_FLAGS,
    one_file_system: bool = False,
    no_time: bool = False,
) -> TarStats:
    """Archive ``source_dir`` as a catar at ``output`` (``-``: stdout).

    The file appears under its name only when complete (temporary file,
    fsync, rename); a temporary file inside the tree is not archived. Raises
    :class:`OSError`, :class:`FormatError` or :class:`ParameterError`.
    """
    output = os.fspath(output)
    _check_source(source_dir)
    flags = normalize_feature_flags(feature_flags)
    if output == STDIO:
        stdout = sys.stdout.buffer
        stdout.flush()
        events = walk_tree(source_dir, flags, one_file_system, no_time)
        try:
            fd = stdout.fileno()
        except (AttributeError, OSError, ValueError):  # a replaced stdout (io.UnsupportedOperation)
            stats = write_tree(CatarWriter(stdout.write, flags), events)
            stdout.flush()
            return stats
        return _write_to_fd(fd, flags, events)
    with atomic_write(output) as f:
        st = os.fstat(f.fileno())
        events = walk_tree(source_dir, flags, one_file_system, no_time, _skip={(st.st_dev, st.st_ino)})
        return _write_to_fd(f.fileno(), flags, events, writeback=True)


def _write_to_fd(fd: int, flags: int, events: Iterable[TreeEvent], writeback: bool = False) -> TarStats:
    """Encode ``events`` into ``fd`` through a 1 MiB buffer (few, large write syscalls)."""
    out = _FdOutput(fd, _OUT_BLOCK, writeback)
    stats = write_tree(_FdCatarWriter(out, flags), events)
    out.flush()
    return stats


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    func.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", func)


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2  # start writeback of dirty pages, do not wait
_WRITEBACK_STEP = 8 << 20
_SENDFILE_MIN = 64 * 1024  # smaller payloads are read and buffered with their records
_SENDFILE_BLOCK = 1 << 30
_NO_SENDFILE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.ESPIPE}


class _FdOutput:
    """The archive's way to an fd: a write buffer, kernel-side copies, early writeback.

    :meth:`write` collects records and small payloads and writes them in
    ``block``-sized pieces; :meth:`copy` flushes and has the kernel copy a
    file's content (``sendfile``, one copy instead of read + write, to a file
    or a pipe). With ``writeback`` (the archive is a regular file that will
    be fsync-ed), the written range is handed to the disk every 8 MiB
    (``sync_file_range``), so the final fsync waits only for the tail.
    """

    __slots__ = ("block", "buf", "fd", "sendfile", "synced", "writeback", "written")

    def __init__(self, fd: int, block: int, writeback: bool) -> None:
        self.fd = fd
        self.block = block
        self.buf = bytearray()
        self.written = 0  # bytes handed to the fd
        self.synced = 0  # bytes whose writeback was started
        self.writeback = writeback and _SYNC_FILE_RANGE is not None
        self.sendfile = hasattr(os, "sendfile")

    def write(self, data: bytes) -> None:
        """Append ``data`` to the archive."""
        buf = self.buf
        buf += data
        if len(buf) >= self.block:
            self.flush()

    def flush(self) -> None:
        """Write out the buffer."""
        buf = self.buf
        if not buf:
            return
        view, done = memoryview(buf), 0
        with view:
            while done < len(buf):
                done += os.write(self.fd, view[done:])
        self.buf = bytearray()
        self._advance(done)

    def _advance(self, count: int) -> None:
        self.written += count
        if self.writeback and self.written - self.synced >= _WRITEBACK_STEP:
            _SYNC_FILE_RANGE(self.fd, self.synced, self.written - self.synced, _SYNC_FILE_RANGE_WRITE)  # type: ignore[misc]
            self.synced = self.written

    def copy(self, src: int, offset: int, count: int) -> int:
        """Copy up to ``count`` bytes of fd ``src`` from ``offset``; fewer at its end, 0 if unsupported."""
        self.flush()
        done = 0
        while done < count:
            try:
                sent = os.sendfile(self.fd, src, offset + done, min(count - done, _SENDFILE_BLOCK))
            except OSError as exc:
                if done or exc.errno not in _NO_SENDFILE:
                    raise
                self.sendfile = False
                return 0
            if not sent:
                break
            done += sent
            self._advance(sent)
        return done


class _FdCatarWriter(CatarWriter):
    """A :class:`CatarWriter` into an :class:`_FdOutput`; large file payloads are copied by the kernel."""

    def __init__(self, out: _FdOutput, feature_flags: int) -> None:
        super().__init__(out.write, feature_flags)
        self._out = out

    def copy_payload(self, entry: Entry, payload: BinaryIO | None, size: int) -> None:
        """Copy a large file's payload with ``sendfile`` when it is a plain file and the output allows."""
        out = self._out
        if type(payload) is not io.FileIO or size < _SENDFILE_MIN or not out.sendfile:
            super().copy_payload(entry, payload, size)
            return
        start = payload.tell()  # FileIO: the fd's own offset, so sendfile reads the same bytes
        copied = out.copy(payload.fileno(), start, size)
        self.offset += copied
        if copied:
            payload.seek(start + copied)
        if copied < size:
            if out.sendfile:  # the file ended early
                raise self.payload_error(entry, payload, size - copied)
            super().copy_payload(entry, payload, size - copied)


def index_flags(feature_flags: int, digest: Digest) -> int:
    """The feature flags of a chunked archive and its caidx: ``feature_flags`` with the digest's bit.

    casync clears CA_FORMAT_SHA512_256 for ``--digest=sha256`` in the ENTRY
    records and the index header alike; this normalizes the same way.
    """
    return normalize_feature_flags((feature_flags & ~CA_FORMAT_SHA512_256) | digest.flag)


class _ChunkingCatarWriter(CatarWriter):
    """A :class:`CatarWriter` into a :class:`StreamCutter`; large payloads are left pending.

    Instead of copying a payload above the small-file size itself, the
    writer notes it in :attr:`pending` (and counts it in :attr:`offset`);
    :func:`_archive_chunks` then reads it straight into the cutter's buffer,
    handing out chunks as they complete, before the walk moves on.
    """

    def __init__(self, cutter: StreamCutter, feature_flags: int) -> None:
        super().__init__(cutter.write, feature_flags)
        self.pending: tuple[Entry, BinaryIO | None, int] | None = None
        self.pending_path = b""  # the file whose payload is pending (for InputChanged)

    def copy_payload(self, entry: Entry, payload: BinaryIO | None, size: int) -> None:
        """Leave the payload to :func:`_payload_chunks` (counted in :attr:`offset` now)."""
        self.pending = (entry, payload, size)
        self.offset += size


def _archive_chunks(
    events: Iterable[TreeEvent], flags: int, params: ChunkerParams, result: list[TarStats]
) -> Generator[tuple[int, bytes], None, None]:
    """Encode ``events`` as a catar and yield its chunks ``(start, bytes)``; leave the stats in ``result``.

    Runs wherever it is pulled from (a worker of the pool, under its input
    lock): no archive thread, no pipe, each byte copied once into the
    chunker's buffer. The walk is closed when this generator ends or is closed.
    """
    cutter = StreamCutter(params)
    writer = _ChunkingCatarWriter(cutter, flags)
    stats = TarStats()
    try:
        for _ in _encode_events(writer, events, stats):
            pending = writer.pending
            if pending is not None:
                writer.pending = None
                path = writer.pending_path
                try:
                    yield from _payload_chunks(writer, cutter, *pending)
                except FormatError:
                    _raise_if_changed(path, pending[0], pending[1])
                    raise
                _raise_if_changed(path, pending[0], pending[1])
            if cutter.ready:
                yield from cutter.take()
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # a walk stopped early releases its directory fds now
    yield from cutter.finish()
    result.append(stats)


def _payload_chunks(
    writer: _ChunkingCatarWriter, cutter: StreamCutter, entry: Entry, payload: BinaryIO | None, left: int
) -> Iterator[tuple[int, bytes]]:
    """Read ``left`` bytes of ``payload`` into ``cutter``, yielding the chunks that complete."""
    if payload is None:
        raise writer.payload_error(entry, payload, left)
    readinto = payload.readinto if isinstance(payload, READINTO_TYPES) else None
    while left:
        room = cutter.room()  # cuts off the complete chunks when the buffer is full
        if cutter.ready:
            yield from cutter.take()
        if readinto is not None:
            got = cutter.read_from(readinto, min(left, room)) or 0
        else:
            data = payload.read(min(left, room)) or b""  # type: ignore[union-attr]
            got = len(data)
            if got > left:
                raise writer.payload_error(entry, payload, left - got)
            cutter.write(data)
        if not got:
            raise writer.payload_error(entry, payload, left)
        left -= got


def tar_index(
    source_dir: PathLike,
    index_path: str | os.PathLike[str],
    store: WriteStore | None,
    *,
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    feature_flags: int = DESYNC_TAR_FLAGS,
    one_file_system: bool = False,
    no_time: bool = False,
    compression: str | None = None,
    progress: Progress | None = None,
    options_for: Callable[[str], StoreOptions] | None = None,
) -> TarStats:
    """Archive ``source_dir``, chunk the stream into ``store`` and write a caidx.

    The archive's and the index's feature flags are :func:`index_flags` of
    ``feature_flags`` and ``digest``, as casync writes them. See
    :func:`index_events` for the pipeline (and ``options_for``). Without a
    store only the index is written.
    """
    _check_source(source_dir)
    flags = index_flags(feature_flags, digest)
    events = walk_tree(source_dir, flags, one_file_system, no_time)
    return index_events(
        events, index_path, store, feature_flags=flags, params=params, digest=digest,
        concurrency=concurrency, compression=compression, progress=progress, options_for=options_for,
    )


def index_events(
    events: Iterable[TreeEvent],
    index_path: str | os.PathLike[str],
    store: WriteStore | None,
    *,
    feature_flags: int = DESYNC_TAR_FLAGS,
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    compression: str | None = None,
    progress: Progress | None = None,
    options_for: Callable[[str], StoreOptions] | None = None,
) -> TarStats:
    """Encode ``events`` as a catar, chunk it into ``store`` and write its caidx.

    The archive is encoded into the chunker as the pool's workers ask for
    chunks (one at a time, under the pool's input lock; no temporary catar);
    chunks are hashed, compressed and stored on the worker pool ``make``
    uses, and the index replaces ``index_path``
    (``-``: stdout) only when complete — an error on either side (the walk,
    the encoder, the store) leaves no index. ``index_path`` may be a remote
    location; ``options_for`` gives its store's options (see
    :func:`~.indexio.index_writer`). The flags used are :func:`index_flags`
    of ``feature_flags`` and ``digest``.
    """
    index_path = os.fspath(index_path)
    if store is not None:
        store = require_writable(store)
    _bound_malloc()
    flags = index_flags(feature_flags, digest)
    header = IndexHeader(flags, params.min_size, params.avg_size, params.max_size)
    workers = default_workers(concurrency)
    threads, batch = (workers + 1, 4) if store is None else (store.write_workers(workers), 2)
    chunks = StoreStats()
    result: list[TarStats] = []
    spans = _archive_chunks(events, flags, params, result)
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.closing(spans))
        if store is not None:
            stack.enter_context(store.writing())
        stack.enter_context(phase(progress, "Storing" if store else "Chunking", 0))
        out = stack.enter_context(index_writer(index_path, header, options_for))
        work = ChunkWorker(None, store, digest, compression)
        with ThreadMap(work, spans, threads, 4 * batch * threads, batch=batch) as results:
            for cid, size, fate, nbytes in results:
                out.add(cid, size)
                chunks.count(fate, size, nbytes)
                if progress is not None:
                    progress.add(size)
        if not result:
            raise RuntimeError("tar: the archive ended without its statistics")
        if store is not None:
            store.flush()  # no index names a chunk that is not on disk
    stats = result[0]
    chunks.chunks_unique = chunks.chunks_total - chunks.chunks_duplicate
    stats.chunks = chunks
    return stats
