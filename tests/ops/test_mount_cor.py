"""mount-index's copy-on-read file (``--cor-file``, ``--cor-state-*``, ``--cor-init-n``) and ``--store-file``.

Real mounts of the CLI on /dev/fuse: the bytes read are kept in the
copy-on-read file, the state (desync's bitmap, least significant bit first)
is written on SIGHUP, which leaves the mount up, and at unmount, and a
remount over an empty store reads the kept chunks from the file. An init
state fills a new file in the background. ``--store-file`` is read again on
SIGHUP under a live mount. :class:`CorFile` itself is tested without FUSE.
"""

# ruff: noqa: F811  (the fixtures blob and need_fuse come from test_mount)
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from casync_format.errors import StoreError
from casync_format.index import read_index
from casync_store import LocalStore
from casync_store.ops.sparse import CorFile, CorOptions, state_size
from casync_store.pipeline import fetch_chunk
from tests.ops.test_mount import START_TIMEOUT, STOP_TIMEOUT, Blob, blob, need_fuse  # noqa: F401
from tests.support import ROOT
from tests.support.cli import one_error, run

CLI = [sys.executable, os.path.join(ROOT, "pycasync.py")]


def _bits(state: bytes) -> set[int]:
    return {i for i in range(len(state) * 8) if state[i // 8] >> (i % 8) & 1}


def _state_of(items: set[int], count: int) -> bytes:
    raw = bytearray(state_size(count))
    for i in items:
        raw[i // 8] |= 1 << (i % 8)
    return bytes(raw)


class Mount:
    """``pycasync mount-index ARGS INDEX MNT`` as a child process, until unmounted."""

    def __init__(self, blob: Blob, mnt: str, *args: str) -> None:
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.file = os.path.join(mnt, "disk.img")
        self.log = mnt + ".log"
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen([*CLI, "mount-index", *args, blob.index, mnt],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mount-index did not mount: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def pread(self, offset: int, size: int) -> bytes:
        fd = os.open(self.file, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def unmount(self) -> int:
        subprocess.run(["fusermount", "-u", self.mnt], check=True, capture_output=True)
        code = self.proc.wait(STOP_TIMEOUT)
        assert not os.path.ismount(self.mnt)
        return code

    def stop(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount", "-u", "-z", self.mnt], check=False, capture_output=True)
        if self.proc.poll() is None:
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def mounts() -> Iterator[list[Mount]]:
    made: list[Mount] = []
    yield made
    for m in made:
        m.stop()


def _wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + 20
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _items_of(blob: Blob, lo: int, hi: int) -> set[int]:
    return {i for i, (start, size, _) in enumerate(blob.items()) if start < hi and start + size > lo}


@pytest.mark.usefixtures("need_fuse")
def test_cor_file_is_kept_across_remounts(blob: Blob, tmp_path: os.PathLike[str],
                                          mounts: list[Mount]) -> None:  # fmt: skip
    d = str(tmp_path)
    cor, state, empty = f"{d}/disk.cor", f"{d}/disk.state", f"{d}/empty"
    os.mkdir(empty)
    items = blob.items()
    m = Mount(blob, f"{d}/mnt", "-s", blob.store, "--cor-file", cor, "--cor-state-save", state)
    mounts.append(m)
    ranges = [(0, 150_000), (2_500_000, 70_000)]
    for off, size in ranges:
        assert m.pread(off, size) == blob.data[off : off + size]
    m.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: os.path.exists(state), "the state file")
    assert m.proc.poll() is None and os.path.ismount(m.mnt)  # SIGHUP saves; it does not unmount
    read_items = set().union(*(_items_of(blob, off, off + size) for off, size in ranges))
    zero = {i for i, (start, size, _) in enumerate(items) if blob.data[start : start + size] == bytes(size)}
    with open(state, "rb") as f:
        saved = f.read()
    assert len(saved) == state_size(len(items))
    assert read_items - zero <= _bits(saved)  # readahead may have kept more
    assert m.unmount() == 0
    with open(state, "rb") as f:
        done = _bits(f.read())
    with open(cor, "rb") as f:
        kept = f.read()
    assert len(kept) == len(blob.data)
    for i, (start, size, _) in enumerate(items):
        if i in done:
            assert kept[start : start + size] == blob.data[start : start + size]
        else:
            assert kept[start : start + size] == bytes(size)  # a hole
    # Remount over an empty store: the kept chunks come from the file, the others cannot be read.
    m2 = Mount(blob, f"{d}/mnt2", "-s", empty, "--cor-file", cor, "--cor-state-save", state)
    mounts.append(m2)
    for off, size in ranges:
        assert m2.pread(off, size) == blob.data[off : off + size]
    missing = min(set(range(len(items))) - done - zero)
    with pytest.raises(OSError):
        m2.pread(items[missing][0], 10)
    assert m2.unmount() == 0


@pytest.mark.usefixtures("need_fuse")
def test_cor_state_init_fills_a_new_file(blob: Blob, tmp_path: os.PathLike[str], mounts: list[Mount]) -> None:
    d = str(tmp_path)
    items = blob.items()
    wanted = {0, 3, 7, len(items) - 1}
    init, saved, cor = f"{d}/init.state", f"{d}/saved.state", f"{d}/new.cor"
    with open(init, "wb") as f:
        f.write(_state_of(wanted, len(items)))
    with open(cor, "wb") as f:
        f.write(b"stale bytes of something else")
    m = Mount(blob, f"{d}/mnt", "-s", blob.store, "--cor-file", cor, "--cor-state-init", init,
              "--cor-init-n", "2", "--cor-state-save", saved)
    mounts.append(m)

    def filled() -> bool:
        with open(cor, "rb") as f:
            kept = f.read()
        return all(kept[s : s + n] == blob.data[s : s + n] for i, (s, n, _) in enumerate(items)
                   if i in wanted)  # fmt: skip

    _wait_for(filled, "the init state's chunks in the new file")
    assert m.unmount() == 0
    with open(saved, "rb") as f:
        assert _bits(f.read()) == wanted
    with open(cor, "rb") as f:
        kept = f.read()
    start, size, _ = items[1]
    assert kept[start : start + size] == bytes(size)  # not asked for: a hole, old content gone


@pytest.mark.usefixtures("need_fuse")
def test_store_file_reloads_on_sighup(blob: Blob, tmp_path: os.PathLike[str], mounts: list[Mount]) -> None:
    d = str(tmp_path)
    empty, sf = f"{d}/empty", f"{d}/stores.json"
    os.mkdir(empty)
    with open(sf, "w") as f:
        json.dump({"stores": [empty]}, f)
    m = Mount(blob, f"{d}/mnt", "-v", "--store-file", sf)
    mounts.append(m)
    with pytest.raises(OSError):
        m.pread(0, 100)
    with open(sf, "w") as f:
        json.dump({"stores": [empty, blob.store], "cache": f"{d}/cache"}, f)
    m.proc.send_signal(signal.SIGHUP)
    _wait_for(lambda: "reloaded" in m.stderr() or m.proc.poll() is not None, "the reload")
    assert m.proc.poll() is None
    assert m.pread(1_000_000, 100_000) == blob.data[1_000_000:1_100_000]
    assert os.listdir(f"{d}/cache")  # the cache of the new configuration was filled
    assert m.unmount() == 0


def test_cor_flag_errors(env: dict[str, str], blob: Blob, tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    mnt = f"{d}/mnt"
    os.mkdir(mnt)
    one_error(run(env, "mount-index", "-s", blob.store, "--cor-state-save", f"{d}/s", blob.index, mnt), 2,
              "need --cor-file")  # fmt: skip
    one_error(run(env, "mount-index", "-s", blob.store, "--cor-file", f"{d}/c", "--cor-init-n", "0",
                  blob.index, mnt), 2, "--cor-init-n")  # fmt: skip
    with open(f"{d}/bad.state", "wb") as f:
        f.write(b"\1")
    one_error(run(env, "mount-index", "-s", blob.store, "--cor-file", f"{d}/c", "--cor-state-init",
                  f"{d}/bad.state", blob.index, mnt), 1, "does not match the index")  # fmt: skip
    one_error(run(env, "mount-index", "--store-file", f"{d}/none.json", blob.index, mnt), 2,
              "cannot read store")  # fmt: skip
    # desync has no --sparse-file (its sparse copy-on-read file is --cor-file): an unknown option
    one_error(run(env, "mount-index", "-s", blob.store, "--sparse-file", f"{d}/c", blob.index, mnt), 2,
              "--sparse-file")  # fmt: skip
    assert not os.path.ismount(mnt)


# ---------------------------------------------------------------- CorFile without FUSE


def _cor(blob: Blob, path: str, calls: list[int], **kw: object) -> tuple[CorFile, object]:
    index = read_index(open(blob.index, "rb"))  # noqa: SIM115 - lives as long as the test
    store = LocalStore(blob.store)

    def fetch(item: object) -> bytes:
        calls.append(1)
        time.sleep(0.01)
        return fetch_chunk(store, item, index.digest)  # type: ignore[arg-type]

    return CorFile(CorOptions(path, **kw), index, fetch), index  # type: ignore[arg-type]


def test_corfile_bitmap_layout_and_single_fetch(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    calls: list[int] = []
    state = os.path.join(tmp_path, "s")
    cor, index = _cor(blob, os.path.join(tmp_path, "c"), calls, state_save=state)
    item9 = index[9]  # type: ignore[index]
    threads = [threading.Thread(target=cor.load, args=(9, item9)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cor.load(0, index[0])  # type: ignore[index]
    assert len(calls) == 2  # eight concurrent loads of item 9: one fetch
    assert cor.state()[:2] == bytes([0b1, 0b10])  # item 0: bit 0 of byte 0; item 9: bit 1 of byte 1
    assert cor.read(item9.start, item9.size) == blob.data[item9.start : item9.start + item9.size]
    cor.close()
    with open(state, "rb") as f:
        assert _bits(f.read()) == {0, 9}


def test_corfile_state_of_another_size_starts_afresh(blob: Blob, tmp_path: os.PathLike[str]) -> None:
    path, state = os.path.join(tmp_path, "c"), os.path.join(tmp_path, "s")
    shutil.copy(blob.path, path)  # the right size and content, but the state does not fit: reset
    with open(state, "wb") as f:
        f.write(b"\xff")
    cor, _ = _cor(blob, path, [], state_save=state)
    assert cor.state() == bytes(len(cor.state()))
    assert os.path.getsize(path) == len(blob.data)
    with open(path, "rb") as f:
        assert f.read(4096) == bytes(4096)
    cor.close()
    with pytest.raises(StoreError, match="cannot open copy-on-read file"):
        _cor(blob, os.path.join(tmp_path, "no", "dir", "c"), [])
