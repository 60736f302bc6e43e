"""LocalStore's own rules beyond the Store contract, and the atomic file writes under it.

Covers the on-disk layout (``xxxx/<id>.cacnk``, file mode from the umask) and
that listing and pruning leave foreign files alone, reading the stores casync
itself wrote (``tests/data/store-*``), the errors of a store that cannot
exist or be written, a directory where a chunk file belongs, ``verify=False``,
concurrent writer processes never exposing a partial chunk to a reader, and
:func:`atomic_write` keeping the old file when the write fails. The shared
contract every store meets is in ``test_store_contract.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from casync_format import compress
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_format.index import read_index
from casync_store import LocalStore
from casync_store.plumbing.atomic import TEMP_PREFIX, atomic_write, write_file_atomic
from tests.support import DATA_DIR, ROOT
from tests.support.chunks import make_chunk, random_chunk

DATA = DATA_DIR


def test_local_layout_and_foreign_files(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path), sync=False)
    cid, _data, blob = make_chunk(20)
    store.put_raw(cid, blob)
    name = cid.hex()
    assert store.chunk_path(cid) == os.path.join(str(tmp_path), name[:4], name + ".cacnk")
    assert os.path.isfile(store.chunk_path(cid))
    mode = os.stat(store.chunk_path(cid)).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o644 & ~umask
    junk = {
        os.path.join(name[:4], TEMP_PREFIX + "abc"),  # a writer's temporary file
        os.path.join(name[:4], name + ".cacnk.tmp"),
        os.path.join(name[:4], name.upper() + ".cacnk"),
        os.path.join(name[:4], "README"),
        "README",
        os.path.join("zzzz", name + ".cacnk"),  # not a prefix directory
        os.path.join("0000", "1111" + name[4:] + ".cacnk"),  # filed under the wrong prefix
        os.path.join("00000", name + ".cacnk"),
        name + ".cacnk",
    }
    for rel in junk:
        os.makedirs(os.path.dirname(os.path.join(str(tmp_path), rel)), exist_ok=True)
        with open(os.path.join(str(tmp_path), rel), "wb") as f:
            f.write(blob)
    os.makedirs(os.path.join(str(tmp_path), "abcd", "0" * 64 + ".cacnk"))  # a directory, not a chunk
    assert list(store.iter_chunk_ids()) == [cid]
    assert store.prune(set()) == 1
    for rel in junk:
        assert os.path.exists(os.path.join(str(tmp_path), rel)), "prune removed a foreign file"


def test_local_reads_casync_store() -> None:
    with open(os.path.join(DATA, "index", "text.caibx"), "rb") as f:
        items = list(read_index(f))
    for method in ("zstd", "xz", "gzip"):
        if method == "zstd" and not compress.ZSTD_BACKEND:
            continue
        store = LocalStore(os.path.join(DATA, "store-" + method))
        assert sorted(store.iter_chunk_ids()) == sorted({c.id for c in items})
        for c in items:
            assert len(store.get_chunk(c.id, SHA512_256, size=c.size)) == c.size


def test_local_errors(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "file")
    with open(path, "wb") as f:
        f.write(b"x")
    with pytest.raises(StoreError):
        LocalStore(path)
    under_file = LocalStore(os.path.join(path, "store"))
    cid, _data, blob = make_chunk(21)
    with pytest.raises(StoreError) as exc:
        under_file.put_raw(cid, blob)
    assert cid.hex() in str(exc.value) and str(under_file) in str(exc.value)
    with pytest.raises(StoreError):
        list(LocalStore(os.path.join(str(tmp_path), "nonexistent")).iter_chunk_ids())
    assert not LocalStore(os.path.join(str(tmp_path), "nonexistent")).has_chunk(cid)


def test_local_directory_under_chunk_name_is_invalid(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path))
    cid = make_chunk(22)[0]
    os.makedirs(store.chunk_path(cid))  # a directory where the chunk file belongs
    with pytest.raises(ChunkInvalid) as exc:  # there, but no chunk: verify -r removes it
        store.get_raw(cid)
    assert cid.hex() in str(exc.value) and "directory" in str(exc.value)
    assert not store.has_chunk(cid)


def test_local_verify_false_trusts_content(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path), verify=False, sync=False)
    cid, data, _ = make_chunk(23)
    other = make_chunk(24)
    store.put_raw(cid, other[2])
    assert store.get_chunk(cid, SHA512_256) == other[1]
    with pytest.raises(ChunkInvalid):  # the size is still checked
        store.get_chunk(cid, SHA512_256, size=len(data) + 4)


def test_local_concurrent_writer_processes(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(os.path.join(str(tmp_path), "store"), sync=False)
    cid, data, blob = random_chunk(25, 4 << 20)
    blob_path = os.path.join(str(tmp_path), "blob")
    with open(blob_path, "wb") as f:
        f.write(blob)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from casync_store.stores.local import LocalStore\n"
        "s = LocalStore(sys.argv[2], sync=False)\n"
        "blob = open(sys.argv[3], 'rb').read()\n"
        "for _ in range(30): s.put_raw(bytes.fromhex(sys.argv[4]), blob)\n"
    )
    args = [sys.executable, "-c", script, ROOT, store.path, blob_path, cid.hex()]
    procs = [subprocess.Popen(args) for _ in range(4)]
    bad = good = 0
    while any(p.poll() is None for p in procs):
        try:
            got = store.get_raw(cid)
        except ChunkMissing:
            continue
        good += got == blob
        bad += got != blob
    assert [p.wait() for p in procs] == [0] * 4
    assert bad == 0, f"a reader saw a partial chunk ({bad} of {bad + good} reads)"
    assert good, "the reader never saw the chunk: the test did not test anything"
    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    leftovers = [n for _t, _d, names in os.walk(store.path) for n in names if n.startswith(TEMP_PREFIX)]
    assert not leftovers and list(store.iter_chunk_ids()) == [cid]


def test_atomic_write_keeps_target_on_error(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(str(tmp_path), "file")
    write_file_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"new, partial")
        raise RuntimeError("boom")
    with open(target, "rb") as f:
        assert f.read() == b"old"
    assert os.listdir(str(tmp_path)) == ["file"]
    write_file_atomic(target, b"new", mode=0o600)
    with open(target, "rb") as f:
        assert f.read() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o600
