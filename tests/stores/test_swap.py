"""SwapStore: the store is replaced at once, the old one closed only after its last call."""

from __future__ import annotations

import os
import threading

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, StoreError
from casync_store import LocalStore
from casync_store.stores.router import StoreRouter
from casync_store.stores.swap import SwapStore, SwapWriteStore


class _SlowStore(LocalStore):
    """A LocalStore whose reads wait for ``release`` (a call in flight), and that records close()."""

    def __init__(self, path: str) -> None:
        super().__init__(path, sync=False)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = 0

    def get_raw(self, chunk_id: bytes) -> bytes:
        self.entered.set()
        assert self.release.wait(10)
        return super().get_raw(chunk_id)

    def close(self) -> None:
        self.closed += 1
        super().close()


def _chunk(store: LocalStore, seed: int) -> tuple[bytes, bytes]:
    data = os.urandom(1000 + seed)
    cid = SHA512_256(data)
    store.put_raw(cid, chunk_codec.encode(data))
    return cid, data


def test_swap_waits_for_calls_in_flight_before_closing(tmp_path: os.PathLike[str]) -> None:
    old = _SlowStore(os.path.join(tmp_path, "old"))
    new = LocalStore(os.path.join(tmp_path, "new"), sync=False)
    cid, data = _chunk(old, 1)
    nid, ndata = _chunk(new, 2)
    swap = SwapStore(old)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(swap.get_chunk(cid, SHA512_256)))
    reader.start()
    assert old.entered.wait(10)
    swap.swap(new)
    assert old.closed == 0  # still in use
    assert swap.get_chunk(nid, SHA512_256) == ndata and str(swap) == str(new)  # new calls: the new store
    with pytest.raises(ChunkMissing):
        swap.get_raw(cid)
    old.release.set()
    reader.join(10)
    assert got == [data] and old.closed == 1
    swap.close()
    assert swap.swaps == 1


def test_idle_store_is_closed_at_once_and_only_once(tmp_path: os.PathLike[str]) -> None:
    old = _SlowStore(os.path.join(tmp_path, "old"))
    swap = SwapStore(old)
    swap.swap(LocalStore(os.path.join(tmp_path, "new"), sync=False))
    swap.close()
    swap.close()
    assert old.closed == 1


def test_writable_swap_needs_writable_stores(tmp_path: os.PathLike[str]) -> None:
    local = LocalStore(os.path.join(tmp_path, "w"), sync=False)
    swap = SwapWriteStore(local)
    with pytest.raises(StoreError, match="writable"):
        swap.swap(StoreRouter([local, local]))  # a chain of stores: read-only
    assert swap.current is local
    data = b"x" * 100
    swap.store_chunk(SHA512_256(data), data)
    assert local.get_chunk(SHA512_256(data), SHA512_256) == data
    assert swap.compression == "zstd"
