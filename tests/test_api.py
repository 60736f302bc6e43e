"""The top-level library API of ``casync_store``, used as the README's Library section shows it.

Every operation is a function at the top level (``casync_store.make`` is
the function, while ``import casync_store.ops.make`` still gives the
module), every path argument takes ``str`` or ``pathlib.Path``, every
exception class is importable from ``casync_store`` as the very class of
``casync_format.errors``, and the package ships ``py.typed``.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import casync_format.errors as errors
import casync_store
from tests.support import ROOT

OPERATIONS = [
    "make", "extract", "chop", "tar", "tar_index", "untar", "untar_index",
    "index_info", "verify_store", "prune_store", "open_store", "open_index",
    "cat", "verify_index", "inspect_chunks",
]  # fmt: skip


@pytest.mark.parametrize("name", OPERATIONS)
def test_top_level_operations_are_functions(name: str) -> None:
    value = getattr(casync_store, name)
    assert callable(value) and not isinstance(value, type(casync_store)), value
    assert name in casync_store.__all__
    assert name in dir(casync_store)


def test_function_and_module_names_coexist() -> None:
    from casync_store import make

    module = importlib.import_module("casync_store.ops.make")
    assert make is module.make
    import casync_store.ops.make as again

    assert again is module and casync_store.make is module.make


def test_unknown_name_is_attribute_error() -> None:
    with pytest.raises(AttributeError):
        casync_store.no_such_thing  # noqa: B018


def test_import_stays_lazy() -> None:
    """Importing the package does not import the operations (they load on first use)."""
    code = "import sys, casync_store; print('casync_store.ops.make' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr


@pytest.mark.parametrize("name", errors.__all__)
def test_error_classes_are_the_same_objects(name: str) -> None:
    assert getattr(casync_store, name) is getattr(errors, name)
    assert name in casync_store.__all__
    assert issubclass(getattr(casync_store, name), casync_store.CasyncError)


def test_py_typed_is_shipped() -> None:
    assert os.path.isfile(os.path.join(ROOT, "casync_store", "py.typed"))
    assert os.path.isfile(os.path.join(ROOT, "casync_format", "py.typed"))
    with open(os.path.join(ROOT, "setup.cfg"), encoding="utf-8") as f:
        cfg = f.read()
    assert "py.typed" in cfg


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "big.bin").write_bytes(os.urandom(200_000))
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_paths_everywhere(tmp_path: Path) -> None:
    """Every public function takes pathlib.Path for its paths (index paths crashed with .decode)."""
    from casync_store import (
        ChunkerParams,
        LocalStore,
        chop,
        extract,
        index_info,
        make,
        open_index,
        open_store,
        prune_store,
        tar,
        tar_index,
        untar,
        untar_index,
        verify_store,
    )

    data = os.urandom(300_000) * 2
    blob = tmp_path / "blob.bin"
    blob.write_bytes(data)
    store = LocalStore(tmp_path / "store")
    assert isinstance(store.path, str)
    index = tmp_path / "blob.caibx"
    params = ChunkerParams.from_string("16:64:256")
    stats = make(index, blob, store, params=params)
    assert stats.chunks_total > 2
    with open_index(index) as idx:
        assert idx.blob_size == len(data)
        out = tmp_path / "out.bin"
        extract(idx, out, open_store(tmp_path / "store"))
        assert out.read_bytes() == data
        # seeds given as Path objects, bare (a raw seed) and as IndexSeed/RawSeed
        from casync_store import IndexSeed, RawSeed

        for seeds in ([blob], [IndexSeed(index, blob)], [RawSeed(blob)]):
            seeded = tmp_path / "seeded.bin"
            stats_x = extract(idx, seeded, LocalStore(tmp_path / "empty-store"), seeds=seeds)
            assert seeded.read_bytes() == data and stats_x.chunks_from_store == 0
        other = LocalStore(tmp_path / "other")
        chop(idx, blob, other)
        assert index_info(idx, [other]).in_store == index_info(idx, [store]).in_store > 0
        assert verify_store(other, idx.digest).invalid == []
        prune_store(other, [idx])
    # without a store: only the index
    make(tmp_path / "bare.caibx", blob)
    assert (tmp_path / "bare.caibx").read_bytes() == index.read_bytes()

    tree = _tree(tmp_path / "tree")
    catar = tmp_path / "t.catar"
    tar(tree, catar)
    untar(catar, tmp_path / "u1")
    assert _files(tmp_path / "u1") == _files(tree)
    with open(catar, "rb") as f:
        untar(f, tmp_path / "u2")
    assert _files(tmp_path / "u2") == _files(tree)
    caidx = tmp_path / "t.caidx"
    tar_index(tree, caidx, store)
    with open_index(caidx) as idx:
        untar_index(idx, store, tmp_path / "u3")
    assert _files(tmp_path / "u3") == _files(tree)


def test_paths_in_the_other_entry_points(tmp_path: Path) -> None:
    """The module-level functions beside the top-level ones take Paths too."""
    import io
    import tarfile

    from casync_store.ops.info import chunk_file
    from casync_store.ops.make import iter_chunk_ids
    from casync_store.ops.mtree import mtree_dir
    from casync_store.ops.tarstream import tar_from_tarstream
    from casync_store.stores.indexio import index_writer, write_index_file

    tree = _tree(tmp_path / "tree")
    blob = tree / "sub" / "big.bin"
    assert list(chunk_file(blob)) == list(iter_chunk_ids(blob)) == list(iter_chunk_ids(str(blob)))
    assert any("big.bin" in line for line in mtree_dir(tree))
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tf:
        tf.add(tree / "a.txt", arcname="a.txt")
    stream.seek(0)
    tar_from_tarstream(stream, tmp_path / "from-tar.catar", add_root=True)
    assert (tmp_path / "from-tar.catar").stat().st_size > 0
    from casync_store import make, open_index

    make(tmp_path / "b.caibx", blob)
    with open_index(tmp_path / "b.caibx") as idx:
        header, items = idx.header, [(item.id, item.size) for item in idx]
    assert write_index_file(tmp_path / "copy.caibx", header, items) == blob.stat().st_size
    assert (tmp_path / "copy.caibx").read_bytes() == (tmp_path / "b.caibx").read_bytes()
    with index_writer(tmp_path / "w.caibx", header) as writer:
        for chunk_id, size in items:
            writer.add(chunk_id, size)
    assert (tmp_path / "w.caibx").read_bytes() == (tmp_path / "b.caibx").read_bytes()


def test_store_compression_is_used_by_make(tmp_path: Path) -> None:
    """``make`` without ``compression`` writes chunks as the store compresses them."""
    from casync_store import LocalStore, make

    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(200_000))
    store = LocalStore(tmp_path / "store", compression="xz")
    make(tmp_path / "b.caibx", blob, store)
    chunks = list((tmp_path / "store").rglob("*.cacnk"))
    assert chunks and all(c.read_bytes().startswith(b"\xfd7zXZ\x00") for c in chunks)
    make(tmp_path / "c.caibx", blob, LocalStore(tmp_path / "gz"), compression="gzip")
    chunks = list((tmp_path / "gz").rglob("*.cacnk"))
    assert chunks and all(c.read_bytes().startswith(b"\x1f\x8b") for c in chunks)


def test_errors_raised_are_catchable_from_the_top(tmp_path: Path) -> None:
    from casync_store import CasyncError, ChunkMissing, LocalStore, extract, make, open_index

    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(100_000))
    make(tmp_path / "b.caibx", blob)  # index only: the store stays empty
    with open_index(tmp_path / "b.caibx") as idx, pytest.raises(ChunkMissing) as info:
        extract(idx, tmp_path / "out", LocalStore(tmp_path / "empty"))
    assert isinstance(info.value, CasyncError)
    assert not (tmp_path / "out").exists()
