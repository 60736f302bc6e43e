"""Tests of the make operation.

make's index is compared byte for byte with the real ``casync make`` (default
parameters, --digest=sha256, --chunk-size in bytes, empty input) and its store
with casync's; stdin input, deduplication and the skip of chunks a store
already holds are checked through the stats; failures leave no index and no
temporary file. The pool tests cover ordering, the bound on items in flight,
prompt error propagation and early exit.
"""

from __future__ import annotations

import io
import os
import sys

import pytest

from casync_format import chunk as chunk_codec
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import ParameterError, StoreError
from casync_format.index import Index
from casync_store import LocalStore
from casync_store.ops.info import chunk_file
from casync_store.ops.make import iter_chunk_ids, make
from casync_store.plumbing.atomic import TEMP_PREFIX

MIB = 1024 * 1024


def _blob(rng_bytes, n: int = 3 * MIB) -> bytes:
    """Random data with a run of zeros and a repeated block (so chunks repeat)."""
    rand = rng_bytes(n, 7)
    block = rng_bytes(300_000, 8)
    return rand[: n // 2] + bytes(1_200_000) + block + rand[n // 2 :] + block


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _store_files(path: str) -> set[str]:
    return {name for _dir, _subdirs, names in os.walk(path) for name in names}


def _temps(path: str) -> list[str]:
    return [n for _d, _s, names in os.walk(path) for n in names if n.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize(
    ("casync_args", "params", "digest"),
    [
        ((), ChunkerParams(16384, 65536, 262144), SHA512_256),
        (("--digest=sha256",), ChunkerParams(16384, 65536, 262144), SHA256),
        (("--chunk-size=4096:16384:65536",), ChunkerParams(4096, 16384, 65536), SHA512_256),
    ],
)
def test_index_and_store_match_casync(tmp_path, rng_bytes, run_casync, casync_args, params, digest):
    src = _write(str(tmp_path / "blob"), _blob(rng_bytes))
    run_casync("make", *casync_args, f"--store={tmp_path / 'cstore'}", str(tmp_path / "c.caibx"), src)
    store = LocalStore(str(tmp_path / "pstore"), sync=False)
    stats = make(str(tmp_path / "p.caibx"), src, store, params=params, digest=digest, concurrency=2)
    with open(tmp_path / "c.caibx", "rb") as f:
        expected = f.read()
    with open(tmp_path / "p.caibx", "rb") as f:
        assert f.read() == expected
    assert _store_files(str(tmp_path / "pstore")) == _store_files(str(tmp_path / "cstore"))
    assert stats.bytes_total == os.path.getsize(src)
    assert stats.chunks_stored == len(_store_files(str(tmp_path / "pstore")))
    assert stats.chunks_duplicate > 0  # the repeated block
    assert stats.chunks_unique == stats.chunks_stored
    # The stored chunks decode to the blob's bytes.
    with open(tmp_path / "p.caibx", "rb") as f, open(src, "rb") as blob:
        for item in Index(f):
            data = store.get_chunk(item.id, digest, item.size)
            blob.seek(item.start)
            assert blob.read(item.size) == data


def test_empty_input_matches_casync(tmp_path, run_casync):
    src = _write(str(tmp_path / "empty"), b"")
    run_casync("make", f"--store={tmp_path / 'cstore'}", str(tmp_path / "c.caibx"), src)
    stats = make(str(tmp_path / "p.caibx"), src, LocalStore(str(tmp_path / "pstore")))
    assert (tmp_path / "p.caibx").read_bytes() == (tmp_path / "c.caibx").read_bytes()
    assert stats.chunks_total == 0 and stats.bytes_total == 0


def test_stdin_input_gives_the_same_index(tmp_path, rng_bytes, monkeypatch):
    data = _blob(rng_bytes, 2 * MIB)
    src = _write(str(tmp_path / "blob"), data)
    make(str(tmp_path / "file.caibx"), src, None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    store = LocalStore(str(tmp_path / "store"), sync=False)
    stats = make(str(tmp_path / "stdin.caibx"), "-", store, concurrency=3)
    assert (tmp_path / "stdin.caibx").read_bytes() == (tmp_path / "file.caibx").read_bytes()
    assert stats.bytes_total == len(data) and stats.chunks_stored > 0


def test_index_to_stdout(tmp_path, rng_bytes, monkeypatch):
    src = _write(str(tmp_path / "blob"), rng_bytes(MIB, 3))
    make(str(tmp_path / "file.caibx"), src, None)
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out))
    make("-", src, None)
    assert out.getvalue() == (tmp_path / "file.caibx").read_bytes()


def test_second_make_skips_chunks_the_store_has(tmp_path, rng_bytes):
    src = _write(str(tmp_path / "blob"), _blob(rng_bytes, MIB))
    store = LocalStore(str(tmp_path / "store"), sync=False)
    first = make(str(tmp_path / "a.caibx"), src, store)
    inodes = {p: os.stat(os.path.join(d, p)).st_ino for d, _s, ns in os.walk(store.path) for p in ns}
    second = make(str(tmp_path / "b.caibx"), src, store)
    assert second.chunks_stored == 0 and second.bytes_stored == 0
    assert second.chunks_in_store == first.chunks_stored
    assert second.chunks_duplicate == first.chunks_duplicate
    after = {p: os.stat(os.path.join(d, p)).st_ino for d, _s, ns in os.walk(store.path) for p in ns}
    assert after == inodes  # nothing rewritten (present chunks only get a fresh mtime, for prune)
    assert (tmp_path / "a.caibx").read_bytes() == (tmp_path / "b.caibx").read_bytes()


def test_without_store_only_the_index_is_written(tmp_path, rng_bytes):
    src = _write(str(tmp_path / "blob"), rng_bytes(MIB, 4))
    stats = make(str(tmp_path / "x.caibx"), src, None)
    assert sorted(os.listdir(tmp_path)) == ["blob", "x.caibx"]
    assert stats.chunks_stored == 0 and stats.chunks_total > 0


def test_duplicate_chunks_are_compressed_once(tmp_path, rng_bytes, monkeypatch):
    block = rng_bytes(70_000, 9)
    params = ChunkerParams(4096, 16384, 65536)
    src = _write(str(tmp_path / "blob"), bytes(40 * 65536) + block * 3)  # 40 zero chunks
    calls: list[int] = []
    real = chunk_codec.encode
    monkeypatch.setattr(chunk_codec, "encode", lambda data, c="zstd": calls.append(1) or real(data, c))
    stats = make(str(tmp_path / "x.caibx"), src, LocalStore(str(tmp_path / "s"), sync=False), params=params)
    assert stats.chunks_total >= 40
    assert len(calls) == stats.chunks_stored == stats.chunks_unique
    assert stats.chunks_duplicate == stats.chunks_total - stats.chunks_unique >= 39


def test_failed_store_leaves_no_index_and_no_temp(tmp_path, rng_bytes):
    src = _write(str(tmp_path / "blob"), rng_bytes(MIB, 5))
    (tmp_path / "x.caibx").write_bytes(b"old")

    class Broken(LocalStore):
        def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
            raise StoreError(f"store {self}: disk full writing {chunk_id.hex()}")

    with pytest.raises(StoreError, match="disk full"):
        make(str(tmp_path / "x.caibx"), src, Broken(str(tmp_path / "s")))
    assert (tmp_path / "x.caibx").read_bytes() == b"old"
    assert _temps(str(tmp_path)) == []


def test_bad_compression_is_a_parameter_error(tmp_path):
    src = _write(str(tmp_path / "blob"), b"x" * 100)
    with pytest.raises(ParameterError):
        make(str(tmp_path / "x.caibx"), src, LocalStore(str(tmp_path / "s")), compression="lz4")


def test_other_compressions_are_readable(tmp_path, rng_bytes):
    src = _write(str(tmp_path / "blob"), rng_bytes(200_000, 6))
    store = LocalStore(str(tmp_path / "s"), sync=False)
    make(str(tmp_path / "x.caibx"), src, store, compression="xz")
    with open(tmp_path / "x.caibx", "rb") as f:
        for item in Index(f):
            assert store.get_raw(item.id).startswith(b"\xfd7zXZ")
            store.get_chunk(item.id, SHA512_256, item.size)


def test_chunk_ids_match_the_index(tmp_path, rng_bytes):
    src = _write(str(tmp_path / "blob"), _blob(rng_bytes, MIB))
    make(str(tmp_path / "x.caibx"), src, None)
    with open(tmp_path / "x.caibx", "rb") as f:
        expected = [(c.start, c.size, c.id) for c in Index(f)]
    assert list(iter_chunk_ids(src, concurrency=2)) == expected
    assert list(chunk_file(src)) == expected
    later = list(chunk_file(src, start=100_000))
    assert later[0][0] == 100_000 and sum(s for _p, s, _i in later) == os.path.getsize(src) - 100_000
    assert later[-1][2] == expected[-1][2]  # the chains resynchronise


def test_map_closes_cleanly(tmp_path, rng_bytes):
    """Every chunk view is released: the map closes after make (no BufferError)."""
    src = _write(str(tmp_path / "blob"), rng_bytes(2 * MIB, 11))
    for concurrency in (1, 4):
        store = LocalStore(str(tmp_path / "s"), sync=False)
        make(str(tmp_path / "x.caibx"), src, store, concurrency=concurrency)
