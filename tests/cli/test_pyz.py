"""``pycasync.pyz`` (``tools/build_pyz.py``) on a Python with no third-party packages.

The archive is built once into a temporary directory and run as a user on a
bare server would: ``python3 -I pycasync.pyz ...`` with an interpreter that
has no zstd binding (Debian's ``/usr/bin/python3``, or any Python 3.9+ with
``-S``, which drops site-packages). It must pick the pure-Python chunker,
round-trip a blob through xz and gzip stores (make, extract, verify), archive
and restore a tree, serve a store made elsewhere (zstd chunks served as
stored, over HTTP), and refuse zstd work with the one-line message that
names the real fixes (exit 1, no traceback, no index left). Without a bare
interpreter the tests skip, except under ``CI=true``, where they fail.
``python3 -I pycasync.py`` from a checkout is checked here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from casync_format.compress import NO_ZSTD
from tests.support import CLI, ROOT
from tests.support.cli import Server, chunk_files, ok

_NO_ZSTD_CHECK = (
    "import sys\n"
    "assert sys.version_info >= (3, 9)\n"
    "for name in ('zstandard', 'pyzstd', 'compression.zstd'):\n"
    "    try:\n"
    "        __import__(name)\n"
    "    except ImportError:\n"
    "        continue\n"
    "    sys.exit(1)\n"
)


def _bare_interpreters() -> list[tuple[str, ...]]:
    """Commands of Pythons with no zstd binding: ``python -I`` where that is bare, else ``-I -S``."""
    candidates = [os.environ.get("PYCASYNC_BARE_PYTHON", ""), "/usr/bin/python3",
                  "/root/.pyenv/versions/3.9.18/bin/python3.9", sys.executable]  # fmt: skip
    found: list[tuple[str, ...]] = []
    for path in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        for flags in (("-I",), ("-I", "-S")):
            proc = subprocess.run([path, *flags, "-c", _NO_ZSTD_CHECK], capture_output=True)
            if proc.returncode == 0:
                found.append((path, *flags))
                break
    return found


@pytest.fixture(scope="module")
def bare() -> tuple[str, ...]:
    """The first bare interpreter command (skip without one; fail under CI=true)."""
    found = _bare_interpreters()
    if not found:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("no Python without a zstd binding found, but CI=true requires the pycasync.pyz tests")
        pytest.skip("no Python without a zstd binding on this machine")
    return found[0]


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = str(tmp_path_factory.mktemp("pyz") / "pycasync.pyz")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_pyz.py"), "-o", out],
                          capture_output=True, text=True, cwd="/")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A working directory outside the checkout (nothing there can be imported by accident)."""
    (tmp_path / "blob").write_bytes(os.urandom(400_000) * 2)
    return tmp_path


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYCASYNC_", "PYTHON"))}
    env["HOME"] = str(tmp_path)
    return env


def _run(cmd: tuple[str, ...], pyz: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, pyz, *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)  # fmt: skip


def test_archive_holds_sources_only(pyz: str) -> None:
    import zipfile

    with zipfile.ZipFile(pyz) as zf:
        names = zf.namelist()
    assert "__main__.py" in names and "pycasync.py" in names
    assert "casync_format/chunker.py" in names and "casync_store/cli/__init__.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyc", ".c")) or "__pycache__" in n]
    with open(pyz, "rb") as f:
        assert f.readline() == b"#!/usr/bin/env python3\n"


def test_build_is_reproducible(pyz: str, tmp_path: Path) -> None:
    again = tmp_path / "again.pyz"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_pyz.py"), "-o", str(again)],
                   check=True, capture_output=True)  # fmt: skip
    assert again.read_bytes() == Path(pyz).read_bytes()


def test_version_on_bare_python(bare: tuple[str, ...], pyz: str, work: Path) -> None:
    proc = _run(bare, pyz, work, "--version")
    assert proc.returncode == 0, proc.stderr
    assert "chunker: python" in proc.stdout and "zstd: none" in proc.stdout, proc.stdout


@pytest.mark.parametrize("compression", ["xz", "gzip"])
def test_make_extract_verify_without_zstd(
    bare: tuple[str, ...], pyz: str, work: Path, compression: str
) -> None:
    data = (work / "blob").read_bytes()
    for args in (
        ("make", "--compression", compression, "-m", "16:64:256", "-s", "store", "b.caibx", "blob"),
        ("extract", "-s", "store", "b.caibx", "out"),
        ("verify", "-s", "store"),
    ):
        proc = _run(bare, pyz, work, *args)
        assert proc.returncode == 0, (args, proc.stderr)
    info = _run(bare, pyz, work, "info", "-s", "store", "b.caibx")
    assert info.returncode == 0, info.stderr
    assert (work / "out").read_bytes() == data
    magic = {"xz": b"\xfd7zXZ\x00", "gzip": b"\x1f\x8b"}[compression]
    names = [p for p in (work / "store").rglob("*.cacnk")]
    # one file per distinct chunk (the blob's second half repeats its first, so
    # the count varies with the random data; 400,000 bytes need at least two)
    unique = json.loads(info.stdout)["unique"]
    assert len(names) == unique >= 2 and all(p.read_bytes().startswith(magic) for p in names)
    # the index is the one the C chunker and the installed package make
    env = _env(work)
    ok(env, "make", "-m", "16:64:256", str(work / "c.caibx"), str(work / "blob"))
    assert (work / "c.caibx").read_bytes() == (work / "b.caibx").read_bytes()


