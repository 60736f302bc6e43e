"""Tests of the store maintenance operations and of chop.

verify finds damaged chunks (and with repair removes exactly those), prune
keeps every chunk an index references and removes the rest, fill_cache copies
what the indexes need in the source's exact bytes and skips what the cache
has, chop stores the chunks of a blob and rejects a blob that does not match
its index.
"""

from __future__ import annotations

import os

import pytest

from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, FormatError, StoreError
from casync_format.index import Index
from casync_store import LocalStore
from casync_store.ops.chop import chop
from casync_store.ops.maintain import fill_cache, prune_store, verify_store
from casync_store.ops.make import make
from casync_store.stores.indexio import open_index

MIB = 1024 * 1024
SMALL = ChunkerParams(4096, 16384, 65536)


def _make(tmp_path, name: str, data: bytes, store: LocalStore | None, digest=SHA512_256) -> str:
    src = tmp_path / name
    src.write_bytes(data)
    make(str(tmp_path / f"{name}.caibx"), str(src), store, params=SMALL, digest=digest)
    return str(tmp_path / f"{name}.caibx")


def _ids(index_path: str) -> set[bytes]:
    with open(index_path, "rb") as f:
        return {item.id for item in Index(f)}


def _store_ids(store: LocalStore) -> set[bytes]:
    return set(store.iter_chunk_ids())


def test_verify_finds_and_repairs_damaged_chunks(tmp_path, rng_bytes, local_store):
    caibx = _make(tmp_path, "a", rng_bytes(MIB, 1), local_store)
    ids = sorted(_ids(caibx))
    clean = verify_store(local_store, SHA512_256, concurrency=3)
    assert clean.checked == len(ids) and clean.invalid == []
    bad_hash, bad_bytes = ids[3], ids[7]
    with open(local_store.chunk_path(bad_hash), "wb") as f:
        f.write(local_store.get_raw(ids[0]))  # valid zstd, wrong content
    with open(local_store.chunk_path(bad_bytes), "wb") as f:
        f.write(b"not a chunk at all")
    found = verify_store(local_store, SHA512_256)
    assert found.invalid == sorted([bad_hash, bad_bytes]) and found.removed == 0
    assert _store_ids(local_store) == set(ids)  # without repair nothing is removed
    repaired = verify_store(local_store, SHA512_256, repair=True)
    assert repaired.removed == 2 and repaired.to_dict()["invalid"] == sorted(i.hex() for i in found.invalid)
    assert _store_ids(local_store) == set(ids) - {bad_hash, bad_bytes}
    assert verify_store(local_store, SHA512_256).invalid == []


def test_verify_accepts_chunks_of_either_digest(tmp_path, rng_bytes, local_store):
    _make(tmp_path, "a", rng_bytes(200_000, 2), local_store, digest=SHA256)
    ids = _store_ids(local_store)
    assert verify_store(local_store, SHA256).invalid == []
    assert verify_store(local_store, SHA512_256, repair=True).invalid == []
    assert _store_ids(local_store) == ids


def test_verify_checks_even_when_the_store_does_not(tmp_path, rng_bytes, store_dir):
    trusting = LocalStore(store_dir, verify=False, sync=False)
    caibx = _make(tmp_path, "a", rng_bytes(200_000, 3), trusting)
    victim = sorted(_ids(caibx))[0]
    other = sorted(_ids(caibx))[1]
    with open(trusting.chunk_path(victim), "wb") as f:
        f.write(trusting.get_raw(other))
    assert verify_store(trusting, SHA512_256).invalid == [victim]


def test_verify_of_a_missing_store_is_a_store_error(tmp_path):
    with pytest.raises(StoreError):
        verify_store(LocalStore(str(tmp_path / "absent")), SHA512_256)


def test_prune_keeps_referenced_chunks(tmp_path, rng_bytes, local_store):
    keep_a = _make(tmp_path, "a", rng_bytes(MIB, 4), local_store)
    keep_b = _make(tmp_path, "b", rng_bytes(300_000, 5) + rng_bytes(MIB, 4)[:200_000], local_store)
    drop = _make(tmp_path, "c", rng_bytes(500_000, 6), local_store)
    referenced = _ids(keep_a) | _ids(keep_b)
    unreferenced = _ids(drop) - referenced
    with open_index(keep_a) as a, open_index(keep_b) as b:
        removed = prune_store(local_store, [a, b])
    assert removed == len(unreferenced) > 0
    assert _store_ids(local_store) == referenced
    with open_index(keep_a) as a, open_index(keep_b) as b:
        assert prune_store(local_store, [a, b]) == 0


def test_fill_cache_copies_what_is_missing(tmp_path, rng_bytes, local_store):
    caibx = _make(tmp_path, "a", rng_bytes(MIB, 7) + rng_bytes(MIB, 7), local_store)
    ids = _ids(caibx)
    cache = LocalStore(str(tmp_path / "cache"), sync=False)
    already = sorted(ids)[:5]
    for cid in already:
        cache.put_raw(cid, local_store.get_raw(cid))
    with open_index(caibx) as index:
        stats = fill_cache([index], local_store, cache, concurrency=2)
    assert stats.chunks_copied == len(ids) - 5 and stats.chunks_in_cache == 5
    assert stats.chunks_duplicate == stats.chunks_total - len(ids) > 0
    assert _store_ids(cache) == ids
    for cid in ids:
        assert cache.get_raw(cid) == local_store.get_raw(cid)
    with open_index(caibx) as index:
        again = fill_cache([index], local_store, cache)
    assert again.chunks_copied == 0 and again.chunks_in_cache == len(ids)


