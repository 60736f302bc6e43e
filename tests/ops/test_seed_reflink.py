"""Extract with seeds on XFS and btrfs loop mounts: seed runs are cloned, and blocks really shared.

Needs root, ``mkfs.xfs``/``mkfs.btrfs`` and loop devices (skipped without,
failed under ``CI=true``; see :mod:`tests.support.loopfs`). The seed and the
output live on the mounted filesystem; the store does not matter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from casync_format.chunker import ChunkerParams
from casync_store import IndexSeed, LocalStore, RawSeed, extract
from casync_store.ops.make import make
from casync_store.plumbing import clone
from casync_store.stores.indexio import open_index
from tests.support.loopfs import loop_mount, physical_map

MIB = 1 << 20
SMALL = ChunkerParams(4096, 16384, 65536)


@pytest.fixture(params=["xfs", "btrfs"])
def mounted(request: pytest.FixtureRequest) -> Iterator[str]:
    with loop_mount(request.param) as point:
        clone.forget_failures()
        yield point
    clone.forget_failures()


@pytest.mark.parametrize("kind", ["index", "raw"])
def test_seed_runs_are_cloned(mounted, tmp_path, rng_bytes, kind):
    old = rng_bytes(6 * MIB, 41)
    new = old[: 5 * MIB] + rng_bytes(100_000, 42) + old[5 * MIB + 100_000 :]  # same offsets, one edit
    seed = os.path.join(mounted, "slotA")
    with open(seed, "wb") as f:
        f.write(old)
        os.fsync(f.fileno())
    make(seed + ".caibx", seed, params=SMALL)
    src = tmp_path / "v2"
    src.write_bytes(new)
    store = LocalStore(str(tmp_path / "store"), sync=False)
    make(str(tmp_path / "v2.caibx"), str(src), store, params=SMALL)
    out = os.path.join(mounted, "slotB")
    with open_index(str(tmp_path / "v2.caibx")) as index:
        seeds = [IndexSeed(seed + ".caibx")] if kind == "index" else [RawSeed(seed)]
        stats = extract(index, out, store, seeds=seeds)
    with open(out, "rb") as f:
        assert f.read() == new
    assert stats.bytes_cloned_from_seeds > 4 * MIB  # most of the seed's part
    block = stats.blocksize
    assert block >= 512
    shared = [a == b and a >= 0 for a, b in
              zip(physical_map(seed, MIB, 2 * MIB, block), physical_map(out, MIB, 2 * MIB, block))]
    assert sum(shared) > 0.8 * len(shared)  # the output shares the seed's blocks
