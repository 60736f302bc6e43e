"""Hostile entries under chunk names in a local store, and damaged chunks in a cache.

A local store reads only regular files inside it: a chunk name that is a
symlink to /dev/zero or /etc/passwd, a 20 GB sparse file, a FIFO or a
symlinked prefix directory is an invalid chunk. The real CLI (extract,
verify, cache) must fail with one line naming the chunk, stay small (peak
RSS of the child, measured with wait4) and never hang; ``verify -r`` removes
each such entry (never what a link points to). ``cache`` checks chunks its
target already holds and replaces damaged ones, so a later extract from that
cache alone succeeds.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support import CLI, ROOT

MAX_RSS_KIB = 300 * 1024
TIMEOUT = 60.0
KINDS = ["symlink-dev-zero", "sparse-20g", "fifo", "symlink-passwd", "symlinked-prefix", "directory"]


class Result:
    def __init__(self, returncode: int, stderr: str, maxrss_kib: int, seconds: float) -> None:
        self.returncode, self.stderr, self.maxrss_kib, self.seconds = returncode, stderr, maxrss_kib, seconds


def _limit_memory() -> None:
    # Before the fix these reads grew to 8-12 GB: cap the child so a regression fails, not the machine.
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def cli(home: str, *args: str, timeout: float = TIMEOUT) -> Result:
    """Run the CLI; the child's own peak RSS comes from wait4, a hang is killed and fails the test."""
    env = {**os.environ, "HOME": home}
    with tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, CLI, *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_limit_memory)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                os.kill(proc.pid, signal.SIGKILL)
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"pycasync {' '.join(args)} still running after {timeout} s")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Result(proc.returncode, text, usage.ru_maxrss, time.monotonic() - start)


@pytest.fixture
def made(tmp_path: os.PathLike[str]) -> tuple[str, str, str, bytes]:
    """(home, store, index, content) of a small blob made with the CLI."""
    home = os.path.join(tmp_path, "home")
    os.mkdir(home)
    content = os.urandom(120_000) + bytes(50_000) + os.urandom(80_000)
    src, store, index = (os.path.join(tmp_path, n) for n in ("blob", "store", "blob.caibx"))
    with open(src, "wb") as f:
        f.write(content)
    res = cli(home, "make", "-s", store, "-m", "4:16:64", index, src)
    assert res.returncode == 0, res.stderr
    return home, store, index, content


def _chunk_files(store: str) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(store) for n in names if n.endswith(".cacnk"))


def _sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _plant(kind: str, victim: str, outside: str) -> str:
    """Replace the chunk file ``victim`` with a hostile entry; returns what must survive verify -r."""
    os.unlink(victim)
    if kind == "symlink-dev-zero":
        os.symlink("/dev/zero", victim)
        return "/dev/zero"
    if kind == "symlink-passwd":
        os.symlink("/etc/passwd", victim)
        return "/etc/passwd"
    if kind == "sparse-20g":
        with open(victim, "wb") as f:
            f.truncate(20 << 30)
        return ""
    if kind == "fifo":
        os.mkfifo(victim)
        return ""
    if kind == "directory":
        os.makedirs(os.path.join(victim, "inner"))
        return ""
    # symlinked-prefix: the whole xxxx/ directory lives outside the store, linked in
    prefix = os.path.dirname(victim)
    os.makedirs(outside)
    moved = os.path.join(outside, os.path.basename(prefix))
    shutil.move(prefix, moved)
    with open(os.path.join(moved, os.path.basename(victim)), "wb") as f:
        f.write(b"outside the store")  # a file the store must neither read nor delete
    os.symlink(moved, prefix)
    return os.path.join(moved, os.path.basename(victim))


def _one_line_naming(res: Result, chunk: str) -> None:
    lines = res.stderr.splitlines()
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert len(lines) == 1 and lines[0].startswith("pycasync: error: ") and chunk in lines[0], res.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_chunk_entry_is_refused_bounded_and_removed(
    tmp_path: os.PathLike[str], made: tuple[str, str, str, bytes], kind: str
) -> None:
    home, store, index, _content = made
    victim = _chunk_files(store)[0]
    chunk = os.path.basename(victim)[:64]
    passwd = _sha("/etc/passwd")
    survivor = _plant(kind, victim, os.path.join(tmp_path, "outside"))
    survivor_sha = _sha(survivor) if survivor and survivor != "/dev/zero" else ""

    runs = {
        "extract": cli(home, "extract", "-s", store, index, os.path.join(tmp_path, "out")),
        "cache": cli(home, "cache", "-s", store, "-c", os.path.join(tmp_path, "cache"), index),
    }
    for name, res in runs.items():
        _one_line_naming(res, chunk)
        assert "is invalid" in res.stderr, (name, res.stderr)
        assert res.maxrss_kib < MAX_RSS_KIB, (name, res.maxrss_kib)
    assert not os.path.exists(os.path.join(tmp_path, "out"))

    verify = cli(home, "verify", "-s", store)
    assert verify.returncode == 1 and chunk in verify.stderr, verify.stderr
    assert verify.stderr.splitlines()[-1].startswith("pycasync: error: 1 invalid chunk"), verify.stderr
    assert verify.maxrss_kib < MAX_RSS_KIB

    repair = cli(home, "verify", "-r", "-s", store)
    assert repair.returncode == 0, repair.stderr
    assert repair.maxrss_kib < MAX_RSS_KIB
    assert not os.path.lexists(victim)  # the entry itself is gone ...
    if survivor == "/dev/zero":  # ... and never what it pointed to
        assert os.path.exists("/dev/zero")
    elif survivor:
        assert _sha(survivor) == survivor_sha
    assert _sha("/etc/passwd") == passwd
    assert cli(home, "verify", "-s", store).returncode == 0