def test_fill_cache_reports_missing_and_invalid_source_chunks(tmp_path, rng_bytes, local_store):
    caibx = _make(tmp_path, "a", rng_bytes(300_000, 8), local_store)
    ids = sorted(_ids(caibx))
    cache = LocalStore(str(tmp_path / "cache"), sync=False)
    os.unlink(local_store.chunk_path(ids[1]))
    with open_index(caibx) as index, pytest.raises(ChunkMissing) as err:
        fill_cache([index], local_store, cache)
    assert ids[1].hex() in str(err.value) and local_store.path in str(err.value)
    with open(local_store.chunk_path(ids[1]), "wb") as f:
        f.write(local_store.get_raw(ids[0]))
    with open_index(caibx) as index, pytest.raises(ChunkInvalid):
        fill_cache([index], local_store, cache)
    assert not cache.has_chunk(ids[1])


def test_chop_stores_the_chunks_of_a_blob(tmp_path, rng_bytes, local_store):
    data = rng_bytes(MIB, 9) + bytes(300_000) + rng_bytes(MIB, 9)[:100_000]
    caibx = _make(tmp_path, "a", data, None)
    with open_index(caibx) as index:
        stats = chop(index, str(tmp_path / "a"), local_store, concurrency=2)
    ids = _ids(caibx)
    assert _store_ids(local_store) == ids
    assert stats.chunks_stored == len(ids) and stats.bytes_total == len(data)
    assert stats.chunks_duplicate == stats.chunks_total - len(ids) > 0
    with open_index(caibx) as index:
        again = chop(index, str(tmp_path / "a"), local_store)
    assert again.chunks_stored == 0 and again.chunks_in_store == len(ids)
    assert verify_store(local_store, SHA512_256).invalid == []


def test_chop_rejects_a_changed_blob(tmp_path, rng_bytes, local_store):
    data = rng_bytes(500_000, 10)
    caibx = _make(tmp_path, "a", data, None)
    changed = bytearray(data)
    changed[200_000] ^= 1
    (tmp_path / "a").write_bytes(bytes(changed))
    with open_index(caibx) as index, pytest.raises(ChunkInvalid, match="offset"):
        chop(index, str(tmp_path / "a"), local_store)
    (tmp_path / "a").write_bytes(data[:400_000])
    with open_index(caibx) as index, pytest.raises((FormatError, ChunkInvalid)):
        chop(index, str(tmp_path / "a"), local_store)


def test_verify_repair_keeps_chunks_of_the_other_digest(tmp_path) -> None:
    """A store holding SHA256 chunks is not wiped by a SHA512/256 verify -r."""
    from casync_format import chunk as chunk_codec
    from casync_format.digest import SHA256, SHA512_256
    from casync_store.ops.maintain import verify_store
    from casync_store.stores.local import LocalStore

    store = LocalStore(str(tmp_path / "store"), sync=False)
    good256 = b"sha256 chunk" * 1000
    good512 = b"sha512/256 chunk" * 1000
    store.put_raw(SHA256(good256), chunk_codec.encode(good256))
    store.put_raw(SHA512_256(good512), chunk_codec.encode(good512))
    bad_id = SHA512_256(b"something else")
    store.put_raw(bad_id, chunk_codec.encode(b"not the data of this id"))
    stats = verify_store(store, SHA512_256, repair=True)
    assert stats.checked == 3 and stats.invalid == [bad_id] and stats.removed == 1
    assert sorted(store.iter_chunk_ids()) == sorted([SHA256(good256), SHA512_256(good512)])


def test_prune_removes_only_stale_temp_files(tmp_path) -> None:
    """Temp files of crashed writers go once they are old; a write in progress stays."""
    import os
    import time

    from casync_format import chunk as chunk_codec
    from casync_format.digest import SHA512_256
    from casync_store.plumbing.atomic import TEMP_PREFIX
    from casync_store.stores.local import STALE_TEMP_AGE, LocalStore

    store = LocalStore(str(tmp_path / "store"), sync=False)
    data = b"kept chunk" * 100
    cid = SHA512_256(data)
    store.put_raw(cid, chunk_codec.encode(data))
    prefix_dir = os.path.dirname(store.chunk_path(cid))
    stale = os.path.join(prefix_dir, f"{TEMP_PREFIX}999-1")
    fresh = os.path.join(prefix_dir, f"{TEMP_PREFIX}999-2")
    for path in (stale, fresh):
        with open(path, "wb") as f:
            f.write(b"partial")
    old = time.time() - STALE_TEMP_AGE - 60
    os.utime(stale, (old, old))
    assert store.prune({cid}) == 0
    assert not os.path.exists(stale) and os.path.exists(fresh)
    assert list(store.iter_chunk_ids()) == [cid]
