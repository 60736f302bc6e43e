"""``--json`` on the commands that otherwise print human text only (or nothing).

``verify``, ``prune``, ``cache``, ``chop``, ``tar``, ``untar`` and
``upgrade-s3`` take ``--json`` (documented in their ``--help``) and print one
JSON document on stdout, or on stderr when stdout carries the data (``tar``
to ``-``, ``untar --output-format gnu-tar -``); the tests parse it and check
it against what the command did on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support.cli import chunk_files, ok, run


@pytest.fixture
def made(env: dict[str, str], tmp_path: Path) -> tuple[Path, Path, Path]:
    """A blob, its index and its store (chunks of 16:64:256 KiB)."""
    blob, index, store = tmp_path / "blob", tmp_path / "b.caibx", tmp_path / "store"
    blob.write_bytes(os.urandom(600_000))
    ok(env, "make", "-m", "16:64:256", "-s", str(store), str(index), str(blob))
    return blob, index, store


@pytest.mark.parametrize("command", ["verify", "prune", "cache", "chop", "tar", "untar", "upgrade-s3"])
def test_help_documents_json(env: dict[str, str], command: str) -> None:
    out = ok(env, command, "--help").stdout.decode()
    assert "--json" in out and "JSON" in out


def test_verify_json(env: dict[str, str], made: tuple[Path, Path, Path]) -> None:
    _, _, store = made
    names = chunk_files(str(store))
    data = json.loads(ok(env, "verify", "--json", "-s", str(store)).stdout)
    assert data == {"checked": len(names), "invalid": [], "removed": 0}
    victim = next(store.rglob("*.cacnk"))
    victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")
    bad_id = victim.name[: -len(".cacnk")]
    proc = run(env, "verify", "--json", "-s", str(store))
    assert proc.returncode == 1
    assert json.loads(proc.stdout) == {"checked": len(names), "invalid": [bad_id], "removed": 0}
    assert "Traceback" not in proc.stderr.decode()
    data = json.loads(ok(env, "verify", "-r", "--json", "-s", str(store)).stdout)
    assert data == {"checked": len(names), "invalid": [bad_id], "removed": 1}
    assert not victim.exists()


def test_prune_json(env: dict[str, str], made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, index, store = made
    other = tmp_path / "other"
    other.write_bytes(os.urandom(300_000))
    ok(env, "make", "-m", "16:64:256", "-s", str(store), str(tmp_path / "o.caibx"), str(other))
    before = len(chunk_files(str(store)))
    kept = len(set(ok(env, "list-chunks", str(index)).stdout.decode().split()))
    # answered "no": nothing removed, still one JSON document
    proc = run(env, "prune", "--json", "-s", str(store), str(index), input=b"n\n")
    assert proc.returncode == 0, proc.stderr
    answered_no = json.loads(proc.stdout)
    assert answered_no["removed"] == answered_no["bytes-removed"] == 0
    counts = (answered_no["indexes"], answered_no["chunks"], answered_no["unused"])
    assert counts == (1, before, before - kept)
    assert len(chunk_files(str(store))) == before
    data = json.loads(ok(env, "prune", "-y", "--json", "-s", str(store), str(index)).stdout)
    assert (data["indexes"], data["removed"]) == (1, before - kept)
    assert data["bytes-removed"] == data["unused-bytes"] == answered_no["unused-bytes"] > 0
    assert len(chunk_files(str(store))) == kept


def test_cache_and_chop_json(env: dict[str, str], made: tuple[Path, Path, Path], tmp_path: Path) -> None:
    blob, index, store = made
    unique = len(set(ok(env, "list-chunks", str(index)).stdout.decode().split()))
    cache = tmp_path / "cache"
    data = json.loads(ok(env, "cache", "--json", "-s", str(store), "-c", str(cache), str(index)).stdout)
    assert data["chunks-copied"] == unique == len(chunk_files(str(cache)))
    assert data["bytes-copied"] == sum(p.stat().st_size for p in cache.rglob("*.cacnk"))
    again = json.loads(ok(env, "cache", "--json", "-s", str(store), "-c", str(cache), str(index)).stdout)
    assert again["chunks-copied"] == 0 and again["chunks-in-cache"] == unique
    chopped = tmp_path / "chopped"
    chopped.mkdir()  # chop needs an existing store, as desync's
    data = json.loads(ok(env, "chop", "--json", "-s", str(chopped), str(index), str(blob)).stdout)
    assert data["chunks-stored"] == unique == len(chunk_files(str(chopped)))
    assert data["bytes-total"] == blob.stat().st_size


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"hello\n")
    (root / "sub" / "b.bin").write_bytes(os.urandom(100_000))
    os.symlink("a.txt", root / "link")
    return root


def test_tar_untar_json(env: dict[str, str], tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree")
    catar = tmp_path / "t.catar"
    data = json.loads(ok(env, "tar", "--json", str(catar), str(tree)).stdout)
    assert data["files"] == 2 and data["symlinks"] == 1 and data["directories"] == 2
    assert data["archive-bytes"] == catar.stat().st_size and data["payload-bytes"] == 100_006
    # to stdout: the archive on stdout, the JSON on stderr
    proc = ok(env, "tar", "--json", "-", str(tree))
    assert proc.stdout == catar.read_bytes()
    assert json.loads(proc.stderr)["archive-bytes"] == len(proc.stdout)
    data = json.loads(ok(env, "untar", "--json", str(catar), str(tmp_path / "out")).stdout)
    assert data["files"] == 2 and data["symlinks"] == 1 and data["bytes-written"] == 100_006
    store, caidx = tmp_path / "store", tmp_path / "t.caidx"
    data = json.loads(ok(env, "tar", "-i", "--json", "-s", str(store), str(caidx), str(tree)).stdout)
    assert data["files"] == 2 and data["chunks-total"] >= 1
    proc = ok(env, "untar", "-i", "--json", "-s", str(store), str(caidx), str(tmp_path / "o2"))
    data = json.loads(proc.stdout)
    assert data["files"] == 2 and data["chunks"] >= 1
    proc = ok(env, "untar", "--json", "--output-format", "gnu-tar", str(catar), "-")
    assert json.loads(proc.stderr)["files"] == 2 and len(proc.stdout) > 100_000
