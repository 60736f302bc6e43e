"""The chunk-file accelerator (:mod:`casync_store.stores._chunkfile`) against its reference.

The C ``read_chunk_file``/``write_chunk_file``/``refresh_chunk_file`` must give
the same status tuples as the pure-Python ``read_py``/``write_py``/``refresh_py``
on every kind of name a store can hold: a chunk file, an empty or oversized
one, a file whose size fstat does not tell (``/proc``), a link, a directory, a
FIFO (never blocking), missing names, a temp name already taken, a rename onto
a directory. A local store run with ``PYCASYNC_PUREPYTHON=1`` must behave as the
accelerated one. The C half skips where the extension is not built and fails
under ``PYCASYNC_REQUIRE_C=1``.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from casync_format import _accel
from casync_store.stores import _chunkfile
from tests.support import ROOT, rng_bytes

__all__: list[str] = []

C = _accel.c_module("chunk-file")


def _require_c() -> Any:
    if C is None:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but casync_format._chunker lacks the chunk-file functions")
        pytest.skip("the C extension casync_format._chunker is not built")
    return C


def test_bound_to_c_when_built() -> None:
    if C is None:
        assert _chunkfile.read is _chunkfile.read_py and _chunkfile.BACKEND == "python"
    else:
        assert _chunkfile.read is C.read_chunk_file and _chunkfile.write is C.write_chunk_file
        assert _chunkfile.refresh is C.refresh_chunk_file and _chunkfile.BACKEND == "c"


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A prefix directory holding every kind of name, plus links to it and out of it."""
    d = tmp_path / "abcd"
    d.mkdir()
    (d / "chunk").write_bytes(rng_bytes(70_000, 3))
    (d / "small").write_bytes(b"x" * 10)
    (d / "empty").write_bytes(b"")
    (d / "sub").mkdir()
    os.mkfifo(d / "fifo")
    os.symlink("chunk", d / "link")
    os.symlink("/etc/passwd", d / "out")
    os.symlink("abcd", tmp_path / "dirlink")
    (tmp_path / "plain").write_bytes(b"not a directory")
    return tmp_path


READ_CASES = [
    ("abcd", "chunk", 1 << 20),
    ("abcd", "chunk", 70_000),  # exactly the limit
    ("abcd", "chunk", 69_999),  # one byte too big, by fstat
    ("abcd", "small", 10),
    ("abcd", "empty", 100),
    ("abcd", "sub", 100),
    ("abcd", "fifo", 100),
    ("abcd", "link", 1 << 20),
    ("abcd", "out", 1 << 20),
    ("abcd", "missing", 100),
    ("dirlink", "chunk", 1 << 20),
    ("plain", "chunk", 100),
    ("nodir", "chunk", 100),
]


@pytest.mark.parametrize(("directory", "name", "limit"), READ_CASES)
def test_read_same_as_python(tree: Path, directory: str, name: str, limit: int) -> None:
    c = _require_c()
    expected = _chunkfile.read_py(str(tree / directory), name, limit)
    assert c.read_chunk_file(str(tree / directory), name, limit) == expected
    # The reference itself says what a store needs to know.
    step, value = expected
    kinds: dict[str, Callable[[Any], bool]] = {
        "chunk": lambda v: v == (tree / "abcd" / "chunk").read_bytes() if limit >= 70_000 else v == 70_000,
        "small": lambda v: v == b"x" * 10,
        "empty": lambda v: v == b"",
        "sub": stat.S_ISDIR,
        "fifo": stat.S_ISFIFO,
    }
    if directory != "abcd":
        assert step == 1 and value in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT)
    elif name in ("link", "out", "missing"):
        assert step == 2 and value in (errno.ELOOP, errno.ENOENT)
    else:
        assert step == {"sub": 3, "fifo": 3}.get(name, 4 if limit < 70_000 and name == "chunk" else 0)
        assert kinds[name](value)


def test_read_when_fstat_does_not_tell_the_size() -> None:
    """A /proc file says size 0 and holds more: read to the end, and stop past the limit."""
    c = _require_c()
    directory = f"/proc/{os.getpid()}"
    whole = Path(directory, "cmdline").read_bytes()
    assert os.stat(Path(directory, "cmdline")).st_size == 0 and len(whole) > 8
    for limit in (1 << 20, len(whole), len(whole) - 1, 3):
        expected = _chunkfile.read_py(directory, "cmdline", limit)
        assert c.read_chunk_file(directory, "cmdline", limit) == expected
        assert expected == ((0, whole) if limit >= len(whole) else (4, expected[1]))
        assert expected[1] == whole or expected[1] > limit


