"""casync's content-defined chunker: where a blob is cut into chunks.

This module owns the chunking API of pycasync: the chunk-size parameters
(:class:`ChunkerParams`, parsed from desync's ``MIN:AVG:MAX`` KiB notation),
chunking an in-memory or memory-mapped buffer (:func:`iter_chunks`, optionally
searching for cuts in several threads), the same search over a file read by
offset into a few reused buffers (:func:`iter_file_chunks`), and chunking a non-seekable stream,
pulled (:func:`chunk_stream`) or pushed in pieces (:class:`StreamCutter`).
The cut search itself lives in one of two backends with identical
functions and results: the C extension
``casync_format._chunker`` (fast, releases the GIL) or the pure-Python
reference :mod:`casync_format._buzhash`. Which one is live is chosen by
the one loader of the extension, :mod:`casync_format._accel`, and named by
:data:`BACKEND`; ``PYCASYNC_PUREPYTHON=1`` forces the pure-Python one,
``PYCASYNC_REQUIRE_C=1`` makes a missing C module an error.
Cuts are identical to casync's for every parameter set accepted here.
"""

from __future__ import annotations

import io
import mmap
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from queue import Empty, SimpleQueue
from types import ModuleType
from typing import Callable, Protocol, Union

from . import _accel, _buzhash
from .constants import CA_CHUNK_SIZE_LIMIT_MAX, CA_CHUNKER_WINDOW_SIZE
from .errors import ParameterError

__all__ = [
    "BACKEND", "ChunkerParams", "DEFAULT_PARAMS", "iter_chunks", "iter_file_chunks", "chunk_stream",
    "StreamCutter", "READINTO_TYPES",
]

Buffer = Union[bytes, bytearray, memoryview, mmap.mmap]


class _Readable(Protocol):
    """What :func:`chunk_stream` reads from: a binary file object (``read(n)``)."""

    def read(self, size: int = ..., /) -> bytes | None: ...


_KIB = 1024
_SERIAL_STEP = 8 * 1024 * 1024  # bytes scanned per call to the backend when serial
_SEGMENT = 16 * 1024 * 1024  # default size of a parallel worker's segment
_IN_FLIGHT_PER_WORKER = 2  # segments queued per worker: bounds memory


_C_MODULE: ModuleType | None = _accel.c_module("chunker")  # the extension, when it cuts
_LIVE: ModuleType = _C_MODULE if _C_MODULE is not None else _buzhash
BACKEND: str = _accel.backend("chunker")
"""``"c"`` or ``"python"``: the live cut search (see :mod:`casync_format._accel`)."""


def _backends() -> dict[str, ModuleType]:
    """The importable backends by name (``"python"`` always, ``"c"`` if built)."""
    found = {"python": _buzhash}
    if _C_MODULE is not None:
        found["c"] = _C_MODULE
    return found


def _discriminator(min_size: int, avg_size: int, max_size: int) -> int:
    """casync's cut discriminator for an average size, clamped to [min, max].

    The formula is casync's CA_CHUNKER_DISCRIMINATOR_FROM_AVG in double
    arithmetic, truncated like C's conversion to size_t. Above an average of
    about 9.3 MiB its denominator turns negative; casync on x86-64 then gets
    a wrapped, huge value, which the clamp turns into max_size; we do the same.
    """
    value = int(avg_size / (-1.42888852e-7 * avg_size + 1.33237515))
    if value < 0:
        value += 1 << 64
    return max(min_size, min(value, max_size))


