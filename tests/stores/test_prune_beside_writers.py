"""prune beside writers of the same local store (issue 10, item 7).

Real processes: ``prune`` started at a random moment while ``make`` runs into
one local store, 30 rounds, make's new index not among prune's: no chunk of
make's index is ever missing. A make killed with -9 leaves no lock (a prune
after it finishes at once); refreshing a chunk's mtime never follows a
symlink out of the store.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

from casync_store.ops.make import make
from casync_store.stores.indexio import open_index
from casync_store.stores.local import WRITERS_DIR, LocalStore
from tests.support.racing import cli, cli_env, write

MIB = 1024 * 1024



def _chunk_ids(index_path: str) -> set[bytes]:
    with open_index(index_path) as index:
        return {item.id for item in index}


def _ready_pruner(store: str, index: str) -> subprocess.Popen[bytes]:
    """A ``prune`` process that has opened everything and waits for its "y" (so it starts at once)."""
    proc = subprocess.Popen(
        cli("-v", "prune", "-s", store, index), env=cli_env(), stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    asked = b""
    while not asked.endswith(b"[y/N]: "):
        byte = proc.stderr.read(1)
        assert byte, asked
        asked += byte
    return proc


def test_prune_beside_make_loses_no_chunk(tmp_path: os.PathLike[str]) -> None:
    """30 rounds in which a prune (not given make's index) starts at a random moment while make runs."""
    rng = random.Random(70)
    store = os.path.join(tmp_path, "store")
    base = random.Random(71).randbytes(48 * MIB)
    other = os.path.join(tmp_path, "other.bin")
    write(other, random.Random(72).randbytes(MIB))
    other_index = os.path.join(tmp_path, "other.caibx")
    subprocess.run(cli("make", "-s", store, other_index, other), env=cli_env(), check=True)
    base_src, base_index = os.path.join(tmp_path, "base.bin"), os.path.join(tmp_path, "base.caibx")
    write(base_src, base)
    missing_total, checked, removed_rounds, duration = 0, 0, 0, 1.0
    for round_ in range(60):
        if checked == 30:
            break
        # The store holds base's chunks (old: as if from long ago); the new file shares most of them.
        subprocess.run(cli("make", "-s", store, base_index, base_src), env=cli_env(), check=True)
        for d, _s, names in os.walk(store):
            for n in names:
                if n.endswith(".cacnk"):
                    os.utime(os.path.join(d, n), (1_000_000_000, 1_000_000_000))
        new = bytearray(base)
        for i in range(6):
            at = rng.randrange(0, len(new) - MIB)
            new[at : at + MIB // 2] = random.Random(round_ * 10 + i).randbytes(MIB // 2)
        src, index = os.path.join(tmp_path, "new.bin"), os.path.join(tmp_path, f"new{round_}.caibx")
        write(src, bytes(new))
        pruner = _ready_pruner(store, other_index)
        began = time.monotonic()
        maker = subprocess.Popen(cli("make", "-s", store, index, src), env=cli_env(), stderr=subprocess.PIPE)
        # Before make registers, or while it stores and finds chunks (within the last make's run time).
        time.sleep(rng.uniform(0.0, 0.6 * duration))
        assert pruner.stdin is not None
        pruner.stdin.write(b"y\n")
        pruner.stdin.close()
        assert pruner.stderr is not None
        prune_err = pruner.stderr.read()
        pruner.wait(timeout=120)
        _, err = maker.communicate(timeout=120)
        assert maker.returncode == 0, err
        assert pruner.returncode == 0, prune_err
        # prune -v logs the time from which on it keeps chunks (when it began); a make whose
        # index was renamed into place after that was running then (or started later).
        cutoff = int(re.search(rb"at or after (\d+) ns", prune_err).group(1))  # type: ignore[union-attr]
        running = os.stat(index).st_mtime_ns >= cutoff
        duration = time.monotonic() - began if running else duration * 0.8
        if not running:
            continue  # make had ended before the prune began: nothing is promised for it
        checked += 1
        store_obj = LocalStore(store)
        missing = [cid for cid in _chunk_ids(index) if not store_obj.has_chunk(cid)]
        missing_total += len(missing)
        assert missing == [], f"round {round_}: {len(missing)} chunk(s) of the new index missing"
        left = {n for _d, _s, names in os.walk(store) for n in names if n.endswith(".cacnk")}
        everything = _chunk_ids(base_index) | _chunk_ids(index) | _chunk_ids(other_index)
        removed_rounds += len(left) < len(everything)  # the prune did remove base's unshared chunks
        os.unlink(index)
    print(f"prune beside make: {checked} rounds checked, {removed_rounds} with chunks removed, "
          f"{missing_total} missing")
    assert checked == 30 and removed_rounds == 30 and missing_total == 0
    assert os.listdir(os.path.join(store, WRITERS_DIR)) == []


def test_prune_removes_what_no_writer_needs(tmp_path: os.PathLike[str]) -> None:
    """Right after a make (no writer running), prune removes unreferenced chunks at once."""
    store = os.path.join(tmp_path, "store")
    src, index = os.path.join(tmp_path, "a.bin"), os.path.join(tmp_path, "a.caibx")
    write(src, random.Random(73).randbytes(2 * MIB))
    subprocess.run(cli("make", "-s", store, index, src), env=cli_env(), check=True)
    empty = os.path.join(tmp_path, "empty.caibx")
    write(os.path.join(tmp_path, "empty.bin"), b"")
    subprocess.run(cli("make", empty, os.path.join(tmp_path, "empty.bin")), env=cli_env(), check=True)
    subprocess.run(cli("prune", "-y", "-s", store, empty), env=cli_env(), check=True)
    assert [n for _d, _s, names in os.walk(store) for n in names] == []


def test_killed_make_leaves_no_lock(tmp_path: os.PathLike[str]) -> None:
    store = os.path.join(tmp_path, "store")
    src, index = os.path.join(tmp_path, "a.bin"), os.path.join(tmp_path, "a.caibx")
    write(src, random.Random(74).randbytes(48 * MIB))
    first = os.path.join(tmp_path, "first.caibx")
    subprocess.run(cli("make", "-s", store, first, src), env=cli_env(), check=True)
    writers = os.path.join(store, WRITERS_DIR)
    killed = 0
    for _ in range(12):  # every chunk is present: a make may finish before the kill; such rounds do not count
        if killed == 3:
            break
        proc = subprocess.Popen(cli("make", "-s", store, index, src), env=cli_env())
        deadline = time.monotonic() + 30
        while not os.listdir(writers) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode != -signal.SIGKILL:
            assert proc.returncode == 0 and os.listdir(writers) == []  # a finished make unregistered itself
            continue
        killed += 1
        assert len(os.listdir(writers)) == 1  # its registration stays behind ...
        empty = os.path.join(tmp_path, "empty.caibx")
        write(os.path.join(tmp_path, "e.bin"), b"")
        subprocess.run(cli("make", empty, os.path.join(tmp_path, "e.bin")), env=cli_env(), check=True)
        began = time.monotonic()
        subprocess.run(cli("prune", "-y", "-s", store, empty), env=cli_env(), check=True, timeout=30)
        assert time.monotonic() - began < 5
        assert os.listdir(writers) == []  # ... and the prune removed it (nobody held it)
        assert [n for _d, _s, names in os.walk(store) for n in names if n.endswith(".cacnk")] == []
        subprocess.run(cli("make", "-s", store, first, src), env=cli_env(), check=True)  # the chunks again
    assert killed == 3, f"only {killed} of the makes were killed while running"


def test_refresh_never_follows_a_symlink(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(os.path.join(tmp_path, "store"), sync=False)
    outside = os.path.join(tmp_path, "outside")
    write(outside, b"not a chunk")
    os.utime(outside, (1_000_000_000, 1_000_000_000))
    cid = bytes(range(32))
    path = store.chunk_path(cid)
    os.makedirs(os.path.dirname(path))
    os.symlink(outside, path)
    store.refresh_chunk(cid)
    assert os.stat(outside).st_mtime == 1_000_000_000
    # A symlinked prefix directory is not followed either.
    other = bytes([0xAB] * 32)
    target_dir = os.path.join(tmp_path, "elsewhere")
    os.makedirs(target_dir)
    inner = os.path.join(target_dir, other.hex() + ".cacnk")
    write(inner, b"x")
    os.utime(inner, (1_000_000_000, 1_000_000_000))
    os.symlink(target_dir, os.path.dirname(store.chunk_path(other)))
    assert store.refresh_chunk(other) is False
    assert os.stat(inner).st_mtime == 1_000_000_000
    # make meets such entries as "not present": it stores real chunks over them, the target stays.
    src, index = os.path.join(tmp_path, "a.bin"), os.path.join(tmp_path, "a.caibx")
    write(src, random.Random(75).randbytes(MIB))
    make(index, src, store)
    assert os.stat(outside).st_mtime == 1_000_000_000
