"""Tests of extract's seeds (``casync_store.ops.seed``) through the library.

Real files and a real local store: chunks a seed must provide are deleted
from the store, so a fetch of one would fail the extract, and reads are
counted. A seed without an index of a shifted image, an index seed, the
self-seed of a repeated region, a seed whose bytes change after it was
chunked (the output stays right, the store fills in), ``-k`` into an old
version with a seed, a pipe as output, zero chunks staying holes, seed
validation, A/B slots on loop devices, and the ``INDEX[:DATA[:OPTIONS]]``
parser (hypothesis).
"""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.chunker import ChunkerParams
from casync_format.errors import ParameterError, SeedError
from casync_store import IndexSeed, LocalStore, RawSeed, extract
from casync_store.ops.info import chunk_file
from casync_store.ops.make import make
from casync_store.ops.seed import parse_seed, seed_dir, split_seed_spec
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.stores.indexio import open_index

MIB = 1024 * 1024
SMALL = ChunkerParams(4096, 16384, 65536)


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


def _made(tmp_path, name: str, data: bytes) -> tuple[str, str, CountingStore]:
    """Write ``data`` to NAME, make NAME.caibx into a store NAME.store; (path, index, store)."""
    path = tmp_path / name
    path.write_bytes(data)
    store = CountingStore(str(tmp_path / f"{name}.store"))
    make(f"{path}.caibx", str(path), store, params=SMALL)
    store.reads = 0
    return str(path), f"{path}.caibx", store


def _drop(store: LocalStore, path: str) -> int:
    """Delete from ``store`` every chunk ``path`` is cut into; how many were deleted."""
    gone = 0
    for _start, _size, cid in chunk_file(path, SMALL):
        if store.has_chunk(cid):
            store.remove_chunk(cid)
            gone += 1
    return gone


