"""Tests of ``cat``, ``verify-index``, ``inspect-chunks`` and the ignore lists as library calls.

cat writes exactly the bytes of a range and needs only the chunks the range
touches (the others are deleted from the store to prove it); verify_index
names the first chunk that differs; inspect_chunks gives desync's fields and
its JSON reads back; ignored_ids reads indexes and id files, and chop and
fill_cache leave those chunks out.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA256
from casync_format.errors import ChunkMissing, FormatError, ParameterError
from casync_store import LocalStore
from casync_store.ops.cat import cat, chunks_in_range
from casync_store.ops.chop import chop
from casync_store.ops.ignore import ignored_ids, read_chunk_ids
from casync_store.ops.info import index_info
from casync_store.ops.inspect import chunks_info_json, inspect_chunks, load_chunks_info
from casync_store.ops.maintain import fill_cache, verify_store
from casync_store.ops.make import make
from casync_store.ops.verifyindex import verify_index
from casync_store.stores.indexio import open_index

SMALL = ChunkerParams(4096, 16384, 65536)


@pytest.fixture
def made(tmp_path: Path, rng_bytes, local_store: LocalStore) -> tuple[Path, Path, bytes]:
    data = rng_bytes(600_000, 3) + bytes(200_000) + rng_bytes(300_000, 4)
    src = tmp_path / "blob"
    src.write_bytes(data)
    index = tmp_path / "blob.caibx"
    make(str(index), str(src), local_store, params=SMALL)
    return src, index, data


def _cat(index: Path, store: LocalStore, offset: int = 0, length: int | None = None) -> bytes:
    out = io.BytesIO()
    with open_index(index) as idx:
        assert cat(idx, store, out, offset=offset, length=length, concurrency=3) == len(out.getvalue())
    return out.getvalue()


def test_cat_whole_blob_and_ranges(made, local_store) -> None:
    _, index, data = made
    assert _cat(index, local_store) == data
    for offset, length in [(0, 1), (1, 70_000), (123_456, 200_000), (len(data) - 5, 5), (len(data) - 5, 99),
                           (len(data), 10), (650_000, 100_000)]:
        assert _cat(index, local_store, offset, length) == data[offset : offset + length]
    assert _cat(index, local_store, 1000, 0) == data[1000:]  # 0: to the end, as desync's -l 0
    with pytest.raises(ParameterError, match="beyond the end"):
        _cat(index, local_store, len(data) + 1)


def test_cat_fetches_only_the_chunks_of_the_range(made, local_store) -> None:
    _, index, data = made
    offset, length = 300_000, 50_000
    with open_index(index) as idx:
        touched = {item.id for item in chunks_in_range(idx, offset, offset + length)}
        every = {item.id for item in idx}
    assert 0 < len(touched) < len(every)
    for chunk_id in every - touched:
        os.unlink(local_store.chunk_path(chunk_id))
    assert _cat(index, local_store, offset, length) == data[offset : offset + length]
    with pytest.raises(ChunkMissing):
        _cat(index, local_store)


def test_cat_never_fetches_the_zero_chunk(made, local_store) -> None:
    _, index, data = made
    with open_index(index) as idx:
        zero = {item.id for item in idx
                if item.size == SMALL.max_size and not any(data[item.start : item.start + item.size])}
    assert zero
    for chunk_id in zero:
        os.unlink(local_store.chunk_path(chunk_id))
    assert _cat(index, local_store, 600_000, 200_000) == bytes(200_000)


def test_verify_index_names_the_first_difference(made, tmp_path) -> None:
    src, index, data = made
    with open_index(index) as idx:
        assert verify_index(idx, src, concurrency=3) is None
        items = list(idx)
    changed = bytearray(data)
    changed[500_000] ^= 1
    changed[900_000] ^= 1
    src.write_bytes(bytes(changed))
    first = next(item for item in items if item.start <= 500_000 < item.start + item.size)
    with open_index(index) as idx:
        found = verify_index(idx, src, concurrency=3)
    assert found is not None and found.chunk_id == first.id and found.offset == first.start
    assert first.id.hex() in str(found) and str(first.start) in str(found)
    src.write_bytes(data + b"x")
    with open_index(index) as idx:
        longer = verify_index(idx, src)
    assert longer is not None and longer.chunk_id is None and longer.offset == len(data)
    src.write_bytes(data[:-10])
    with open_index(index) as idx:
        shorter = verify_index(idx, src)
    assert shorter is not None and shorter.chunk_id == items[-1].id


def test_inspect_chunks_sizes_and_json(made, local_store, tmp_path) -> None:
    _, index, _ = made
    with open_index(index) as idx:
        infos = inspect_chunks(idx, local_store)
        bare = inspect_chunks(idx)
        items = list(idx)
    assert [i.id for i in infos] == [item.id for item in items]  # repeats included, blob order
    assert all(i.compressed_size == os.path.getsize(local_store.chunk_path(i.id)) for i in infos)
    assert all(i.compressed_size == 0 for i in bare)
    os.unlink(local_store.chunk_path(items[0].id))
    with open_index(index) as idx:
        first = inspect_chunks(idx, local_store)[0]
    assert first.compressed_size == 0 and "compressed_size" not in first.to_dict()
    path = tmp_path / "chunks.json"
    path.write_text(chunks_info_json(infos))
    assert load_chunks_info(path) == {i.id: i for i in infos}
    with open_index(index) as idx:
        stats = index_info(idx, chunks_info=load_chunks_info(path))
    unique = {i.id: i for i in infos}
    compressed = sum(i.compressed_size for i in unique.values())
    assert stats.dedup_size_not_in_seed_nor_cache_compressed == compressed
    path.write_text('[{"id": "zz"}]')
    with pytest.raises(FormatError, match=r"chunks\.json"):
        load_chunks_info(path)


def test_inspect_chunks_wants_a_local_store(made, tmp_path) -> None:
    from casync_store.stores.location import open_store

    _, index, _ = made
    with open_store("http://127.0.0.1:1/") as store, open_index(index) as idx, \
            pytest.raises(ParameterError, match="not a local store"):
        inspect_chunks(idx, store)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex), st.just(""), st.just("   ")),
                max_size=20))
def test_read_chunk_ids_reads_what_it_is_given(tmp_path_factory, lines: list[str]) -> None:
    path = tmp_path_factory.mktemp("ids") / "ids.txt"
    path.write_text("\n".join(f"  {line}\t" for line in lines) + "\n")
    assert read_chunk_ids(path) == [bytes.fromhex(line) for line in lines if line.strip()]


@pytest.mark.parametrize("bad", ["abc", "g" * 64, "00" * 31, "00" * 33])
def test_read_chunk_ids_refuses_what_is_not_an_id(tmp_path, bad: str) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("00" * 32 + "\n" + bad + "\n")
    with pytest.raises(FormatError, match="line 2"):
        read_chunk_ids(path)


def test_chop_and_fill_cache_leave_out_ignored_chunks(made, local_store, tmp_path) -> None:
    src, index, _ = made
    with open_index(index) as idx:
        every = {item.id for item in idx}
    some = set(sorted(every)[::3])
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("".join(c.hex() + "\n" for c in sorted(some)[:2]))
    with open_index(index) as idx:
        ignore = ignored_ids([], [ids_file]) | frozenset(some)
        target = LocalStore(str(tmp_path / "chopped"), sync=False)
        stats = chop(idx, src, target, ignore=ignore)
    assert set(target.iter_chunk_ids()) == every - some and stats.chunks_stored == len(every - some)
    cache = LocalStore(str(tmp_path / "cache"), sync=False)
    with open_index(index) as idx, open_index(index) as skip:
        fill_cache([idx], local_store, cache, ignore=ignored_ids([skip]))
    assert not os.path.exists(cache.path) or list(cache.iter_chunk_ids()) == []
    with open_index(index) as idx:
        fill_cache([idx], local_store, cache, ignore=frozenset(some))
    assert set(cache.iter_chunk_ids()) == every - some


def test_verify_store_with_one_digest_only(tmp_path, rng_bytes) -> None:
    store = LocalStore(str(tmp_path / "store"), sync=False)
    src = tmp_path / "a"
    src.write_bytes(rng_bytes(100_000, 6))
    make(str(tmp_path / "a.caibx"), str(src), store, params=SMALL, digest=SHA256)
    from casync_format.digest import SHA512_256

    n = len(list(store.iter_chunk_ids()))
    assert verify_store(store, SHA512_256).invalid == []  # either digest
    assert len(verify_store(store, SHA512_256, either_digest=False).invalid) == n
    assert verify_store(store, SHA256, either_digest=False).invalid == []
