"""Tests of casync_format.chunker and its two backends (C and pure Python).

Every test taking the ``backend`` fixture runs once per backend; the C run
skips when the extension is not built, but fails under
``PYCASYNC_REQUIRE_C=1``. Cut points are checked against casync three ways:
the golden ``.caibx`` files of tests/data/chunker (made by the real casync,
see its README), a live ``casync make`` on the same inputs (skipped without
casync, failing under ``CI=true``), and pinned sha256 hashes of cut lists that
were verified against casync once. Pure-Python inputs stay small (it scans a
few MB/s).
"""

from __future__ import annotations

import array
import functools
import hashlib
import importlib.util
import io
import json
import mmap
import os
import random
import subprocess
import sys
import tempfile
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format import _buzhash, chunker
from casync_format.chunker import (
    DEFAULT_PARAMS,
    ChunkerParams,
    StreamCutter,
    chunk_stream,
    iter_chunks,
    iter_file_chunks,
)
from casync_format.errors import ParameterError
from casync_format.index import read_index
from tests.support import ROOT

GOLDEN_DIR = os.path.join(ROOT, "tests", "data", "chunker")
MIB = 1 << 20


def _load_make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chunker_golden", os.path.join(GOLDEN_DIR, "make_golden.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()
with open(os.path.join(GOLDEN_DIR, "golden.json")) as _f:
    GOLDEN = {case["name"]: case for case in json.load(_f)["cases"]}


def rng_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def c_module() -> ModuleType:
    """The C backend; skip without it, fail under PYCASYNC_REQUIRE_C=1."""
    module = chunker._backends().get("c")
    if module is None:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but the C chunker is not built")
        pytest.skip("C chunker not built (python3 setup.py build_ext --inplace)")
    return module


@pytest.fixture(params=["python", "c"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """Each backend module in turn."""
    return _buzhash if request.param == "python" else c_module()


def ends(data: object, params: ChunkerParams, backend: ModuleType | None = None, **kw: object) -> list[int]:
    """Chunk end offsets from iter_chunks, checking that the chunks tile the data."""
    out, pos = [], 0
    for start, size in iter_chunks(data, params, backend=backend, **kw):  # type: ignore[arg-type]
        assert start == pos and size > 0
        pos += size
        out.append(pos)
    return out


def caibx_ends(path: str) -> list[int]:
    with open(path, "rb") as f:
        return [c.start + c.size for c in read_index(f)]


# --------------------------------------------------------------------------- parameters


def test_default_params_and_discriminator() -> None:
    assert (DEFAULT_PARAMS.min_size, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size) == (
        16384,
        65536,
        262144,
    )
    assert DEFAULT_PARAMS.discriminator == 49535  # casync-verified by the golden tests
    assert ChunkerParams(1024, 1100, 1200).discriminator == 1024  # 825, clamped up to min
    assert ChunkerParams(4096, 4096, 65536).discriminator == 4096
    # above ~9.3 MiB casync's denominator is negative; on x86-64 that clamps to max
    assert ChunkerParams(4096, 10_000_000, 16_000_000).discriminator == 16_000_000
    assert ChunkerParams(4096, 9_000_000, 16_000_000).discriminator == 16_000_000
    with pytest.raises(AttributeError):
        DEFAULT_PARAMS.min_size = 1  # type: ignore[misc]


def test_from_string() -> None:
    assert ChunkerParams.from_string("16:64:256") == DEFAULT_PARAMS
    assert ChunkerParams.from_string(" 1 : 4 : 16 ") == ChunkerParams(1024, 4096, 16384)
    assert ChunkerParams.from_string("128:128:131072").max_size == 128 * MIB


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("16:64", "'16:64'"),
        ("16:64:256:1024", "'16:64:256:1024'"),
        ("a:b:c", "'a:b:c'"),
        ("16:64:x", "'16:64:x'"),
        ("", "''"),
        ("-1:64:256", "'-1:64:256'"),
        ("16.5:64:256", "'16.5:64:256'"),
        ("0:64:256", "hash window"),
        ("64:16:256", "larger than the average"),
        ("16:512:256", "larger than the maximum"),
        ("16:64:131073", "exceeds casync's limit"),
        ("1:2:\u00b3", "'1:2:\u00b3'"),
    ],
)
def test_from_string_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as info:
        ChunkerParams.from_string(text)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert repr(text) in message


