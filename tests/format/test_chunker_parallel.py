"""Tests of casync_format.chunker: C/Python parity, parallel workers, file and stream chunking.

Property tests check that the C backend cuts exactly where the pure-Python one
does (``iter_chunks`` and ``find_cut``), that ``workers`` and segment sizes
never change the cuts, that ``iter_file_chunks`` equals buffer chunking while
reading each byte about once and stops on a read error, and that
``chunk_stream`` and ``StreamCutter`` cut a trickled or pushed stream as
``iter_chunks`` cuts the whole buffer, with bounded buffering. Tests taking
the ``backend`` fixture run once per backend. Pure-Python inputs stay small
(it scans a few MB/s).
"""

from __future__ import annotations

import io
import mmap
import os
import random
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import _buzhash
from casync_format.chunker import (
    DEFAULT_PARAMS,
    ChunkerParams,
    StreamCutter,
    chunk_stream,
    iter_chunks,
    iter_file_chunks,
)
from casync_format.errors import ParameterError
from tests.support import rng_bytes
from tests.support.chunker_helpers import MIB, c_module, chunk_params, ends

# --------------------------------------------------------------------------- parity


some_bytes = st.one_of(
    st.binary(max_size=6000),
    st.builds(rng_bytes, st.integers(0, 30_000), st.integers(0, 1 << 32)),
)


@given(data=some_bytes, params=chunk_params())
def test_parity_iter_chunks(data: bytes, params: ChunkerParams) -> None:
    c = c_module()
    expect = ends(data, params, _buzhash)
    assert ends(data, params, c) == expect
    assert ends(data, params, c, workers=2, segment_size=params.max_size + 17) == expect
    assert expect[-1] == len(data) if data else expect == []
    sizes = [b - a for a, b in zip([0, *expect], expect)]
    assert all(params.min_size <= s <= params.max_size for s in sizes[:-1])
    assert not sizes or sizes[-1] <= params.max_size


@given(
    data=some_bytes,
    start=st.floats(0, 1),
    stop=st.floats(0, 1),
    low=st.integers(48, 400),
    extra=st.integers(0, 3000),
    d=st.one_of(st.integers(1, 64), st.integers(1, 1 << 31)),
)
def test_parity_find_cut(data: bytes, start: float, stop: float, low: int, extra: int, d: int) -> None:
    c = c_module()
    s = int(start * len(data))
    e = s + int(stop * (len(data) - s))
    args = (data, s, e, low, low + extra, d)
    assert c.find_cut(*args) == _buzhash.find_cut(*args)
    assert c.find_cuts(*args, e // 2) == _buzhash.find_cuts(*args, e // 2)


def test_workers_identical_to_serial(backend: ModuleType) -> None:
    if backend is _buzhash:
        data = rng_bytes(60_000, 4) + bytes(10_000) + rng_bytes(3000, 5) * 10
        grid = [(ChunkerParams(64, 256, 1024), [None, 4099, 700])]
    else:
        data = rng_bytes(3 * MIB, 4) + bytes(MIB) + rng_bytes(50_000, 5) * 40 + rng_bytes(12345, 6)
        grid = [
            (DEFAULT_PARAMS, [None, MIB, 1_000_003, 300_001, 100_000]),
            (ChunkerParams(64, 256, 1024), [None, 65_536, 77_777]),
            (ChunkerParams(1000, 1000, 1000), [None, 4096]),  # fixed size, segments never aligned
        ]
    for params, segments in grid:
        expect = ends(data, params, backend)
        for workers in (2, 3):
            for seg in segments:
                assert ends(data, params, backend, workers=workers, segment_size=seg) == expect, (
                    params,
                    workers,
                    seg,
                )


def test_iter_chunks_empty_and_errors(backend: ModuleType) -> None:
    for workers in (1, 2):
        assert list(iter_chunks(b"", DEFAULT_PARAMS, workers, backend=backend)) == []
    assert list(iter_chunks(b"x", DEFAULT_PARAMS, backend=backend)) == [(0, 1)]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ParameterError, match="workers"):
            iter_chunks(b"abc", DEFAULT_PARAMS, bad)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="segment_size"):
        iter_chunks(b"abc", DEFAULT_PARAMS, 2, segment_size=0)
    with pytest.raises(ParameterError, match="contiguous"):
        iter_chunks(memoryview(b"abcdef")[::2], DEFAULT_PARAMS)


def test_parallel_early_close_releases_buffer(tmp_path: os.PathLike[str]) -> None:
    c = c_module()
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as f:
        f.write(rng_bytes(4 * MIB, 7))
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    chunks = iter_chunks(mapped, DEFAULT_PARAMS, 2, backend=c, segment_size=MIB)
    first = [next(chunks) for _ in range(3)]
    assert first[0][0] == 0
    chunks.close()  # type: ignore[attr-defined]
    mapped.close()  # would raise BufferError if a view were still held


