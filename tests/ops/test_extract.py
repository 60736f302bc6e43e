"""Tests of the extract operation.

Round trips through make and extract and with the real casync in both
directions; failures (missing, damaged and unreachable chunks) name the chunk
and the store and leave an existing output untouched with no temporary file;
in-place extraction resumes (only wrong chunks are fetched), cuts a longer file
to the blob size and, on a block device (a loop device when one can be set
up), neither truncates nor leaves zero chunks unwritten; all-zero chunks
become holes; ``-`` writes the blob to stdout.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_format.index import Index
from casync_store import LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.make import blob_index_header, make
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.stores.indexio import open_index, write_index_file

MIB = 1024 * 1024
SMALL = ChunkerParams(4096, 16384, 65536)  # more chunks from little data


class CountingStore(LocalStore):
    """A local store that counts chunk reads."""

    def __init__(self, path: str) -> None:
        super().__init__(path, sync=False)
        self.reads = 0
        self._lock = threading.Lock()

    def get_raw(self, chunk_id: bytes) -> bytes:
        with self._lock:
            self.reads += 1
        return super().get_raw(chunk_id)


@pytest.fixture
def blob(tmp_path, rng_bytes):
    """(path of a ~2.5 MB blob, its index path, its store) made with small chunks."""
    data = rng_bytes(MIB, 21) + bytes(MIB) + rng_bytes(500_000, 22)
    src = tmp_path / "blob"
    src.write_bytes(data)
    store = CountingStore(str(tmp_path / "store"))
    make(str(tmp_path / "blob.caibx"), str(src), store, params=SMALL)
    store.reads = 0
    return str(src), str(tmp_path / "blob.caibx"), store


def _extract(index_path: str, out: str, store, **kw):
    with open_index(index_path) as index:
        return extract(index, out, store, **kw)


def _temps(directory) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _first_data_chunk(index_path: str):
    with open(index_path, "rb") as f:
        return next(item for item in Index(f) if item.start > 100_000)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_round_trip(tmp_path, blob, concurrency):
    src, caibx, store = blob
    out = str(tmp_path / "out")
    stats = _extract(caibx, out, store, concurrency=concurrency)
    assert _read(out) == _read(src)
    assert stats.bytes_total == os.path.getsize(src)
    assert stats.chunks_total == stats.chunks_from_store + stats.chunks_zero
    assert stats.chunks_zero >= 14  # 1 MiB of zeros in 64 KiB maximum chunks
    assert _temps(tmp_path) == []


def test_zero_chunks_are_not_fetched(tmp_path, blob):
    src, caibx, store = blob
    data = _read(src)
    with open(caibx, "rb") as f:
        zero_ids = {c.id for c in Index(f) if data[c.start : c.start + c.size] == bytes(c.size)}
    assert len(zero_ids) == 1
    os.unlink(store.chunk_path(zero_ids.pop()))  # the store need not even hold it
    stats = _extract(caibx, str(tmp_path / "out"), store)
    assert _read(str(tmp_path / "out")) == _read(src)
    assert store.reads == stats.chunks_from_store


def test_casync_interop_both_ways(tmp_path, blob, run_casync):
    src, caibx, store = blob
    run_casync("extract", f"--store={store.path}", caibx, str(tmp_path / "by-casync"))
    assert _read(str(tmp_path / "by-casync")) == _read(src)
    run_casync("make", f"--store={tmp_path / 'cstore'}", str(tmp_path / "c.caibx"), src)
    _extract(str(tmp_path / "c.caibx"), str(tmp_path / "by-us"), LocalStore(str(tmp_path / "cstore")))
    assert _read(str(tmp_path / "by-us")) == _read(src)


def test_missing_chunk_names_it_and_leaves_output(tmp_path, blob):
    _src, caibx, store = blob
    item = _first_data_chunk(caibx)
    os.unlink(store.chunk_path(item.id))
    out = tmp_path / "out"
    out.write_bytes(b"precious")
    with pytest.raises(ChunkMissing) as err:
        _extract(caibx, str(out), store)
    assert item.id.hex() in str(err.value) and store.path in str(err.value)
    assert out.read_bytes() == b"precious"
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("damage", ["garbage", "other-chunk", "truncated"])
def test_invalid_chunk_names_it_and_leaves_output(tmp_path, blob, damage):
    _src, caibx, store = blob
    item = _first_data_chunk(caibx)
    path = store.chunk_path(item.id)
    with open(caibx, "rb") as f:
        other = next(c for c in Index(f) if c.id != item.id and c.start > 0)
    blob_bytes = {
        "garbage": b"\x28\xb5\x2f\xfd garbage",
        "other-chunk": _read(store.chunk_path(other.id)),
        "truncated": _read(path)[:100],
    }[damage]
    with open(path, "wb") as f:
        f.write(blob_bytes)
    with pytest.raises(ChunkInvalid) as err:
        _extract(caibx, str(tmp_path / "out"), store)
    assert item.id.hex() in str(err.value) and store.path in str(err.value)
    assert not (tmp_path / "out").exists()
    assert _temps(tmp_path) == []


def test_store_error_naming_its_store_is_not_prefixed_twice(tmp_path, blob):
    _src, caibx, _store = blob

    class Broken(LocalStore):
        def get_raw(self, chunk_id: bytes) -> bytes:
            raise StoreError(f"store {self}: cannot run 'ssh'")

        def __str__(self) -> str:
            return "ssh://host/store"

    with pytest.raises(StoreError) as err:
        _extract(caibx, str(tmp_path / "out"), Broken(str(tmp_path / "nowhere")), concurrency=1)
    text = str(err.value)
    assert text.count("ssh://host/store") == 1 and text.startswith("chunk ") and "cannot run" in text


def test_unreachable_store_error_names_chunk_and_store(tmp_path, blob):
    _src, caibx, _store = blob

    class Down(LocalStore):
        def get_raw(self, chunk_id: bytes) -> bytes:
            raise StoreError("connection refused")

        def __str__(self) -> str:
            return "http://down.example/store"

    out = tmp_path / "out"
    out.write_bytes(b"precious")
    with pytest.raises(StoreError) as err:
        _extract(caibx, str(out), Down(str(tmp_path / "nowhere")), concurrency=2)
    text = str(err.value)
    assert "connection refused" in text and "http://down.example/store" in text
    with open(caibx, "rb") as f:
        assert any(c.id.hex() in text for c in Index(f))
    assert out.read_bytes() == b"precious"
    assert _temps(tmp_path) == []


def test_in_place_resumes(tmp_path, blob):
    src, caibx, store = blob
    data = _read(src)
    out = tmp_path / "out"
    half = len(data) // 2
    out.write_bytes(data[:half] + b"\xff" * 1000)  # an interrupted earlier run
    stats = _extract(caibx, str(out), store, in_place=True)
    assert out.read_bytes() == data
    assert stats.chunks_in_place > 0
    with open(caibx, "rb") as f:
        items = list(Index(f))
    before = [c for c in items if c.start + c.size <= half]
    assert stats.chunks_in_place >= len(before) - 1
    assert store.reads == stats.chunks_from_store  # zero chunks are known by id
    assert store.reads < len(items)
    # A second run finds everything in place and fetches nothing.
    store.reads = 0
    again = _extract(caibx, str(out), store, in_place=True)
    assert again.chunks_in_place == len(items) and store.reads == 0


def test_in_place_overwrites_nonzero_data_where_zero_chunks_go(tmp_path, blob):
    src, caibx, store = blob
    data = _read(src)
    out = tmp_path / "out"
    out.write_bytes(b"\x01" * len(data))
    _extract(caibx, str(out), store, in_place=True)
    assert out.read_bytes() == data


@pytest.mark.parametrize("in_place", [False, True])
def test_longer_output_ends_at_blob_size(tmp_path, blob, in_place):
    src, caibx, store = blob
    data = _read(src)
    out = tmp_path / "out"
    out.write_bytes(data + b"tail" * 100_000)
    _extract(caibx, str(out), store, in_place=in_place)
    assert out.read_bytes() == data


def test_zero_chunks_become_holes(tmp_path, rng_bytes):
    data = rng_bytes(100_000, 5) + bytes(8 * MIB) + rng_bytes(100_000, 6)
    (tmp_path / "blob").write_bytes(data)
    store = LocalStore(str(tmp_path / "store"), sync=False)
    make(str(tmp_path / "x.caibx"), str(tmp_path / "blob"), store)
    stats = _extract(str(tmp_path / "x.caibx"), str(tmp_path / "out"), store)
    assert _read(str(tmp_path / "out")) == data
    st = os.stat(tmp_path / "out")
    assert st.st_size == len(data)
    assert st.st_blocks * 512 < 2 * MIB  # the 8 MiB of zeros take no space
    assert stats.chunks_zero >= 28


def test_stdout_output(tmp_path, blob, monkeypatch):
    src, caibx, store = blob
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    stats = _extract(caibx, "-", store, concurrency=3)
    assert out.getvalue() == _read(src)
    assert stats.bytes_written == len(out.getvalue())
    assert stats.chunks_zero > 0 and stats.chunks_total == stats.chunks_from_store + stats.chunks_zero


def test_empty_index_gives_empty_file(tmp_path, local_store):
    header = blob_index_header(ChunkerParams(16384, 65536, 262144), SHA512_256)
    write_index_file(str(tmp_path / "e.caibx"), header, [])
    out = tmp_path / "out"
    out.write_bytes(b"old content")
    stats = _extract(str(tmp_path / "e.caibx"), str(out), local_store)
    assert out.read_bytes() == b"" and stats.chunks_total == 0


@pytest.fixture
def loop_device(tmp_path):
    """A 4 MiB loop device over a file of 0x55 bytes (skips when none can be set up)."""
    backing = tmp_path / "disk.img"
    backing.write_bytes(b"\x55" * 4 * MIB)
    try:
        proc = subprocess.run(
            ["losetup", "-f", "--show", str(backing)], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("losetup is not available")
    if proc.returncode != 0:
        pytest.skip(f"cannot set up a loop device: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30)


def test_block_device_is_written_in_place_without_truncation(tmp_path, blob, loop_device):
    src, caibx, store = blob
    data = _read(src)
    stats = _extract(caibx, loop_device, store)  # a device implies in place
    with open(loop_device, "rb") as dev:
        content = dev.read()
    assert len(content) == 4 * MIB  # never truncated
    assert content[: len(data)] == data  # zero chunks were written over the 0x55 bytes
    assert content[len(data) :] == b"\x55" * (4 * MIB - len(data))
    assert stats.chunks_zero > 0 and stats.bytes_written == len(data)
    # A second run finds every chunk in place, zero ones included.
    again = _extract(caibx, loop_device, store, in_place=True)
    assert again.chunks_in_place == again.chunks_total


@given(
    pieces=st.lists(
        st.one_of(st.binary(min_size=1, max_size=30_000), st.integers(1, 70_000).map(bytes)),
        max_size=8,
    ),
    sizes=st.sampled_from([(64, 256, 1024), (1024, 4096, 16384), (4096, 16384, 65536)]),
    in_place=st.booleans(),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_round_trip_property(tmp_path_factory, pieces, sizes, in_place):
    """Any blob (random bytes and zero runs) survives make then extract, in either mode."""
    tmp = tmp_path_factory.mktemp("prop")
    data = b"".join(pieces)
    (tmp / "blob").write_bytes(data)
    store = LocalStore(str(tmp / "store"), sync=False)
    make(str(tmp / "x.caibx"), str(tmp / "blob"), store, params=ChunkerParams(*sizes), concurrency=2)
    out = tmp / "out"
    out.write_bytes(b"\x07" * (len(data) // 2 + 3))  # something to overwrite or replace
    stats = _extract(str(tmp / "x.caibx"), str(out), store, in_place=in_place, concurrency=2)
    assert out.read_bytes() == data
    assert stats.bytes_total == len(data)
    assert _temps(tmp) == []
