"""Tests of casync_format.index: golden casync files, round trips, damage, memory."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib.util
import io
import json
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.constants import (
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_BLOB_INDEX_FLAGS,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_INDEX,
    CA_FORMAT_SHA512_256,
    CA_FORMAT_TABLE,
    CA_FORMAT_TABLE_TAIL_MARKER,
)
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import FormatError
from casync_format.index import (
    Index,
    IndexChunk,
    IndexHeader,
    IndexStream,
    IndexWriter,
    read_index,
    write_index,
)
from tests.support import DATA_DIR

DATA = DATA_DIR
U64 = 0xFFFFFFFFFFFFFFFF
DEFAULT_SIZES = (16 * 1024, 64 * 1024, 256 * 1024)


def _load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", os.path.join(DATA, "make_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()
with open(os.path.join(DATA, "golden.json")) as _f:
    MANIFEST = json.load(_f)["indexes"]


# An independent serialiser (struct only), so the writer is not tested against itself.
def pack_index(
    header: tuple[int, int, int, int],
    items: list[tuple[int, bytes]],
    *,
    head: tuple[int, int] = (48, CA_FORMAT_INDEX),
    table: tuple[int, int] = (U64, CA_FORMAT_TABLE),
    tail: tuple[int, int, int, int | None, int] | None = None,
) -> bytes:
    """Bytes of an index with ``(end offset, id)`` items; parts can be overridden."""
    out = struct.pack("<6Q", *head, *header) + struct.pack("<2Q", *table)
    out += b"".join(struct.pack("<Q32s", end, cid) for end, cid in items)
    z1, z2, off, size, marker = tail or (0, 0, 48, None, CA_FORMAT_TABLE_TAIL_MARKER)
    size = 16 + 40 * len(items) + 40 if size is None else size
    return out + struct.pack("<5Q", z1, z2, off, size, marker)


def ends_of(sizes: list[int]) -> list[int]:
    """Cumulative end offsets of chunk sizes."""
    ends, total = [], 0
    for s in sizes:
        total += s
        ends.append(total)
    return ends


def cid(i: int) -> bytes:
    """A distinct 32-byte id for item ``i``."""
    return hashlib.sha256(i.to_bytes(8, "little")).digest()


def good(sizes: list[int] = (1000, 2000, 3000), hdr: tuple[int, int, int, int] = (0, 1, 2000, 4000)) -> bytes:
    """A valid index of chunks with these sizes."""
    return pack_index(hdr, [(e, cid(i)) for i, e in enumerate(ends_of(list(sizes)))])


def open_bytes(raw: bytes, validate: bool = True) -> Index:
    """Index over in-memory bytes."""
    return read_index(io.BytesIO(raw), validate)


# --- golden files made by casync ------------------------------------------------------------------


def _expected_header(args: list[str]) -> IndexHeader:
    digest = SHA256 if "--digest=sha256" in args else SHA512_256
    sizes = DEFAULT_SIZES
    for arg in args:
        if arg.startswith("--chunk-size="):
            sizes = tuple(int(x) for x in arg.split("=", 1)[1].split(":"))
    return IndexHeader(CA_FORMAT_BLOB_INDEX_FLAGS | digest.flag, *sizes)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_golden_index_parses_and_matches_input(name: str) -> None:
    entry = MANIFEST[name]
    data = make_golden.make_input(entry["input"])
    assert hashlib.sha256(data).hexdigest() == entry["input_sha256"], "input generator changed"
    path = os.path.join(DATA, "index", name)
    with open(path, "rb") as f:
        raw = f.read()
        ix = read_index(f)
        assert ix.header == _expected_header(entry["args"])
        assert ix.digest is ix.header.digest
        assert ix.blob_size == len(data)
        items = list(ix)
    assert len(items) == len(ix) == ix.count
    pos = 0
    for item in items:
        assert item.start == pos
        assert item.id == ix.digest(data[item.start : item.start + item.size])
        assert item.size <= ix.header.chunk_size_max
        pos += item.size
    assert pos == len(data)
    # Serialising the parsed index reproduces casync's bytes exactly.
    out = io.BytesIO()
    assert write_index(out, ix.header, [(c.id, c.size) for c in items]) == len(data)
    assert out.getvalue() == raw


def test_golden_specifics() -> None:
    with open(os.path.join(DATA, "index", "empty.caibx"), "rb") as f:
        ix = read_index(f)
        assert (len(ix), ix.blob_size, list(ix)) == (0, 0, [])
        with pytest.raises(IndexError):
            ix.find(0)
    with open(os.path.join(DATA, "index", "blob-sha256.caibx"), "rb") as f:
        ix = read_index(f)
        assert ix.digest is SHA256 and not ix.header.feature_flags & CA_FORMAT_SHA512_256
    with open(os.path.join(DATA, "index", "blob-repeat.caibx"), "rb") as f:
        ids = [c.id for c in read_index(f)]
        assert len(set(ids)) < len(ids), "expected duplicate chunks"


# --- round trips ----------------------------------------------------------------------------------

sizes_triplet = st.tuples(
    st.integers(1, CA_CHUNK_SIZE_LIMIT_MAX),
    st.integers(1, CA_CHUNK_SIZE_LIMIT_MAX),
    st.integers(1, CA_CHUNK_SIZE_LIMIT_MAX),
).map(sorted)
headers = st.builds(
    lambda flags, s: IndexHeader(flags & CA_FORMAT_FEATURE_FLAGS_MAX, *s),
    st.integers(0, U64),
    sizes_triplet,
)


@given(st.integers(0, U64).filter(lambda f: f & ~CA_FORMAT_FEATURE_FLAGS_MAX))
def test_unknown_feature_flags_refused(flags: int) -> None:
    raw = IndexHeader(CA_FORMAT_BLOB_INDEX_FLAGS, *DEFAULT_SIZES).pack()
    raw = raw[:16] + struct.pack("<Q", flags) + raw[24:]
    with pytest.raises(FormatError, match="unknown feature flags"):
        IndexHeader.unpack(raw)


@st.composite
def header_and_chunks(draw: st.DrawFn, max_items: int = 40) -> tuple[IndexHeader, list[tuple[bytes, int]]]:
    header = draw(headers)
    chunks = draw(
        st.lists(
            st.tuples(st.binary(min_size=32, max_size=32), st.integers(1, header.chunk_size_max)),
            max_size=max_items,
        )
    )
    return header, chunks


@given(header_and_chunks())
def test_round_trip(hc: tuple[IndexHeader, list[tuple[bytes, int]]]) -> None:
    header, chunks = hc
    out = io.BytesIO()
    blob_size = write_index(out, header, chunks)
    raw = out.getvalue()
    ends = ends_of([size for _, size in chunks])
    assert raw == pack_index(
        (header.feature_flags, header.chunk_size_min, header.chunk_size_avg, header.chunk_size_max),
        [(e, c) for e, (c, _) in zip(ends, chunks)],
    )
    ix = open_bytes(raw)
    assert ix.header == header
    assert IndexHeader.unpack(header.pack()) == header
    assert blob_size == ix.blob_size == sum(size for _, size in chunks)
    assert [(c.id, c.size) for c in ix] == chunks
    assert all(isinstance(c, IndexChunk) for c in ix)


def test_writer_incremental_matches_write_index() -> None:
    header = IndexHeader(CA_FORMAT_BLOB_INDEX_FLAGS | CA_FORMAT_SHA512_256, *DEFAULT_SIZES)
    chunks = [(cid(i), 1 + i * 37 % DEFAULT_SIZES[2]) for i in range(10_000)]  # > one write batch
    a, b = io.BytesIO(), io.BytesIO()
    w = IndexWriter(a, header)
    for c, s in chunks:
        w.add(c, s)
    w.finish()
    write_index(b, header, chunks)
    assert a.getvalue() == b.getvalue()
    assert (w.count, w.blob_size) == (len(chunks), sum(s for _, s in chunks))


@pytest.mark.parametrize(
    ("chunk_id", "size"),
    [(cid(0), 0), (cid(0), -1), (cid(0), 4001), (b"\x01" * 31, 10), (b"\x01" * 33, 10), (b"", 10)],
)
def test_writer_rejects_bad_items(chunk_id: bytes, size: int) -> None:
    w = IndexWriter(io.BytesIO(), IndexHeader(0, 1, 2000, 4000))
    with pytest.raises(FormatError):
        w.add(chunk_id, size)


@pytest.mark.parametrize("sizes", [(0, 1, 1), (2, 1, 3), (1, 3, 2), (1, 1, CA_CHUNK_SIZE_LIMIT_MAX + 1)])
def test_writer_rejects_unreadable_header(sizes: tuple[int, int, int]) -> None:
    with pytest.raises(FormatError):
        IndexWriter(io.BytesIO(), IndexHeader(0, *sizes))


# --- random access --------------------------------------------------------------------------------


@st.composite
def index_and_probe(draw: st.DrawFn) -> tuple[list[int], int, list[int]]:
    sizes = draw(st.lists(st.integers(1, 50), min_size=0, max_size=60))
    first = draw(st.integers(0, len(sizes)))
    total = sum(sizes)
    offsets = draw(st.lists(st.integers(0, total - 1), max_size=20)) if total else []
    return sizes, first, offsets


@given(index_and_probe())
def test_random_access_agrees_with_iteration(probe: tuple[list[int], int, list[int]]) -> None:
    sizes, first, offsets = probe
    ix = open_bytes(good(sizes, (0, 1, 1, 50)))
    items = list(ix)
    assert [ix[i] for i in range(len(ix))] == items
    assert [ix[i - len(ix)] for i in range(len(ix))] == items
    assert list(ix.iter_from(first)) == items[first:]
    for off in offsets:
        n = ix.find(off)
        assert items[n].start <= off < items[n].start + items[n].size
    for bad in (len(ix), -len(ix) - 1):
        with pytest.raises(IndexError):
            ix[bad]
    for bad in (-1, ix.blob_size):
        with pytest.raises(IndexError):
            ix.find(bad)
    for bad in (-1, len(ix) + 1):
        with pytest.raises(IndexError):
            list(ix.iter_from(bad))


# --- damaged input --------------------------------------------------------------------------------

HDR = (0, 1, 2000, 4000)
ITEMS = [(1000, cid(0)), (3000, cid(1)), (6000, cid(2))]
BAD = {
    "empty": b"",
    "truncated header": good()[:20],
    "header only": good()[:48],
    "header and table header only": good()[:64],
    "truncated tail": good()[:-1],
    "truncated item": good()[:-41],
    "missing tail": good()[:-40],
    "trailing byte": good() + b"\0",
    "trailing item": good() + b"\0" * 40,
    "repeated tail": good() + good()[-40:],
    "bad header type": pack_index(HDR, ITEMS, head=(48, CA_FORMAT_INDEX ^ 1)),
    "bad header size": pack_index(HDR, ITEMS, head=(56, CA_FORMAT_INDEX)),
    "bad table type": pack_index(HDR, ITEMS, table=(U64, CA_FORMAT_TABLE ^ 1)),
    "bad table size": pack_index(HDR, ITEMS, table=(16 + 40 * 3 + 40, CA_FORMAT_TABLE)),
    "bad tail marker": pack_index(HDR, ITEMS, tail=(0, 0, 48, None, CA_FORMAT_TABLE_TAIL_MARKER ^ 1)),
    "tail fill not zero": pack_index(HDR, ITEMS, tail=(1, 0, 48, None, CA_FORMAT_TABLE_TAIL_MARKER)),
    "tail fill 2 not zero": pack_index(HDR, ITEMS, tail=(0, 1, 48, None, CA_FORMAT_TABLE_TAIL_MARKER)),
    "tail index offset": pack_index(HDR, ITEMS, tail=(0, 0, 0, None, CA_FORMAT_TABLE_TAIL_MARKER)),
    "tail table size": pack_index(HDR, ITEMS, tail=(0, 0, 48, 16 + 40 * 2 + 40, CA_FORMAT_TABLE_TAIL_MARKER)),
    "offsets backwards": pack_index(HDR, [(1000, cid(0)), (3000, cid(1)), (2000, cid(2))]),
    "offsets equal": pack_index(HDR, [(1000, cid(0)), (1000, cid(1)), (2000, cid(2))]),
    "first offset zero": pack_index(HDR, [(0, cid(0)), (1000, cid(1))]),
    "chunk above max": pack_index(HDR, [(1000, cid(0)), (5001, cid(1))]),
    "first chunk above max": pack_index(HDR, [(4001, cid(0))]),
    "min zero": pack_index((0, 0, 2000, 4000), ITEMS),
    "avg zero": pack_index((0, 0, 0, 4000), ITEMS),
    "min above avg": pack_index((0, 2001, 2000, 4000), ITEMS),
    "avg above max": pack_index((0, 1, 4001, 4000), ITEMS),
    "max above limit": pack_index((0, 1, 2000, CA_CHUNK_SIZE_LIMIT_MAX + 1), ITEMS),
    "max all ones": pack_index((0, 1, 2000, U64), ITEMS),
}


def test_format_error_is_value_error() -> None:
    assert issubclass(FormatError, ValueError)


@pytest.mark.parametrize("name", sorted(BAD))
def test_damaged_index_is_rejected(name: str) -> None:
    with pytest.raises(FormatError):
        open_bytes(BAD[name])


def test_every_strict_prefix_is_rejected() -> None:
    raw = good()
    for n in range(len(raw)):
        with pytest.raises(FormatError):
            open_bytes(raw[:n])


@pytest.mark.parametrize("name", ["offsets backwards", "offsets equal", "chunk above max"])
def test_unvalidated_open_still_checks_while_iterating(name: str) -> None:
    ix = open_bytes(BAD[name], validate=False)
    with pytest.raises(FormatError):
        list(ix)


@pytest.mark.parametrize("name", ["bad header type", "tail table size", "trailing byte"])
def test_structure_checked_even_without_validation(name: str) -> None:
    with pytest.raises(FormatError):
        open_bytes(BAD[name], validate=False)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(FormatError):
        list(open_bytes(raw))


# --- memory ---------------------------------------------------------------------------------------


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (Linux >= 4.0)
    except OSError:
        return False
    return True


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc (Linux)")
def test_two_million_items_in_flat_memory(tmp_path: os.PathLike[str]) -> None:
    n = 2_000_000
    path = os.path.join(tmp_path, "big.caibx")
    one_id = cid(7)
    header = IndexHeader(CA_FORMAT_BLOB_INDEX_FLAGS | CA_FORMAT_SHA512_256, *DEFAULT_SIZES)
    gc.collect()
    peak = _reset_peak()
    before = _rss_kib()
    with open(path, "wb") as f:
        blob_size = write_index(f, header, ((one_id, 1 + i % 1000) for i in range(n)))
    assert os.path.getsize(path) == 48 + 16 + 40 * n + 40
    with open(path, "rb") as f:
        ix = read_index(f)  # validates all 2 million items
        count = total = 0
        for item in ix:
            count += 1
            total += item.size
        assert (count, total, ix.blob_size, len(ix)) == (n, blob_size, blob_size, n)
        assert ix[n - 1].start + ix[n - 1].size == blob_size
        assert ix.find(blob_size - 1) == n - 1
    grown = (_rss_kib("VmHWM" if peak else "VmRSS") - before) // 1024
    assert grown < 20, f"RSS grew by {grown} MiB"


# --------------------------------------------------------------------------- IndexStream


def _stream(raw: bytes, cuts: list[int]) -> tuple[IndexStream, list[IndexChunk]]:
    parser = IndexStream()
    items: list[IndexChunk] = []
    pos = 0
    for cut in [*sorted(cuts), len(raw)]:
        items += parser.feed(raw[pos:cut])
        pos = max(pos, cut)
    parser.finish()
    return parser, items


@given(header_and_chunks(), st.lists(st.integers(0, 2000), max_size=12))
def test_stream_in_any_pieces_matches_index(
    hc: tuple[IndexHeader, list[tuple[bytes, int]]], cuts: list[int]
) -> None:
    header, chunks = hc
    out = io.BytesIO()
    write_index(out, header, chunks)
    raw = out.getvalue()
    parser, items = _stream(raw, [min(c, len(raw)) for c in cuts])
    assert parser.header == header and parser.done
    assert items == list(open_bytes(raw))
    assert parser.count == len(chunks) and parser.blob_size == sum(size for _, size in chunks)


@pytest.mark.parametrize("name", sorted(BAD))
def test_stream_rejects_damaged_index(name: str) -> None:
    with pytest.raises(FormatError):
        _stream(BAD[name], [len(BAD[name]) // 2])


def test_stream_rejects_every_strict_prefix_and_trailing_bytes() -> None:
    raw = good()
    for n in range(len(raw)):
        with pytest.raises(FormatError):
            _stream(raw[:n], [n // 3])
    parser, _ = _stream(raw, [])
    with pytest.raises(FormatError, match="trailing"):
        parser.feed(b"\0")