@pytest.mark.parametrize("impl", ["c", "python"])
def test_write_and_its_failures(tmp_path: Path, impl: str) -> None:
    write = _require_c().write_chunk_file if impl == "c" else _chunkfile.write_py
    d = tmp_path / "abcd"
    d.mkdir()
    data = rng_bytes(100_000, 5)
    assert write(str(d), ".tmp-1", "chunk", data, 0o640) == (0, 0)
    assert (d / "chunk").read_bytes() == data and not (d / ".tmp-1").exists()
    assert stat.S_IMODE(os.stat(d / "chunk").st_mode) == 0o640 & ~_umask()
    # Over an existing chunk: replaced atomically.
    assert write(str(d), ".tmp-2", "chunk", b"new", 0o644) == (0, 0)
    assert (d / "chunk").read_bytes() == b"new"
    # A temp name already taken (a dead process's): refused, and left alone.
    (d / ".tmp-3").write_bytes(b"theirs")
    assert write(str(d), ".tmp-3", "chunk", data, 0o644) == (1, errno.EEXIST)
    assert (d / ".tmp-3").read_bytes() == b"theirs" and (d / "chunk").read_bytes() == b"new"
    # A directory where the chunk should go: the rename fails, the temp is removed.
    (d / "taken").mkdir()
    step, code = write(str(d), ".tmp-4", "taken", data, 0o644)
    assert step == 4 and code in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert not (d / ".tmp-4").exists()
    # No prefix directory, or a link in its place: nothing is written anywhere.
    assert write(str(tmp_path / "none"), ".tmp-5", "chunk", data, 0o644) == (1, errno.ENOENT)
    os.symlink("abcd", tmp_path / "dirlink")
    step, code = write(str(tmp_path / "dirlink"), ".tmp-6", "other", data, 0o644)
    assert (step, code in (errno.ELOOP, errno.ENOTDIR)) == (1, True)
    assert sorted(os.listdir(d)) == [".tmp-3", "chunk", "taken"]


@pytest.mark.parametrize("impl", ["c", "python"])
def test_refresh(tree: Path, impl: str) -> None:
    refresh = _require_c().refresh_chunk_file if impl == "c" else _chunkfile.refresh_py
    d = tree / "abcd"
    os.utime(d / "chunk", (1_000_000, 1_000_000))
    os.utime(d / "link", (1_000_000, 1_000_000), follow_symlinks=False)
    step, mode, size = refresh(str(d), "chunk")
    assert (step, stat.S_ISREG(mode), size) == (0, True, 70_000)
    assert os.stat(d / "chunk").st_mtime > 1_000_000
    os.utime(d / "chunk", (1_000_000, 1_000_000))
    step, mode, size = refresh(str(d), "link")  # the link's own times, never its target's
    assert (step, stat.S_ISLNK(mode)) == (0, True)
    assert os.stat(d / "chunk").st_mtime == 1_000_000 and os.lstat(d / "link").st_mtime > 1_000_000
    assert refresh(str(d), "missing") == (2, errno.ENOENT, 0)
    step, code, _ = refresh(str(tree / "dirlink"), "chunk")
    assert (step, code in (errno.ELOOP, errno.ENOTDIR)) == (1, True)
    assert refresh(str(tree / "nodir"), "chunk") == (1, errno.ENOENT, 0)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STORE_WORKLOAD = r"""
import json, os, sys
from casync_store.stores import _chunkfile
from casync_store.stores.local import LocalStore
from casync_format.errors import CasyncError
from casync_format.digest import SHA512_256
from tests.support.chunks import make_chunk

root = sys.argv[1]
store = LocalStore(root)
out = {"backend": _chunkfile.BACKEND, "results": []}
chunks = [make_chunk(seed) for seed in range(20)]
for chunk_id, raw, blob in chunks:
    store.store_chunk(chunk_id, raw, blob)
for chunk_id, raw, blob in chunks:
    out["results"].append([store.has_chunk(chunk_id), store.refresh_chunk(chunk_id),
                           store.get_chunk(chunk_id, SHA512_256) == raw])
bad = chunks[0][0]
path = os.path.join(root, bad.hex()[:4], bad.hex() + ".cacnk")
os.remove(path)
os.mkfifo(path)
for chunk_id in (bad, b"\x01" * 32):
    try:
        store.get_chunk(chunk_id, SHA512_256)
        out["results"].append("read")
    except CasyncError as exc:
        out["results"].append(type(exc).__name__ + ": " + str(exc).replace(root, "ROOT"))
print(json.dumps(out))
"""


def test_local_store_pure_python_same_as_c(tmp_path: Path) -> None:
    """A store used through the C functions and through the reference answers alike."""
    runs = {}
    for label, env in (("c", {}), ("python", {"PYCASYNC_PUREPYTHON": "1"})):
        full = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
        full.update(env)
        root = tmp_path / label
        proc = subprocess.run([sys.executable, "-c", STORE_WORKLOAD, str(root)], env=full, cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs[label] = json.loads(proc.stdout)
    assert runs["python"]["backend"] == "python"
    if runs["c"]["backend"] != "c":
        _require_c()
    assert runs["c"]["results"] == runs["python"]["results"]
    assert runs["c"]["results"][:20] == [[True, True, True]] * 20
    assert "a FIFO" in runs["c"]["results"][20] and "ChunkMissing" in runs["c"]["results"][21]
    names = {label: sorted(p.relative_to(tmp_path / label).as_posix() for p in (tmp_path / label).rglob("*")
                           if p.is_file() and not p.is_fifo()) for label in runs}
    assert names["c"] == names["python"]