def _reader(data: bytes, reads: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    whole = memoryview(data)

    def read_into(view: memoryview, offset: int) -> None:
        if reads is not None:
            reads.append((offset, len(view)))
        view[:] = whole[offset : offset + len(view)]

    return read_into


@given(data=some_bytes, params=chunk_params(), workers=st.integers(1, 3), seg=st.integers(1, 9000))
def test_file_chunks_equal_buffer_chunks(data: bytes, params: ChunkerParams, workers: int, seg: int) -> None:
    """Chunking by reads into reused segment buffers cuts exactly as chunking the whole buffer."""
    expect = list(iter_chunks(data, params))
    reads: list[tuple[int, int]] = []
    got = iter_file_chunks(_reader(data, reads), len(data), params, workers, segment_size=seg)
    assert list(got) == expect
    # Every read stays inside the input and no buffer exceeds a segment plus a maximum chunk.
    assert all(off >= 0 and off + n <= len(data) and n <= seg + params.max_size for off, n in reads)


def test_file_chunks_big_input_reads_each_byte_about_once(backend: ModuleType) -> None:
    data = rng_bytes(3 * MIB, 9) + bytes(MIB) + rng_bytes(40_000, 3) * 30
    reads: list[tuple[int, int]] = []
    got = list(iter_file_chunks(_reader(data, reads), len(data), DEFAULT_PARAMS, 2, backend=backend,
                                segment_size=MIB))
    assert got == list(iter_chunks(data, DEFAULT_PARAMS, backend=backend))
    assert sum(n for _, n in reads) <= len(data) * 1.3  # a segment plus one maximum chunk each


def test_file_chunks_read_error_propagates_and_stops() -> None:
    data = rng_bytes(2 * MIB, 1)

    def failing(view: memoryview, offset: int) -> None:
        if offset >= MIB:
            raise OSError(5, "boom")
        view[:] = data[offset : offset + len(view)]

    with pytest.raises(OSError, match="boom"):
        list(iter_file_chunks(failing, len(data), DEFAULT_PARAMS, 2, segment_size=256 * 1024))


# --------------------------------------------------------------------------- streams


class Trickle(io.RawIOBase):
    """A non-seekable reader returning short reads, recording how far it has read."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = data
        self._rng = random.Random(seed)
        self.pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        take = self._rng.randint(1, max(1, n)) if n > 0 else len(self._data)
        out = self._data[self.pos : self.pos + take]
        self.pos += len(out)
        return out


def test_chunk_stream_matches_iter_chunks(backend: ModuleType) -> None:
    size = 120_000 if backend is _buzhash else 5 * MIB
    data = rng_bytes(size, 8) + bytes(size // 4)
    for params in (ChunkerParams(1024, 4096, 16384), DEFAULT_PARAMS):
        expect = ends(data, params, backend)
        reader = Trickle(data, 9)
        got, pos = [], 0
        for start, chunk in chunk_stream(reader, params, backend=backend):
            assert start == pos and chunk == data[pos : pos + len(chunk)]
            pos += len(chunk)
            got.append(pos)
            # bounded buffering: at most one read block plus one maximum chunk ahead
            assert reader.pos - pos <= max(params.max_size, MIB) + params.max_size
        assert got == expect
        assert [s + len(b) for s, b in chunk_stream(io.BytesIO(data), params, backend=backend)] == expect
    assert list(chunk_stream(io.BytesIO(b""), DEFAULT_PARAMS, backend=backend)) == []


def test_chunk_stream_rejects_non_blocking() -> None:
    class NonBlocking(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, n: int = -1) -> None:
            return None

    with pytest.raises(ParameterError, match="blocking"):
        list(chunk_stream(NonBlocking(), DEFAULT_PARAMS))  # type: ignore[arg-type]


def _push(cutter: StreamCutter, data: bytes, seed: int) -> list[tuple[int, bytes]]:
    """Feed ``data`` to ``cutter`` in random pieces, by write() and by read_from(); collect the chunks."""
    rng, source, out, pos = random.Random(seed), io.BytesIO(data), [], 0
    while pos < len(data):
        piece = rng.choice((1, 100, 5000, 70_000, 300_000, 3 * MIB))
        if rng.random() < 0.5:
            cutter.write(data[pos : pos + piece])
            pos += len(data[pos : pos + piece])
        else:
            got = cutter.read_from(source.readinto, min(piece, len(data) - pos))
            assert got and got <= piece
            pos += got
        source.seek(pos)
        assert cutter.ready or not cutter.take()
        out += cutter.take()
    return out + cutter.finish()


def test_stream_cutter_matches_iter_chunks(backend: ModuleType) -> None:
    size = 150_000 if backend is _buzhash else 6 * MIB
    data = rng_bytes(size, 21) + bytes(size // 3) + rng_bytes(size // 5, 22)
    for params in (ChunkerParams(1024, 4096, 16384), DEFAULT_PARAMS):
        chunks = _push(StreamCutter(params, backend=backend), data, 23)
        assert b"".join(c for _, c in chunks) == data
        assert [s for s, _ in chunks] == [0, *ends(data, params, backend)[:-1]]
        assert [s + len(c) for s, c in chunks] == ends(data, params, backend)
    empty = StreamCutter(DEFAULT_PARAMS, backend=backend)
    empty.write(b"")
    assert empty.finish() == []


def test_stream_cutter_bounds_and_misuse() -> None:
    params = ChunkerParams(1024, 4096, 16384)
    cutter = StreamCutter(params)
    assert cutter.block == MIB
    data, written, taken = rng_bytes(4 * MIB, 24), 0, 0
    for pos in range(0, len(data), 1000):
        cutter.write(data[pos : pos + 1000])
        written += len(data[pos : pos + 1000])
        taken += sum(len(c) for _, c in cutter.take())
        # chunks are cut off whenever the buffer is full: at most one block plus one maximum chunk held
        assert written - taken <= cutter.block + params.max_size
    assert taken > 3 * MIB
    assert taken + sum(len(c) for _, c in cutter.finish()) == len(data)
    with pytest.raises(ParameterError, match="finished"):
        cutter.write(b"x" * (2 * MIB))
    with pytest.raises(ParameterError, match="finished"):
        cutter.finish()
