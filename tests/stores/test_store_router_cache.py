"""The CachedStore's and the StoreRouter's own rules, and the store capability checks.

CachedStore: a miss fills the cache with the remote's bytes (a raw read does
not), a hit touches the cached file's mtime and does not ask the remote, a
damaged cached copy is replaced and a damaged remote copy is not cached.
StoreRouter: the first store holding a chunk wins, a StoreError or an invalid
chunk is final (no fallback to the next member), members keep their own
verify setting; plus :func:`combine`'s construction rules and
``require_writable`` / ``require_prunable``. The shared contract these
wrappers also meet is in ``test_store_contract.py``.
"""

from __future__ import annotations

import os
import time

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_store import CachedStore, LocalStore, StoreRouter, combine
from casync_store.stores.base import require_prunable, require_writable
from tests.support.chunks import make_chunk

# --- CachedStore ----------------------------------------------------------------------------------


@pytest.fixture
def cache_pair(tmp_path: os.PathLike[str]) -> CachePair:
    remote = LocalStore(os.path.join(str(tmp_path), "remote"), sync=False)
    cache = LocalStore(os.path.join(str(tmp_path), "cache"), sync=False)
    return CachedStore(remote, cache), remote, cache


def _age(store: LocalStore, cid: bytes, seconds: float = 3600) -> float:
    old = time.time() - seconds
    os.utime(store.chunk_path(cid), (old, old))
    return old


CachePair = tuple[CachedStore, LocalStore, LocalStore]


def test_cache_miss_fills_cache_with_remote_bytes(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, data, blob = make_chunk(30, method="xz")
    remote.put_raw(cid, blob)
    assert cached.get_chunk(cid, SHA512_256, size=len(data)) == data
    assert cache.get_raw(cid) == blob
    cid2, _data2, blob2 = make_chunk(31)
    remote.put_raw(cid2, blob2)
    # A raw read cannot verify, so it is served but does not fill the cache.
    assert cached.get_raw(cid2) == blob2 and not cache.has_chunk(cid2)


def test_cache_hit_touches_mtime(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, _data, blob = make_chunk(32)
    cache.put_raw(cid, blob)  # only in the cache: a hit must not ask the remote
    for read in (lambda: cached.get_chunk(cid, SHA512_256), lambda: cached.get_raw(cid)):
        old = _age(cache, cid)
        read()
        assert os.stat(cache.chunk_path(cid)).st_mtime > old + 1800
    assert not remote.has_chunk(cid)


def test_damaged_cache_copy_replaced(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, data, blob = make_chunk(33)
    remote.put_raw(cid, blob)
    for bad in (make_chunk(34)[2], b"garbage", blob[:10]):
        cache.put_raw(cid, bad)
        assert cached.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert cache.get_raw(cid) == blob


def test_damaged_remote_copy_not_cached(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, _data, _blob = make_chunk(35)
    remote.put_raw(cid, make_chunk(36)[2])
    with pytest.raises(ChunkInvalid) as exc:
        cached.get_chunk(cid, SHA512_256)
    assert exc.value.store is remote
    assert not cache.has_chunk(cid)


def test_cache_has_chunk(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    a, b, c = make_chunk(37), make_chunk(38), make_chunk(39)
    remote.put_raw(a[0], a[2])
    cache.put_raw(b[0], b[2])
    assert cached.has_chunk(a[0]) and cached.has_chunk(b[0]) and not cached.has_chunk(c[0])


# --- StoreRouter ----------------------------------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path: os.PathLike[str]) -> tuple[LocalStore, LocalStore]:
    return (
        LocalStore(os.path.join(str(tmp_path), "a"), sync=False),
        LocalStore(os.path.join(str(tmp_path), "b"), sync=False),
    )


def test_router_order(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    router = StoreRouter([a, b])
    cid, data, blob = make_chunk(40)
    blob_xz = chunk_codec.encode(data, "xz")
    b.put_raw(cid, blob_xz)
    assert router.get_raw(cid) == blob_xz
    a.put_raw(cid, blob)
    assert router.get_raw(cid) == blob  # the first store that holds it wins
    assert router.get_chunk(cid, SHA512_256) == data
    assert str(router) == f"{a}, {b}"


def test_router_store_error_is_final(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    cid, _data, blob = make_chunk(41)
    b.put_raw(cid, blob)

    class Unreadable(LocalStore):  # a cannot read the chunk: StoreError, not ChunkMissing
        def get_raw(self, chunk_id: bytes) -> bytes:
            raise StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: Permission denied")

    router = StoreRouter([Unreadable(a.path), b])
    with pytest.raises(StoreError) as exc:
        router.get_raw(cid)
    assert not isinstance(exc.value, ChunkMissing)
    with pytest.raises(StoreError):
        router.get_chunk(cid, SHA512_256)


def test_router_invalid_is_final_and_names_member(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    cid, _data, blob = make_chunk(42)
    a.put_raw(cid, make_chunk(43)[2])
    b.put_raw(cid, blob)
    with pytest.raises(ChunkInvalid) as exc:
        StoreRouter([a, b]).get_chunk(cid, SHA512_256)
    assert exc.value.store is a


def test_router_members_keep_their_verify_setting(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, _b = two_stores
    trusted = LocalStore(a.path, verify=False)
    cid = make_chunk(44)[0]
    _other_id, other_data, other_blob = make_chunk(45)
    a.put_raw(cid, other_blob)
    assert StoreRouter([trusted]).get_chunk(cid, SHA256) == other_data


def test_router_and_combine_construction(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    with pytest.raises(StoreError):
        StoreRouter([])
    with pytest.raises(StoreError):
        combine([])
    assert combine([a]) is a
    assert isinstance(combine([a, b]), StoreRouter)
    cached = combine([a, b], cache=LocalStore(a.path + "-cache"))
    assert isinstance(cached, CachedStore) and isinstance(cached.remote, StoreRouter)
    cache = LocalStore(a.path + "-cache")
    assert combine([], cache=cache) is cache


def test_capability_checks(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    assert require_writable(a) is a and require_prunable(a) is a
    for store in (StoreRouter([a, b]), CachedStore(a, b)):
        with pytest.raises(StoreError) as exc:
            require_writable(store)
        assert str(a) in str(exc.value)
        with pytest.raises(StoreError):
            require_prunable(store)
