"""Tests of info, list-chunks and the operations' progress reports.

index_info's numbers are checked against values computed by hand from the
index (with stores, seed indexes and a cache), under desync's JSON keys in
desync's order; list_chunks yields every id in blob order; an operation draws
its progress bar to the end. (The bar itself: tests/plumbing/test_progress.py.)
"""

from __future__ import annotations

import io

from casync_format.chunker import ChunkerParams
from casync_format.index import Index
from casync_store import LocalStore
from casync_store.ops.info import index_info, list_chunks
from casync_store.ops.make import make
from casync_store.plumbing.progress import ProgressBar
from casync_store.stores.indexio import open_index

SMALL = ChunkerParams(4096, 16384, 65536)
DESYNC_KEYS = [
    "total",
    "unique",
    "in-store",
    "in-seed",
    "in-cache",
    "not-in-seed-nor-cache",
    "size",
    "dedup-size-not-in-seed",
    "dedup-size-not-in-seed-nor-cache",
    "dedup-size-not-in-seed-nor-cache-compressed",
    "chunk-size-min",
    "chunk-size-avg",
    "chunk-size-max",
]


def _make(tmp_path, name: str, data: bytes, store) -> str:
    (tmp_path / name).write_bytes(data)
    make(str(tmp_path / f"{name}.caibx"), str(tmp_path / name), store, params=SMALL)
    return str(tmp_path / f"{name}.caibx")


def _items(path: str):
    with open(path, "rb") as f:
        return list(Index(f))


def test_info_without_stores(tmp_path, rng_bytes):
    block = rng_bytes(100_000, 1)
    caibx = _make(tmp_path, "a", rng_bytes(400_000, 2) + block + block + block, None)
    items = _items(caibx)
    unique = {c.id: c.size for c in items}
    with open_index(caibx) as index:
        info = index_info(index)
    d = info.to_dict()
    assert list(d) == DESYNC_KEYS
    assert d["total"] == len(items) and d["unique"] == len(unique) < len(items)
    assert d["size"] == 700_000
    assert d["dedup-size-not-in-seed"] == d["dedup-size-not-in-seed-nor-cache"] == sum(unique.values())
    assert d["not-in-seed-nor-cache"] == len(unique)
    assert d["in-store"] == d["in-seed"] == d["in-cache"] == 0
    assert (d["chunk-size-min"], d["chunk-size-avg"], d["chunk-size-max"]) == (4096, 16384, 65536)


def test_info_with_stores_seed_and_cache(tmp_path, rng_bytes):
    store_a = LocalStore(str(tmp_path / "sa"), sync=False)
    store_b = LocalStore(str(tmp_path / "sb"), sync=False)
    cache = LocalStore(str(tmp_path / "cache"), sync=False)
    data = rng_bytes(600_000, 3)
    caibx = _make(tmp_path, "a", data, None)
    seed = _make(tmp_path, "seed", data[:200_000], None)
    unique = {c.id: c.size for c in _items(caibx)}
    ids = sorted(unique)
    seed_ids = {c.id for c in _items(seed)} & set(unique)
    for cid in ids[:3]:
        store_a.put_raw(cid, b"x")
    for cid in ids[2:5]:
        store_b.put_raw(cid, b"x")
    for cid in ids[-2:]:
        cache.put_raw(cid, b"x")
    with open_index(caibx) as index, open_index(seed) as seed_index:
        info = index_info(index, [store_a, store_b], concurrency=3, seeds=[seed_index], cache=cache)
    assert info.in_store == 5
    assert info.in_seed == len(seed_ids) > 0
    assert info.in_cache == 2
    neither = [cid for cid in ids if cid not in seed_ids and cid not in ids[-2:]]
    assert info.not_in_seed_nor_cache == len(neither)
    assert info.dedup_size_not_in_seed == sum(s for c, s in unique.items() if c not in seed_ids)
    assert info.dedup_size_not_in_seed_nor_cache == sum(unique[c] for c in neither)


def test_list_chunks_in_order_with_repeats(tmp_path, rng_bytes):
    block = rng_bytes(70_000, 4)
    caibx = _make(tmp_path, "a", block * 4, None)
    with open_index(caibx) as index:
        listed = list(list_chunks(index))
    assert listed == [c.id.hex() for c in _items(caibx)]
    assert len(set(listed)) < len(listed)


def test_operations_report_progress(tmp_path, rng_bytes):
    out = io.StringIO()
    store = LocalStore(str(tmp_path / "s"), sync=False)
    (tmp_path / "a").write_bytes(rng_bytes(300_000, 5))
    make(str(tmp_path / "a.caibx"), str(tmp_path / "a"), store, progress=ProgressBar(out))
    assert out.getvalue().startswith("\rStoring ") and out.getvalue().endswith(" \r")  # drawn, then blanked

    class Record:
        def __init__(self) -> None:
            self.calls: list[tuple[str, int]] = []
            self.done = 0

        def start(self, label: str, total: int) -> None:
            self.calls.append((label, total))

        def add(self, n: int) -> None:
            self.done += n

        def finish(self) -> None:
            self.calls.append(("finish", self.done))

    record = Record()
    make(str(tmp_path / "b.caibx"), str(tmp_path / "a"), store, progress=record)
    assert record.calls == [("Storing", 300_000), ("finish", 300_000)]