@pytest.mark.parametrize(
    ("sizes", "fragment"),
    [
        ((48, 64, 256), "48"),
        ((0, 64, 256), "hash window"),
        ((-5, 64, 256), "hash window"),
        ((100, 99, 256), "larger than the average"),
        ((64, 300, 256), "larger than the maximum"),
        ((64, 256, 128 * MIB + 1), "134217729"),
        ((64.0, 256, 1024), "integers"),
        (("64", 256, 1024), "integers"),
        ((True, 256, 1024), "integers"),
    ],
)
def test_params_errors(sizes: tuple[object, object, object], fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        ChunkerParams(*sizes)  # type: ignore[arg-type]


def test_params_limits_accepted() -> None:
    ChunkerParams(49, 49, 49)
    ChunkerParams(49, 64, 128 * MIB)


# --------------------------------------------------------------------------- backend selection


def _import_in_child(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + "import casync_format.chunker as c; print(c.BACKEND)"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=ROOT, capture_output=True, text=True
    )


def test_env_forces_pure_python() -> None:
    proc = _import_in_child({"PYCASYNC_PUREPYTHON": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"


@pytest.mark.parametrize("name", ["PYCASYNC_PUREPYTHON", "PYCASYNC_REQUIRE_C"])
def test_env_bad_value_is_an_error(name: str) -> None:
    proc = _import_in_child({name: "yes"})
    assert proc.returncode != 0
    assert "ParameterError" in proc.stderr and name in proc.stderr


def test_missing_c_module_falls_back_or_fails() -> None:
    hide = "import sys; sys.modules['casync_format._chunker'] = None; "
    proc = _import_in_child({}, hide)
    assert proc.returncode == 0 and proc.stdout.strip() == "python", proc.stderr
    proc = _import_in_child({"PYCASYNC_REQUIRE_C": "1"}, hide)
    assert proc.returncode != 0 and "PYCASYNC_REQUIRE_C=1" in proc.stderr


def test_live_backend_is_c_when_built() -> None:
    c_module()
    proc = _import_in_child({"PYCASYNC_REQUIRE_C": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "c", proc.stderr
    if os.environ.get("PYCASYNC_PUREPYTHON") != "1":
        assert chunker.BACKEND == "c"


# --------------------------------------------------------------------------- find_cut contract


# sha256 of casync's buzhash table as 256 little-endian uint32 (src/cachunker.c)
TABLE_SHA256 = "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660"


def test_table_is_casyncs() -> None:
    raw = b"".join(v.to_bytes(4, "little") for v in _buzhash.TABLE)
    assert len(_buzhash.TABLE) == 256
    assert _buzhash.TABLE[0] == 0x458BE752 and _buzhash.TABLE[255] == 0xD95DDF11
    assert hashlib.sha256(raw).hexdigest() == TABLE_SHA256


def test_find_cut_basics(backend: ModuleType) -> None:
    data = rng_bytes(50_000, 1)
    # too little data for even the minimum chunk
    assert backend.find_cut(data, 0, 99, 100, 1000, 300) == -1
    # d == 1: every position is a cut, so the earliest one wins
    assert backend.find_cut(data, 10, len(data), 100, 1000, 1) == 110
    # fixed size: min == max
    assert backend.find_cut(data, 7, 107, 100, 100, 100) == 107
    assert backend.find_cut(data, 7, 106, 100, 100, 100) == -1
    # a huge discriminator practically never hits: the cut is at max, if max fits before end
    assert backend.find_cut(data, 5, len(data), 100, 20_000, 1 << 31) == 20_005
    assert backend.find_cut(data, 5, 20_004, 100, 20_000, 1 << 31) == -1
    # the result only depends on the bytes in [start, end)
    full = backend.find_cut(data, 1000, len(data), 64, 30_000, 5000)
    assert 1064 <= full <= 31_000
    assert backend.find_cut(data[: full + 1], 1000, full + 1, 64, 30_000, 5000) == full
    assert backend.find_cut(data, 1000, full, 64, 30_000, 5000) == full
    assert backend.find_cut(data, 1000, full - 1, 64, 30_000, 5000) == -1


def test_find_cuts_chain(backend: ModuleType) -> None:
    data = rng_bytes(40_000, 2)
    args = (64, 2000, 700)
    chain, pos = [], 0
    while (pos := backend.find_cut(data, pos, len(data), *args)) >= 0:
        chain.append(pos)
    assert backend.find_cuts(data, 0, len(data), *args, len(data) + 1) == chain
    stop = chain[5] - 1
    assert backend.find_cuts(data, 0, len(data), *args, stop) == chain[:6]
    assert backend.find_cuts(data, 0, len(data), *args, chain[5]) == chain[:6]
    assert backend.find_cuts(data, 0, len(data), *args, 0) == chain[:1]
    assert backend.find_cuts(data, chain[-1], len(data), *args, 1 << 40) == []
    assert backend.find_cuts(data, 0, 10, *args, 1 << 40) == []


@pytest.mark.parametrize(
    "args",
    [
        (-1, 100, 64, 128, 10),  # start < 0
        (50, 40, 64, 128, 10),  # start > end
        (0, 1001, 64, 128, 10),  # end > len
        (0, 100, 47, 128, 10),  # min below the window
        (0, 100, 129, 128, 10),  # min > max
        (0, 100, 64, 128, 0),  # discriminator 0
        (0, 100, 64, 128, (1 << 31) + 1),  # discriminator above 2**31
    ],
)
def test_find_cut_rejects_bad_arguments(backend: ModuleType, args: tuple[int, ...]) -> None:
    data = bytes(1000)
    with pytest.raises(ValueError):
        backend.find_cut(data, *args)
    with pytest.raises(ValueError):
        backend.find_cuts(data, *args, 1000)
    with pytest.raises(TypeError):
        backend.find_cut("not bytes", 0, 1, 64, 128, 10)
    with pytest.raises(TypeError):
        backend.find_cut(data, 0.0, 100, 64, 128, 10)


def test_buffer_types(backend: ModuleType, tmp_path: os.PathLike[str]) -> None:
    data = rng_bytes(30_000, 3)
    params = ChunkerParams(64, 400, 1500)
    args = (0, len(data), 64, 1500, params.discriminator, 1 << 40)
    expect = backend.find_cuts(data, *args)
    words = array.array("I")
    words.frombytes(data)
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as out:
        out.write(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for buf in (bytearray(data), memoryview(data), array.array("B", data), words, mapped):
            assert backend.find_cuts(buf, *args) == expect
        assert ends(mapped, params, backend) == [*expect, len(data)]
        assert ends(mapped, params, backend, workers=2, segment_size=5000) == [*expect, len(data)]
    # a view that starts inside a larger buffer
    shifted = memoryview(b"xyz" + data)[3:]
    assert backend.find_cuts(shifted, *args) == expect


# --------------------------------------------------------------------------- parity


@st.composite
def chunk_params(draw: st.DrawFn) -> ChunkerParams:
    low = draw(st.integers(49, 700))
    avg = draw(st.integers(low, 3000))
    high = draw(st.integers(avg, 6000))
    return ChunkerParams(low, avg, high)


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


# --------------------------------------------------------------------------- casync golden data


@functools.cache
def golden_input(name: str) -> bytes:
    case = GOLDEN[name]
    data = make_golden.make_input(case["input"])
    assert hashlib.sha256(data).hexdigest() == case["sha256"], "input generator changed"
    return data


def test_golden_files_complete() -> None:
    """golden.json, the .caibx files and make_golden's case list agree."""
    on_disk = {n[: -len(".caibx")] for n in os.listdir(GOLDEN_DIR) if n.endswith(".caibx")}
    assert on_disk == set(GOLDEN)
    assert set(make_golden.cases(search=lambda seed, *a: {}).keys()) == set(GOLDEN)
    assert {tuple(c["params"]) for c in GOLDEN.values()} == set(make_golden.PARAMS.values())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_caibx(backend: ModuleType, name: str) -> None:
    """Our cuts equal the chunk ends casync wrote into the golden index."""
    case = GOLDEN[name]
    params = ChunkerParams(*case["params"])
    theirs = caibx_ends(os.path.join(GOLDEN_DIR, name + ".caibx"))
    assert ends(golden_input(name), params, backend) == theirs
    kind = case["input"]["kind"]
    sizes = [b - a for a, b in zip([0, *theirs], theirs)][:-1]
    if kind == "zeros":  # a constant window: every chunk is max (or min, if the constant hits)
        assert len(set(sizes)) == 1 and sizes[0] in (params.max_size, params.min_size)
    if kind == "exact-min":
        assert sizes[:4] == [params.min_size] * 4


@functools.cache
def _casync_ends(casync: str, data: bytes, sizes: tuple[int, int, int]) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        path, caibx = os.path.join(tmp, "input"), os.path.join(tmp, "out.caibx")
        with open(path, "wb") as f:
            f.write(data)
        argv = [casync, "make", "--store=" + os.path.join(tmp, "store")]
        argv += ["--chunk-size={}:{}:{}".format(*sizes), caibx, path]
        subprocess.run(argv, check=True, capture_output=True)
        return caibx_ends(caibx)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_live_casync(casync: str, name: str) -> None:
    """A fresh ``casync make`` still cuts like the golden file and like us.

    Checked with the fastest backend; test_golden_caibx holds both to the file.
    """
    case = GOLDEN[name]
    data = golden_input(name)
    theirs = _casync_ends(casync, data, tuple(case["params"]))
    assert theirs == caibx_ends(os.path.join(GOLDEN_DIR, name + ".caibx"))
    fastest = chunker._backends().get("c", _buzhash)
    assert ends(data, ChunkerParams(*case["params"]), fastest) == theirs


@settings(max_examples=12)
@given(params=chunk_params(), size=st.integers(0, 20_000), seed=st.integers(0, 1 << 32), zeros=st.booleans())
def test_live_casync_random(casync: str, params: ChunkerParams, size: int, seed: int, zeros: bool) -> None:
    data = bytes(size) if zeros else rng_bytes(size, seed)
    sizes = (params.min_size, params.avg_size, params.max_size)
    assert ends(data, params) == _casync_ends(casync, data, sizes)


# Cut lists of rng_bytes(PIN_SIZE, PIN_SEED), sha256 of "end1,end2,...", each
# computed once from casync's own output (casync 2, Debian 2+20201210-1+b1)
# and identical to ours then. A change here means pycasync cuts differently.
PIN_SEED, PIN_SIZE = 1717, 1 << 19
PINNED = {
    (49, 100, 400): "958e570ed36d460ccaf68a6f8ac26a1a5435de5949f445fa86e837899e3de575",  # 4281 chunks
    (64, 256, 1024): "0eebcb52abf21be9f969d115378c3090975c552e7e47fdde04c280ca800e1d2f",  # 2064 chunks
    (1000, 1000, 1000): "735953621b3efd1b4d096381ff8d1782f4c55b8375f5e556e878003e4d96205c",  # 525 chunks
    (1024, 1100, 1200): "867c53ce9cb0539785e8396040bd177e4621f2a074809bfaaf22862d4c6c1587",  # 444 chunks
    (1024, 4096, 16384): "a9ff0e4d6fb76f2e640590f84536f3be85fa38cbc86608feabdf131f49c3606d",  # 128 chunks
    (2048, 8192, 8192): "9d5ba211df5c856d2c6e153c1ff73ccf23d2da609cb6e4c7ee63906d126e6cfe",  # 90 chunks
    (4096, 16384, 65536): "367bd6d0924f04127089a1035fb17ea2669e69a60ad993cb7a6dcd7a408dbfd1",  # 32 chunks
    (16384, 65536, 262144): "3c523eaf4959228c24cfd4335b31fd1206f78885e6825d2f7298d9a7b167ef1e",  # 6 chunks
    (4096, 10_000_000, 16_000_000): "9c3e3e92d4ad0b3065145a5df79e77f238ccaeb2e6c840856a7d0e184d208ee4",  # 1
}


@pytest.mark.parametrize("sizes", sorted(PINNED))
def test_cut_points_unchanged(backend: ModuleType, sizes: tuple[int, int, int]) -> None:
    data = rng_bytes(PIN_SIZE, PIN_SEED)
    cuts = ends(data, ChunkerParams(*sizes), backend)
    assert hashlib.sha256(",".join(map(str, cuts)).encode()).hexdigest() == PINNED[sizes]
