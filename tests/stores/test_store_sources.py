"""Where a chunk came from: ``Store.fetch`` and ``Store.stat_chunk`` on every store, and ``router.sources``.

Run over the store contract's harnesses (local, router, cache, HTTP in front
of a real chunk server, failover, SFTP over the session's OpenSSH server,
S3 on moto): ``fetch`` gives what ``get_chunk`` gives, names a source that
:func:`~casync_store.stores.router.sources` lists and that holds the chunk,
and counts the stored bytes read; ``stat_chunk`` tells present from missing
and, for local and HTTP stores, the stored size. The chain and the cache
name their members: the cache on a hit, the chain's member on a miss.
"""

from __future__ import annotations

import os

import pytest

from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing
from casync_store import CachedStore, LocalStore, StoreRouter
from casync_store.stores.router import sources
from tests.stores.test_store_contract import Harness, harness, make_chunk

__all__ = ["harness"]  # the contract's parametrized fixture, used here


def test_fetch_names_the_source_and_the_stored_bytes(harness: Harness) -> None:
    store = harness.store
    cid, data, blob = make_chunk(71)
    harness.plant(cid, blob)
    got, source, stored = store.fetch(cid, SHA512_256, len(data))
    assert got == data == store.get_chunk(cid, SHA512_256, len(data))
    assert any(source is member for _role, member in sources(store))
    assert source.has_chunk(cid)
    assert stored == len(blob)
    with pytest.raises(ChunkMissing):
        store.fetch(SHA512_256(b"never stored"), SHA512_256)


def test_stat_chunk_tells_present_missing_and_sizes(harness: Harness) -> None:
    store = harness.store
    cid, _data, blob = make_chunk(72)
    assert store.stat_chunk(cid) is None
    harness.plant(cid, blob)
    size = store.stat_chunk(cid)
    assert size == len(blob) or (size == -1 and not store.tells_sizes)
    if isinstance(store, LocalStore) or type(store).__name__ == "HTTPStore":
        assert size == len(blob)  # a file's size; a chunk server's Content-Length for HEAD


def test_cache_and_chain_name_their_members(tmp_path: os.PathLike[str]) -> None:
    a, b, cache = (LocalStore(os.path.join(str(tmp_path), n), sync=False) for n in ("a", "b", "cache"))
    chain = StoreRouter([a, b])
    cached = CachedStore(chain, cache)
    assert sources(cached) == [("cache", cache), ("store", a), ("store", b)]
    cid, data, blob = make_chunk(73, method="xz")
    b.put_raw(cid, blob)
    assert chain.fetch(cid, SHA512_256)[1:] == (b, len(blob))
    got, source, stored = cached.fetch(cid, SHA512_256, len(data))  # a miss: from b, into the cache
    assert (got, source, stored) == (data, b, len(blob))
    assert cache.get_raw(cid) == blob
    got, source, stored = cached.fetch(cid, SHA512_256, len(data))  # now a hit
    assert (got, source, stored) == (data, cache, len(blob))
    assert cached.stat_chunk(cid) == chain.stat_chunk(cid) == len(blob)
    assert cached.stat_chunk(SHA512_256(b"none")) is None


def test_prune_reports_each_chunk_removed(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(os.path.join(str(tmp_path), "s"), sync=False)
    chunks = [make_chunk(80 + i) for i in range(4)]
    for cid, _data, blob in chunks:
        store.put_raw(cid, blob)
    seen: list[tuple[bytes, int]] = []
    old = 1_000_000_000
    for cid, _data, _blob in chunks:  # written long ago: no writer protects them
        os.utime(store.chunk_path(cid), (old, old))
    assert store.prune({chunks[0][0]}, removed=lambda cid, size: seen.append((cid, size))) == 3
    assert sorted(seen) == sorted((cid, len(blob)) for cid, _data, blob in chunks[1:])