@dataclass(frozen=True)
class ChunkerParams:
    """Chunk size limits in bytes: min_size <= avg_size <= max_size.

    min_size must exceed casync's 48-byte hash window and max_size must not
    exceed casync's limit of 128 MiB; anything else raises ParameterError.
    """

    min_size: int
    avg_size: int
    max_size: int

    def __post_init__(self) -> None:
        sizes = (self.min_size, self.avg_size, self.max_size)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
            raise ParameterError(f"chunk sizes must be integers, got {sizes!r}")
        if self.min_size <= CA_CHUNKER_WINDOW_SIZE:
            raise ParameterError(
                f"minimum chunk size {self.min_size} must be larger than "
                f"the {CA_CHUNKER_WINDOW_SIZE}-byte hash window"
            )
        if self.min_size > self.avg_size:
            raise ParameterError(
                f"minimum chunk size {self.min_size} is larger than the average {self.avg_size}"
            )
        if self.avg_size > self.max_size:
            raise ParameterError(
                f"average chunk size {self.avg_size} is larger than the maximum {self.max_size}"
            )
        if self.max_size > CA_CHUNK_SIZE_LIMIT_MAX:
            raise ParameterError(
                f"maximum chunk size {self.max_size} exceeds casync's limit "
                f"of {CA_CHUNK_SIZE_LIMIT_MAX} bytes"
            )

    @property
    def discriminator(self) -> int:
        """The divisor of casync's cut test ``h % d == d - 1``."""
        return _discriminator(self.min_size, self.avg_size, self.max_size)

    @classmethod
    def from_string(cls, s: str) -> ChunkerParams:
        """Parse desync's ``MIN:AVG:MAX`` notation in KiB, e.g. ``"16:64:256"``."""
        fields = [f.strip() for f in str(s).split(":")]
        if len(fields) != 3 or not all(f.isascii() and f.isdigit() for f in fields):
            raise ParameterError(f"invalid chunk size {s!r}: expected MIN:AVG:MAX in KiB, e.g. 16:64:256")
        try:
            return cls(*(int(f) * _KIB for f in fields))
        except ParameterError as exc:
            raise ParameterError(f"invalid chunk size {s!r}: {exc}") from None


DEFAULT_PARAMS = ChunkerParams(16 * _KIB, 64 * _KIB, 256 * _KIB)


def _byte_views(data: Buffer) -> tuple[memoryview, memoryview]:
    """A flat unsigned-byte view of ``data`` (and the view it was cast from)."""
    base = memoryview(data)
    if not base.c_contiguous:
        base.release()
        raise ParameterError("the data to chunk must be a contiguous buffer")
    if base.ndim == 1 and base.format in ("B", "b", "c"):
        return base, base
    return base, base.cast("B")


def _check_workers(workers: int) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ParameterError(f"workers must be a positive integer, got {workers!r}")


