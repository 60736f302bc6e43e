"""Inputs that change while make, chop and tar read them (issue 10, item 6).

Real processes: a 64 MiB file truncated by another process at a random moment
while ``pycasync make`` reads it, 30 rounds: every round exits 0 with the right
index, or 1 with the one line "FILE changed while it was read" and no index
(nor temporary file); never a signal (SIGBUS was exit 135). The same for
``chop`` and ``tar`` (archive and ``-i``); the library's ``make`` raises
:class:`InputChanged` when the file shrinks.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading

import pytest

from casync_format.errors import InputChanged
from casync_store.ops.make import make
from casync_store.stores.local import LocalStore
from tests.support.racing import cli, cli_env, temps, truncate_during, write

MIB = 1024 * 1024
SIZE = 64 * MIB


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """The 64 MiB input and its index (made once, untouched)."""
    directory = tmp_path_factory.mktemp("blob")
    data = random.Random(10).randbytes(SIZE)
    src = os.path.join(directory, "ref.bin")
    write(src, data)
    make(os.path.join(directory, "ref.caibx"), src, None)
    with open(os.path.join(directory, "ref.caibx"), "rb") as f:
        return data, f.read()


def _check_round(proc: subprocess.Popen[bytes], err: bytes, name: str) -> str:
    code = proc.returncode
    assert code is not None and code >= 0 and code != 135, f"killed by a signal: {code} {err!r}"
    if code == 0:
        return "ok"
    lines = err.decode().splitlines()
    assert code == 1 and lines == [f"pycasync: error: {name} changed while it was read"], (code, err)
    return "changed"


def test_make_of_a_file_truncated_meanwhile(tmp_path: os.PathLike[str], blob: tuple[bytes, bytes]) -> None:
    data, ref_index = blob
    rng = random.Random(61)
    src, index, store = (os.path.join(tmp_path, n) for n in ("in.bin", "out.caibx", "store"))
    seen: dict[str, int] = {}
    for round_ in range(30):
        write(src, data)
        for leftover in (index,):
            if os.path.exists(leftover):
                os.unlink(leftover)
        args = ["make", "-s", store, index, src] if round_ % 2 else ["make", index, src]
        proc = subprocess.Popen(cli(*args), cwd=tmp_path, env=cli_env(), stderr=subprocess.PIPE)
        truncate_during(proc, src, rng.uniform(0.0, 0.6), rng.randrange(0, SIZE // 2))
        _, err = proc.communicate(timeout=120)
        fate = _check_round(proc, err, src)
        seen[fate] = seen.get(fate, 0) + 1
        if fate == "ok":
            with open(index, "rb") as f:
                assert f.read() == ref_index  # read completely before the truncation
        else:
            assert not os.path.exists(index)
        assert temps(str(tmp_path)) == []
    assert seen.get("changed", 0) >= 5, seen  # the race was really run


def test_chop_of_a_file_truncated_meanwhile(tmp_path: os.PathLike[str], blob: tuple[bytes, bytes]) -> None:
    data, ref_index = blob
    rng = random.Random(62)
    src, index = os.path.join(tmp_path, "in.bin"), os.path.join(tmp_path, "ref.caibx")
    write(index, ref_index)
    seen: dict[str, int] = {}
    for round_ in range(10):
        write(src, data)
        store = os.path.join(tmp_path, f"store{round_}")
        os.mkdir(store)  # chop needs an existing store, as desync's
        proc = subprocess.Popen(cli("chop", "-s", store, index, src), env=cli_env(), stderr=subprocess.PIPE)
        truncate_during(proc, src, rng.uniform(0.0, 0.5), rng.randrange(0, SIZE // 2))
        _, err = proc.communicate(timeout=120)
        fate = _check_round(proc, err, src)
        seen[fate] = seen.get(fate, 0) + 1
        if fate == "ok":  # every chunk stored, and each checked against its id
            subprocess.run(cli("verify", "-s", store), env=cli_env(), check=True)
    assert seen.get("changed", 0) >= 3, seen


def test_tar_of_a_tree_whose_file_is_truncated_meanwhile(
    tmp_path: os.PathLike[str], blob: tuple[bytes, bytes]
) -> None:
    data, _ = blob
    rng = random.Random(63)
    tree = os.path.join(tmp_path, "tree")
    os.makedirs(os.path.join(tree, "sub"))
    for i in range(20):
        write(os.path.join(tree, "sub", f"small{i}"), b"x" * i)
    big = os.path.join(tree, "big")
    seen: dict[str, int] = {}
    for round_ in range(12):
        write(big, data)
        os.utime(big, ns=(10**18, 10**18))
        out = os.path.join(tmp_path, f"out{round_}.{'caidx' if round_ % 2 else 'catar'}")
        store = os.path.join(tmp_path, "store")
        args = ["tar", "-i", "-s", store, out, tree] if round_ % 2 else ["tar", out, tree]
        proc = subprocess.Popen(cli(*args), env=cli_env(), stderr=subprocess.PIPE)
        truncate_during(proc, big, rng.uniform(0.0, 0.15), rng.randrange(0, SIZE // 2))
        _, err = proc.communicate(timeout=120)
        fate = _check_round(proc, err, big)
        seen[fate] = seen.get(fate, 0) + 1
        if fate == "changed":
            assert not os.path.exists(out)
        assert temps(str(tmp_path)) == []
    assert seen.get("changed", 0) >= 3, seen


class _TruncateAfterFirstChunk:
    """A progress receiver that truncates the input once the first chunk is done."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.done = False

    def start(self, label: str, total: int) -> None:
        pass

    def add(self, n: int) -> None:
        if not self.done:
            self.done = True
            os.truncate(self.path, 1000)

    def finish(self) -> None:
        pass


def test_library_make_raises_input_changed(tmp_path: os.PathLike[str], blob: tuple[bytes, bytes]) -> None:
    data, _ = blob
    src, index = os.path.join(tmp_path, "in.bin"), os.path.join(tmp_path, "x.caibx")
    write(src, data)
    with pytest.raises(InputChanged) as info:
        make(index, src, None, progress=_TruncateAfterFirstChunk(src))
    assert info.value.path == src and str(info.value) == f"{src} changed while it was read"
    assert not os.path.exists(index)
    # A thread truncating at some moment: InputChanged, or an index of the whole file.
    raised = 0
    for delay in (0.0, 0.01, 0.02, 0.05, 0.1):
        write(src, data)
        if os.path.exists(index):  # made whole in an earlier round: a failure must leave none
            os.unlink(index)
        timer = threading.Timer(delay, os.truncate, (src, 12345))
        timer.start()
        try:
            make(index, src, LocalStore(os.path.join(tmp_path, "store"), sync=False))
        except InputChanged:
            raised += 1
            assert not os.path.exists(index)
        finally:
            timer.join()
    assert raised >= 1