def test_tar_untar_without_zstd(bare: tuple[str, ...], pyz: str, work: Path) -> None:
    tree = work / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("hello\n")
    (tree / "sub" / "b.bin").write_bytes(os.urandom(50_000))
    assert _run(bare, pyz, work, "tar", "t.catar", "tree").returncode == 0
    proc = _run(bare, pyz, work, "tar", "-i", "--compression", "xz", "-s", "store", "t.caidx", "tree")
    assert proc.returncode == 0, proc.stderr
    proc = _run(bare, pyz, work, "untar", "-i", "-s", "store", "t.caidx", "back")
    assert proc.returncode == 0, proc.stderr
    assert (work / "back" / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    env = _env(work)
    ok(env, "tar", str(work / "c.catar"), str(tree))  # the C encoder gives the same bytes
    assert (work / "c.catar").read_bytes() == (work / "t.catar").read_bytes()


def test_zstd_needed_is_one_line(bare: tuple[str, ...], pyz: str, work: Path) -> None:
    proc = _run(bare, pyz, work, "make", "-s", "store", "b.caibx", "blob")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"pycasync: error: {NO_ZSTD}"]
    for fix in ("python3-zstandard", "pip install zstandard", "compression.zstd", "--compression xz"):
        assert fix in proc.stderr
    assert "pycasync[" not in proc.stderr
    assert not (work / "b.caibx").exists()
    # reading zstd chunks needs it too: the same line
    ok(_env(work), "make", "-s", str(work / "zstore"), str(work / "z.caibx"), str(work / "blob"))
    proc = _run(bare, pyz, work, "extract", "-s", "zstore", "z.caibx", "out")
    assert proc.returncode == 1 and proc.stderr.splitlines() == [f"pycasync: error: {NO_ZSTD}"], proc.stderr
    assert not (work / "out").exists()


def test_chunk_server_serves_zstd_chunks_as_stored(bare: tuple[str, ...], pyz: str, work: Path) -> None:
    """A store written elsewhere (zstd) is served as it is, with no zstd binding on the server."""
    store = work / "store"
    ok(_env(work), "make", "-s", str(store), str(work / "b.caibx"), str(work / "blob"))
    names = chunk_files(str(store))
    assert names
    server = Server(_env(work), "-s", str(store), program=(*bare, pyz))
    try:
        for name in names[:3]:
            path = f"{name[:4]}/{name}"
            with urllib.request.urlopen(server.url + path, timeout=30) as response:
                body = response.read()
            assert body == (store / path).read_bytes()
        # and a client with zstd extracts from it
        out = work / "out"
        ok(_env(work), "extract", "-s", server.url, str(work / "b.caibx"), str(out))
        want = hashlib.sha256((work / "blob").read_bytes()).digest()
        assert hashlib.sha256(out.read_bytes()).digest() == want
    finally:
        assert server.stop() in (0, -15)


def test_checkout_runs_isolated(bare: tuple[str, ...], tmp_path: Path) -> None:
    """``python3 -I pycasync.py`` from a checkout (and from a copy of its three top-level pieces)."""
    proc = subprocess.run([*bare, CLI, "--version"], cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("pycasync "), proc.stderr
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(CLI, copy)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    for package in ("casync_format", "casync_store"):
        shutil.copytree(os.path.join(ROOT, package), copy / package, ignore=ignore)
    (tmp_path / "blob").write_bytes(os.urandom(100_000))
    argv = [*bare, str(copy / "pycasync.py"), "make", "--compression", "xz", "-s", "st", "b.caibx", "blob"]
    proc = subprocess.run(argv, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_bare_interpreter(bare: tuple[str, ...], pyz: str, work: Path) -> None:
    """Each bare Python found (Debian's, an old 3.9, any with -S) runs the archive: an xz round trip."""
    for cmd in _bare_interpreters():
        for args in (("make", "--compression", "xz", "-s", "s", "x.caibx", "blob"),
                     ("extract", "-s", "s", "x.caibx", "x.out")):  # fmt: skip
            proc = _run(cmd, pyz, work, *args)
            assert proc.returncode == 0, (cmd, proc.stderr)
        assert (work / "x.out").read_bytes() == (work / "blob").read_bytes()
        (work / "x.out").unlink()