@pytest.mark.parametrize("kind", ["symlink-dev-zero", "fifo", "symlink-passwd", "sparse-20g"])
def test_failover_group_moves_past_a_hostile_entry(
    tmp_path: os.PathLike[str], made: tuple[str, str, str, bytes], kind: str
) -> None:
    """``-s "bad|good"``: an invalid chunk fails over to the next member, as a damaged one does."""
    home, store, index, content = made
    bad = os.path.join(tmp_path, "bad")
    shutil.copytree(store, bad)
    _plant(kind, _chunk_files(bad)[0], os.path.join(tmp_path, "outside"))
    out = os.path.join(tmp_path, "out")
    res = cli(home, "extract", "-s", f"{bad}|{store}", index, out)
    assert res.returncode == 0, res.stderr
    assert res.maxrss_kib < MAX_RSS_KIB
    with open(out, "rb") as f:
        assert f.read() == content


@pytest.mark.parametrize("kind", ["symlink-dev-zero", "fifo", "symlink-passwd", "sparse-20g"])
def test_extract_cache_replaces_a_hostile_entry(
    tmp_path: os.PathLike[str], made: tuple[str, str, str, bytes], kind: str
) -> None:
    home, store, index, content = made
    cache = os.path.join(tmp_path, "cache")
    shutil.copytree(store, cache)
    victim = _chunk_files(cache)[0]
    passwd = _sha("/etc/passwd")
    _plant(kind, victim, os.path.join(tmp_path, "outside"))
    out = os.path.join(tmp_path, "out")
    res = cli(home, "extract", "-s", store, "-c", cache, index, out)
    assert res.returncode == 0, res.stderr
    with open(out, "rb") as f:
        assert f.read() == content
    assert os.path.isfile(victim) and not os.path.islink(victim)  # the entry is a real chunk now
    assert _sha("/etc/passwd") == passwd
    assert cli(home, "verify", "-s", cache).returncode == 0


# --- item 12: cache repairs what its target holds ----------------------------------------------------


def _damage(how: str, victim: str, other: str) -> None:
    with open(victim, "rb") as f:
        blob = f.read()
    if how == "truncated":
        blob = blob[: len(blob) // 2]
    elif how == "junk":
        blob += b"junk"
    elif how == "empty":
        blob = b""
    else:  # another chunk's bytes
        with open(other, "rb") as f:
            blob = f.read()
    with open(victim, "wb") as f:
        f.write(blob)


@pytest.mark.parametrize("how", ["truncated", "junk", "empty", "other-chunk"])
def test_cache_replaces_damaged_chunks_in_its_target(
    tmp_path: os.PathLike[str], made: tuple[str, str, str, bytes], how: str
) -> None:
    home, store, index, content = made
    cache = os.path.join(tmp_path, "cache")
    first = cli(home, "cache", "-s", store, "-c", cache, index)
    assert first.returncode == 0, first.stderr
    files = _chunk_files(cache)
    assert len(files) >= 4
    for victim, other in ((files[0], files[1]), (files[2], files[3])):
        _damage(how, victim, other)
    assert cli(home, "verify", "-s", cache).returncode == 1

    again = cli(home, "cache", "-s", store, "-c", cache, index)
    assert again.returncode == 0, again.stderr
    assert cli(home, "verify", "-s", cache).returncode == 0
    out = os.path.join(tmp_path, "out")
    res = cli(home, "extract", "-s", cache, index, out)  # the cache alone
    assert res.returncode == 0, res.stderr
    with open(out, "rb") as f:
        assert f.read() == content


def test_fill_cache_counts_repaired_chunks(
    tmp_path: os.PathLike[str], made: tuple[str, str, str, bytes]
) -> None:
    from casync_format.index import Index
    from casync_store import LocalStore
    from casync_store.ops.maintain import fill_cache

    _home, store, index, _content = made
    source, cache = LocalStore(store, sync=False), LocalStore(os.path.join(tmp_path, "cache"), sync=False)
    with open(index, "rb") as f:
        idx = Index(f)
        ids = {item.id for item in idx}
        first = fill_cache([idx], source, cache)
        assert first.chunks_copied == len(ids) and first.chunks_repaired == 0
        files = _chunk_files(cache.path)
        _damage("junk", files[0], files[1])
        os.unlink(files[1])
        os.symlink("/etc/passwd", files[1])
        again = fill_cache([idx], source, cache)
    assert again.chunks_repaired == 2 and again.chunks_copied == 2
    assert again.chunks_in_cache == len(ids) - 2
    assert not os.path.islink(files[1])