def iter_chunks(
    data: Buffer,
    params: ChunkerParams,
    workers: int = 1,
    *,
    backend: ModuleType | None = None,
    segment_size: int | None = None,
) -> Iterator[tuple[int, int]]:
    """Yield ``(start, size)`` of each chunk of ``data``, in order.

    The chunks cover ``data`` exactly; empty data has none. With
    ``workers > 1`` the cut search runs in that many threads over segments of
    ``segment_size`` bytes (default: 16 MiB rounded up to a multiple of
    ``max_size``), a bounded number of segments at a time, so memory stays
    flat even for a huge mmap; the result is identical to ``workers=1``.
    ``backend`` overrides the live backend module (for tests). The buffer is
    held (not copied) until the iterator is exhausted or closed.
    """
    _check_workers(workers)
    if segment_size is not None and (not isinstance(segment_size, int) or segment_size < 1):
        raise ParameterError(f"segment_size must be a positive integer, got {segment_size!r}")
    base, view = _byte_views(data)
    module = backend if backend is not None else _LIVE
    if workers == 1:
        return _held(base, view, _iter_serial(view, params, module))
    seg = segment_size or -(-_SEGMENT // params.max_size) * params.max_size
    return _held(base, view, _iter_parallel(view, params, module, workers, seg))


_Chunks = Generator[tuple[int, int], None, None]


def _held(base: memoryview, view: memoryview, chunks: _Chunks) -> _Chunks:
    """Run ``chunks``, then release the views it reads from."""
    try:
        yield from chunks
    finally:
        chunks.close()
        view.release()
        base.release()


def _iter_serial(view: memoryview, params: ChunkerParams, module: ModuleType) -> _Chunks:
    size = view.nbytes
    args = (params.min_size, params.max_size, params.discriminator)
    pos = 0
    while pos < size:
        limit = pos + _SERIAL_STEP
        cuts = module.find_cuts(view, pos, size, *args, limit)
        for cut in cuts:
            yield pos, cut - pos
            pos = cut
        if not cuts or cuts[-1] < limit:  # no further cut before the end
            if pos < size:
                yield pos, size - pos
            return


def _iter_parallel(
    view: memoryview, params: ChunkerParams, module: ModuleType, workers: int, seg: int
) -> _Chunks:
    """The parallel search over one buffer: every segment is a view of it."""
    return _stitch(lambda start: (view, 0, _keep), view.nbytes, params, module, workers, seg)


def _keep() -> None:
    """Release nothing: the segment is a view of a buffer the caller holds."""


# A loaded segment: a buffer, the offset of its first byte in the input, and
# what to call once its cuts are used (return a reused buffer).
_Loaded = tuple[memoryview, int, Callable[[], None]]


def _stitch(
    load: Callable[[int], _Loaded],
    size: int,
    params: ChunkerParams,
    module: ModuleType,
    workers: int,
    seg: int,
) -> _Chunks:
    """Search segments in threads, then stitch their cut chains together.

    ``load(start)`` gives a buffer holding the segment at ``start`` plus one
    maximum chunk (or up to the end). Each worker follows the chain of cuts
    that would begin if a chunk started at its segment's first byte, up to
    its first cut at or past the segment's end. A chunk's end depends only on
    its start, so the true chain is walked through the workers' chains,
    computing here only the few cuts before it lands on one of theirs.
    """
    args = (params.min_size, params.max_size, params.discriminator)

    def search(start: int) -> tuple[_Loaded, list[int]]:
        loaded = load(start)
        buf, origin, release = loaded
        try:
            limit = min(start + seg, size) - origin
            return loaded, module.find_cuts(buf, start - origin, buf.nbytes, *args, limit)
        except BaseException:
            release()
            raise

    starts = iter(range(0, size, seg))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pycasync-cut") as pool:
        pending: deque[tuple[int, Future[tuple[_Loaded, list[int]]]]] = deque(
            (s, pool.submit(search, s)) for s in islice(starts, workers * _IN_FLIGHT_PER_WORKER)
        )
        pos = 0
        try:
            while pending:
                seg_start, future = pending.popleft()
                (buf, origin, release), cuts = future.result()
                following = next(starts, None)
                if following is not None:
                    pending.append((following, pool.submit(search, following)))
                try:
                    successor = dict(zip([seg_start - origin, *cuts], cuts))
                    seg_end = min(seg_start + seg, size)
                    while pos < seg_end:
                        end = successor.get(pos - origin)
                        if end is None:
                            end = module.find_cut(buf, pos - origin, buf.nbytes, *args)
                            if end < 0:  # the rest is the last chunk
                                end = buf.nbytes
                        end += origin
                        yield pos, end - pos
                        pos = end
                finally:
                    release()
        finally:
            for _, future in pending:
                future.cancel()


def iter_file_chunks(
    read_into: Callable[[memoryview, int], None],
    size: int,
    params: ChunkerParams,
    workers: int = 1,
    *,
    backend: ModuleType | None = None,
    segment_size: int | None = None,
) -> Iterator[tuple[int, int]]:
    """Yield ``(start, size)`` of each chunk of ``size`` bytes read by ``read_into``.

    The same chunks as :func:`iter_chunks` over those bytes, without holding
    them in memory or mapping them: ``read_into(view, offset)`` must fill
    ``view`` with the input's bytes at ``offset`` (or raise; a file read with
    ``pread`` that comes up short should raise, as the file changed). The
    segments are read into at most ``2 * workers + 1`` reused buffers of
    ``segment_size + max_size`` bytes.
    """
    _check_workers(workers)
    if segment_size is not None and (not isinstance(segment_size, int) or segment_size < 1):
        raise ParameterError(f"segment_size must be a positive integer, got {segment_size!r}")
    module = backend if backend is not None else _LIVE
    seg = segment_size or -(-_SEGMENT // params.max_size) * params.max_size
    span = min(seg + params.max_size, size)  # no buffer larger than the input
    free: SimpleQueue[bytearray] = SimpleQueue()

    def load(start: int) -> _Loaded:
        try:
            buf = free.get_nowait()
        except Empty:
            buf = bytearray(span)
        whole = memoryview(buf)
        view = whole[: min(span, size - start)]
        whole.release()

        def release() -> None:
            view.release()
            free.put(buf)

        try:
            read_into(view, start)
        except BaseException:
            release()
            raise
        return view, start, release

    return _stitch(load, size, params, module, workers, seg)


def chunk_stream(
    fileobj: _Readable, params: ChunkerParams, *, backend: ModuleType | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield ``(start, chunk_bytes)`` for each chunk read from a binary stream.

    For input that cannot be mapped or seeked (a pipe, stdin). Reads in
    blocks of up to max(max_size, 1 MiB) (straight into the chunker's buffer
    when the file has ``readinto``) and keeps at most one block plus one
    maximum chunk buffered; cuts are identical to :func:`iter_chunks`.
    """
    return _stream(fileobj, StreamCutter(params, backend=backend))


#: File types whose ``readinto`` reads the stream itself, so data can go straight into
#: a :class:`StreamCutter` (:meth:`StreamCutter.read_from`); other readers go through ``read``.
READINTO_TYPES = (io.FileIO, io.BufferedReader, io.BytesIO)


def _stream(fileobj: _Readable, cutter: StreamCutter) -> Iterator[tuple[int, bytes]]:
    readinto = fileobj.readinto if isinstance(fileobj, READINTO_TYPES) else None
    while True:
        room = cutter.room()  # cuts off the complete chunks when the buffer is full
        if cutter.ready:
            yield from cutter.take()
        if readinto is not None:
            got = cutter.read_from(readinto, room)
        else:
            block = fileobj.read(room)
            got = None if block is None else len(block)
            if block:
                cutter.write(block)
        if got is None:
            raise ParameterError("chunk_stream needs a blocking file (read() returned None)")
        if not got:
            yield from cutter.finish()
            return


class StreamCutter:
    """The push form of :func:`chunk_stream`: feed a stream in pieces, take its chunks.

    :meth:`write` copies bytes in, :meth:`read_from` has a ``readinto``
    function fill the buffer directly (one copy from a file). Whenever the
    buffer is full, every chunk that ends in it is cut off and queued
    (:attr:`ready`; :meth:`take` hands them out as ``(start, bytes)``);
    :meth:`finish` ends the stream and returns the rest, the last chunk
    included. The buffer holds ``block`` bytes plus one maximum chunk, so
    memory is bounded by that plus the chunks not yet taken (at most one
    :meth:`write` worth). Cuts are identical to :func:`iter_chunks`.
    """

    def __init__(self, params: ChunkerParams, *, backend: ModuleType | None = None) -> None:
        module = backend if backend is not None else _LIVE
        self._find_cuts = module.find_cuts
        self._args = (params.min_size, params.max_size, params.discriminator)
        self.block = max(params.max_size, 1024 * _KIB)
        """How much a read of the stream should ask for (what :func:`chunk_stream` reads at a time)."""
        self._buf = bytearray(self.block + params.max_size)
        self._fill = 0  # bytes of the stream in the buffer
        self._offset = 0  # stream offset of the buffer's first byte
        self._ready: list[tuple[int, bytes]] = []
        self._finished = False

    @property
    def ready(self) -> bool:
        """Whether :meth:`take` has chunks to hand out."""
        return bool(self._ready)

    def take(self) -> list[tuple[int, bytes]]:
        """The complete chunks cut so far, as ``(start, bytes)``, oldest first; forgets them."""
        ready, self._ready = self._ready, []
        return ready

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the stream."""
        size = len(data)
        if self._fill + size > len(self._buf):
            self._check_open()
            self._cut()
            if self._fill + size > len(self._buf):  # one write larger than the free space
                self._buf.extend(bytes(self._fill + size - len(self._buf)))
        self._buf[self._fill : self._fill + size] = data
        self._fill += size

    def read_from(self, readinto: Callable[[memoryview], int | None], size: int) -> int | None:
        """Append up to ``size`` bytes that ``readinto(buffer)`` puts into the buffer.

        Returns what ``readinto`` returned: the count, 0 at the end, None for no data yet.
        """
        end = self._fill + min(size, self.room())
        with memoryview(self._buf) as view, view[self._fill : end] as free:
            got = readinto(free)
        if got:
            self._fill += got
        return got

    def room(self) -> int:
        """Free space in the buffer (cutting off complete chunks first if it is full)."""
        self._check_open()
        if self._fill == len(self._buf):
            self._cut()
        return len(self._buf) - self._fill

    def finish(self) -> list[tuple[int, bytes]]:
        """End the stream: every chunk not taken yet, the last (shorter) one included."""
        self._check_open()
        self._cut()
        if self._fill:
            self._ready.append((self._offset, bytes(self._buf[: self._fill])))
            self._offset += self._fill
            self._fill = 0
        self._finished = True
        self._buf = bytearray()
        return self.take()

    def _check_open(self) -> None:
        if self._finished:
            raise ParameterError("stream cutter: the stream has been finished")

    def _cut(self) -> None:
        """Queue every chunk that ends in the buffer; keep the unfinished tail (< max_size)."""
        fill, buf = self._fill, self._buf
        cuts = self._find_cuts(buf, 0, fill, *self._args, fill)
        if not cuts:
            return
        ready, offset, prev = self._ready, self._offset, 0
        with memoryview(buf) as view:
            for cut in cuts:
                with view[prev:cut] as piece:
                    ready.append((offset + prev, bytes(piece)))
                prev = cut
        buf[: fill - prev] = buf[prev:fill]
        self._fill = fill - prev
        self._offset = offset + prev
