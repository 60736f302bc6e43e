"""Tests of tar's library entry points that take no directory: ``index_events``
over any event source (what tarstream feeds it), a ``.caexclude`` that is an
endless device, and casync_store's use of :class:`CatarWriter` through its
public names only. (The walker against casync, byte for byte: test_tar.py.)
"""

from __future__ import annotations

import io
import os
import stat

import pytest

from casync_format.catar import DESYNC_TAR_FLAGS, CatarWriter, Entry
from casync_format.chunker import ChunkerParams
from casync_format.errors import FormatError
from casync_format.index import Index
from casync_store.ops.make import make
from casync_store.ops.tar import TreeEvent, index_events, tar, write_tree
from tests.support import ROOT as SUPPORT_ROOT

MTIME = 1_600_000_000_123_456_789


def _synthetic_events(fail_after: int | None = None):
    """An in-memory tree as events (what tarstream feeds), optionally failing midway."""
    yield TreeEvent("enter", Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=MTIME), b"", None)
    for i in range(40):
        if fail_after is not None and i == fail_after:
            raise OSError(5, "synthetic read error", f"file{i}")
        data = bytes([i]) * (i * 5000)
        entry = Entry(f"file{i:02d}".encode(), stat.S_IFREG | 0o644, size=len(data), mtime_ns=MTIME + i)
        yield TreeEvent("file", entry, entry.name, io.BytesIO(data))
    yield TreeEvent("leave", None, b"", None)


def test_index_events_chunks_any_event_source(tmp_path):
    catar = tmp_path / "x.catar"
    with open(catar, "wb") as f:
        write_tree(CatarWriter(f.write, DESYNC_TAR_FLAGS), _synthetic_events())
    params = ChunkerParams(1024, 4096, 16384)
    make(str(tmp_path / "blob.caibx"), str(catar), None, params=params)
    stats = index_events(_synthetic_events(), str(tmp_path / "x.caidx"), None, params=params)
    with open(tmp_path / "blob.caibx", "rb") as a, open(tmp_path / "x.caidx", "rb") as b:
        blob, ours = Index(a), Index(b)
        assert ours.header.feature_flags == DESYNC_TAR_FLAGS
        assert [(c.start, c.size, c.id) for c in ours] == [(c.start, c.size, c.id) for c in blob]
    assert stats.files == 40 and stats.archive_bytes == catar.stat().st_size
    with pytest.raises(OSError, match="synthetic read error"):
        index_events(_synthetic_events(fail_after=30), str(tmp_path / "y.caidx"), None, params=params)
    assert not (tmp_path / "y.caidx").exists()


def test_exclude_file_pointing_at_an_endless_device_is_refused(tmp_path):
    """A user's .caexclude symlinked to /dev/zero must not exhaust memory (a root backup job)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    os.symlink("/dev/zero", src / ".caexclude")
    with pytest.raises(FormatError, match=r"\.caexclude: exclude file larger than"):
        tar(str(src), str(tmp_path / "x.catar"))
    assert not os.path.exists(tmp_path / "x.catar")


def test_store_uses_only_public_catar_writer_names() -> None:
    """casync_store reaches CatarWriter only through its public API (no private attribute or override)."""
    import ast

    private = {name for name in vars(CatarWriter) if name.startswith("_") and not name.startswith("__")}
    writer = CatarWriter(io.BytesIO().write, DESYNC_TAR_FLAGS)
    private |= {name for name in vars(writer) if name.startswith("_")}
    assert {"_emit", "_child", "_path", "_stack"} <= private
    base = os.path.join(SUPPORT_ROOT, "casync_store")
    found = []
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path) as f:
                source = f.read()
            if "CatarWriter" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Attribute) and node.attr in private:
                    found.append(f"{path}:{node.lineno}: .{node.attr}")
                elif isinstance(node, ast.ClassDef) and any(
                    getattr(b, "id", None) == "CatarWriter" for b in node.bases
                ):
                    found += [
                        f"{path}:{item.lineno}: overrides {item.name}"
                        for item in node.body
                        if isinstance(item, ast.FunctionDef) and item.name in private
                    ]
    assert not found, found