def _no_temp(directory) -> None:
    assert not [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


def test_raw_seed_of_a_shifted_image(tmp_path, rng_bytes):
    old = rng_bytes(3 * MIB, 1)
    new = b"x" + old[: 2 * MIB] + rng_bytes(5000, 2) + old[2 * MIB :]
    seed = tmp_path / "v1.img"
    seed.write_bytes(old)
    _path, index_path, store = _made(tmp_path, "v2.img", new)
    assert _drop(store, str(seed)) > 100  # what the seed has, the store no longer does
    out = tmp_path / "out"
    with open_index(index_path) as index:
        stats = extract(index, str(out), store, seeds=[RawSeed(str(seed))])
    assert out.read_bytes() == new
    assert stats.chunks_from_store == store.reads <= 6  # around the two edits only
    assert stats.chunks_from_seeds > 150
    assert stats.bytes_copied_from_seeds + stats.bytes_cloned_from_seeds > len(old) - 200_000
    assert stats.seeds == 2 and stats.chunks_total == stats.chunks_from_seeds + stats.chunks_from_store
    _no_temp(tmp_path)


def test_index_seed_and_seed_strings(tmp_path, rng_bytes):
    old = rng_bytes(2 * MIB, 3)
    new = old[:MIB] + rng_bytes(20_000, 4) + old[MIB:]
    seed_path, seed_index, _ = _made(tmp_path, "v1.img", old)
    _path, index_path, store = _made(tmp_path, "v2.img", new)
    _drop(store, seed_path)
    for seeds in ([IndexSeed(seed_index)], [seed_index], [f"{seed_index}:{seed_path}:opts"]):
        out = tmp_path / "out"
        with open_index(index_path) as index:
            stats = extract(index, str(out), store, seeds=seeds)
        assert out.read_bytes() == new
        assert stats.chunks_from_store <= 4


def test_self_seed_of_a_repeated_region(tmp_path, rng_bytes):
    region = rng_bytes(MIB, 5)
    data = region + rng_bytes(300_000, 6) + region + region
    _path, index_path, store = _made(tmp_path, "img", data)
    out = tmp_path / "out"
    with open_index(index_path) as index:
        unique = len({item.id for item in index})
        stats = extract(index, str(out), store)
    assert out.read_bytes() == data
    assert stats.chunks_from_self_seed > 60  # the repeats came from the output itself
    # (a repeat met while its first occurrence is still in flight waits for it)
    assert store.reads == stats.chunks_from_store <= unique
    assert stats.chunks_total == stats.chunks_from_store + stats.chunks_from_seeds


class ChangingSeed(RawSeed):
    """A raw seed whose file is overwritten in places right after it was chunked (a seed changing mid-run)."""

    def load(self, index, concurrency=None, progress=None, label="") -> None:
        super().load(index, concurrency, progress, label)
        with open(self.data_path, "r+b") as f:
            for chunk in self.chunks[3:60:7]:
                f.seek(chunk.start + chunk.size // 2)
                f.write(b"changed!")


def test_a_seed_changing_during_extract_falls_back_to_the_store(tmp_path, rng_bytes):
    data = rng_bytes(2 * MIB, 7)
    _path, index_path, store = _made(tmp_path, "img", data)
    seed = tmp_path / "seed"
    seed.write_bytes(data)
    out = tmp_path / "out"
    with open_index(index_path) as index:
        stats = extract(index, str(out), store, seeds=[ChangingSeed(str(seed))])
    assert out.read_bytes() == data
    assert stats.chunks_from_store >= 9  # every changed chunk was fetched instead
    assert stats.chunks_from_seeds > 50


class ShrinkingSeed(RawSeed):
    """A raw seed whose file is cut to half by another writer after its first chunks were read."""

    def regenerate(self, index, concurrency=None, progress=None, label="") -> None:
        half = os.path.getsize(self.data_path) // 2
        timer = threading.Timer(0.0, os.truncate, (self.data_path, half))
        timer.start()  # while the chunker reads: a short read or a changed size
        try:
            super().regenerate(index, concurrency, progress, label)
        finally:
            timer.join()


def test_a_seed_shrinking_while_it_is_chunked_is_still_used_safely(tmp_path, rng_bytes):
    data = rng_bytes(8 * MIB, 17)
    _path, index_path, store = _made(tmp_path, "img", data)
    for round_ in range(4):
        seed = tmp_path / f"seed{round_}"
        seed.write_bytes(data)
        out = tmp_path / "out"
        with open_index(index_path) as index:
            stats = extract(index, str(out), store, seeds=[ShrinkingSeed(str(seed))])
        assert out.read_bytes() == data  # what the seed lost came from the store
        assert os.path.getsize(seed) == len(data) // 2
        assert stats.chunks_total == stats.chunks_from_seeds + stats.chunks_from_store


def test_in_place_with_a_seed_into_the_old_version(tmp_path, rng_bytes):
    old = rng_bytes(2 * MIB, 8)
    new = old[: MIB // 2] + rng_bytes(10_000, 9) + old[MIB // 2 : MIB] + rng_bytes(3000, 10) + old[MIB:]
    seed_path, seed_index, _ = _made(tmp_path, "slotA", old)
    _path, index_path, store = _made(tmp_path, "new", new)
    _drop(store, seed_path)
    slot_b = tmp_path / "slotB"
    slot_b.write_bytes(old)  # the other slot holds the old version
    with open_index(index_path) as index:
        stats = extract(index, str(slot_b), store, in_place=True, seeds=[seed_index])
    assert slot_b.read_bytes() == new
    assert stats.chunks_in_place > 10  # the unshifted head was kept
    assert stats.chunks_from_seeds > 50 and stats.chunks_from_store <= 6
    # Again: everything is in place now.
    with open_index(index_path) as index:
        again = extract(index, str(slot_b), store, in_place=True, seeds=[seed_index])
    assert again.chunks_in_place == again.chunks_total and slot_b.read_bytes() == new


def test_seeds_into_a_pipe(tmp_path, rng_bytes):
    data = rng_bytes(MIB, 11) + rng_bytes(MIB // 2, 12)
    _path, index_path, store = _made(tmp_path, "img", data)
    seed = tmp_path / "seed"
    seed.write_bytes(data[: MIB + 1000])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = bytearray()

    def drain() -> None:
        with open(fifo, "rb") as f:
            while part := f.read(1 << 16):
                got.extend(part)

    reader = threading.Thread(target=drain)
    reader.start()
    with open_index(index_path) as index:
        stats = extract(index, str(fifo), store, seeds=[RawSeed(str(seed))])
    reader.join()
    assert bytes(got) == data
    assert stats.chunks_from_seeds > 30 and stats.chunks_from_store == store.reads < 40  # the last half MiB


def test_zero_chunks_stay_holes_with_a_seed(tmp_path, rng_bytes):
    data = rng_bytes(300_000, 13) + bytes(8 * MIB) + rng_bytes(300_000, 14)
    seed = tmp_path / "seed"
    seed.write_bytes(data)
    _path, index_path, store = _made(tmp_path, "img", data)
    out = tmp_path / "out"
    with open_index(index_path) as index:
        stats = extract(index, str(out), store, seeds=[RawSeed(str(seed))])
    assert out.read_bytes() == data
    assert stats.chunks_zero > 100 and stats.chunks_from_store == 0
    assert os.stat(out).st_blocks * 512 < 4 * MIB  # the zeros were not copied from the seed


def test_invalid_index_seed(tmp_path, rng_bytes):
    data = rng_bytes(MIB, 15)
    seed_path, seed_index, _ = _made(tmp_path, "seed", data)
    _path, index_path, store = _made(tmp_path, "img", data)
    with open(seed_path, "r+b") as f:  # the seed's data no longer matches its index
        f.seek(400_000)
        f.write(b"garbage" * 100)
    out = tmp_path / "out"
    with open_index(index_path) as index:
        with pytest.raises(SeedError, match=r"seed\.caibx: its data does not match"):
            extract(index, str(out), store, seeds=[IndexSeed(seed_index)])
        assert not out.exists()
        skipped = extract(index, str(out), store, seeds=[IndexSeed(seed_index)], invalid_seeds="skip")
        assert skipped.chunks_from_seeds == 0 and out.read_bytes() == data
        seeds = [IndexSeed(seed_index)]
        regenerated = extract(index, str(out), store, seeds=seeds, invalid_seeds="regenerate")
        assert regenerated.chunks_from_store <= 2 and out.read_bytes() == data
    _no_temp(tmp_path)


def test_parse_seed_and_seed_dir(tmp_path, rng_bytes):
    (tmp_path / "a").write_bytes(b"data")
    (tmp_path / "a.caibx").write_bytes(b"")
    (tmp_path / "lonely.caibx").write_bytes(b"")  # no data: left out
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"data")
    (tmp_path / "sub" / "b.caibx").write_bytes(b"")
    both = [str(tmp_path / "a.caibx"), str(tmp_path / "sub/b.caibx")]
    assert [s.name for s in seed_dir(str(tmp_path))] == both
    assert [s.name for s in seed_dir(str(tmp_path), exclude=str(tmp_path / "a.caibx"))] == [
        str(tmp_path / "sub/b.caibx")
    ]
    colon = tmp_path / "pci-0000:00:1f.2"  # a device name with colons is a raw seed, not INDEX:DATA
    colon.write_bytes(b"raw")
    assert isinstance(parse_seed(str(colon)), RawSeed)
    assert isinstance(parse_seed(str(tmp_path / "a.caibx")), IndexSeed)
    assert parse_seed(f"{tmp_path}/x.idx:{tmp_path}/a").data_path == f"{tmp_path}/a"
    with pytest.raises(SeedError, match="no such file"):
        parse_seed(str(tmp_path / "missing"))
    _made(tmp_path, "made", rng_bytes(100_000, 16))
    (tmp_path / "made.idx").write_bytes((tmp_path / "made.caibx").read_bytes())
    with pytest.raises(SeedError, match="is an index"):
        parse_seed(str(tmp_path / "made.idx"))
    with pytest.raises(ParameterError):
        split_seed_spec(":data")


_part = st.text(st.characters(blacklist_characters=":"), min_size=1, max_size=20)


@given(index=_part, data=_part, options=st.one_of(st.none(), st.text(max_size=20)))
def test_split_seed_spec(index, data, options):
    text = f"{index}:{data}" + ("" if options is None else f":{options}")
    if text.endswith(".caibx"):
        assert split_seed_spec(text) == (text, text[: -len(".caibx")], "")
    else:
        assert split_seed_spec(text) == (index, data, options or "")


@given(name=_part)
def test_split_seed_spec_without_colon(name):
    if name.endswith(".caibx"):
        assert split_seed_spec(name) == (name, name[:-6], "")
    else:
        assert split_seed_spec(name) == (None, name, "")


def _loop(backing) -> str:
    import subprocess

    try:
        command = ["losetup", "-f", "--show", str(backing)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("losetup is not available")
    if proc.returncode != 0:
        pytest.skip(f"cannot set up a loop device: {proc.stderr.strip()}")
    return proc.stdout.strip()


def test_ab_slots_on_block_devices(tmp_path, rng_bytes):
    """The A/B case on real block devices: slot A (no index) seeds slot B, written in place."""
    import subprocess

    old = rng_bytes(3 * MIB, 17)
    new = b"v2" + old[: 2 * MIB] + rng_bytes(30_000, 18) + old[2 * MIB :]
    (tmp_path / "a.img").write_bytes(old + bytes(MIB))
    (tmp_path / "b.img").write_bytes(b"\x55" * 4 * MIB)
    _path, index_path, store = _made(tmp_path, "new", new)
    _drop(store, str(tmp_path / "a.img"))
    slot_a = _loop(tmp_path / "a.img")
    try:
        slot_b = _loop(tmp_path / "b.img")
        try:
            with open_index(index_path) as index:
                stats = extract(index, slot_b, store, in_place=True, seeds=[RawSeed(slot_a)])
            with open(slot_b, "rb") as dev:
                assert dev.read(len(new)) == new
            assert stats.chunks_from_store <= 6 and stats.chunks_from_seeds > 150
            assert stats.bytes_cloned_from_seeds == 0  # devices are copied, never cloned
        finally:
            subprocess.run(["losetup", "-d", slot_b], capture_output=True, timeout=30)
    finally:
        subprocess.run(["losetup", "-d", slot_a], capture_output=True, timeout=30)
