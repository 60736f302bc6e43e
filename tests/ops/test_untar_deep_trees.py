"""``untar`` over an existing directory tree of any depth, through the real command line.

The target holds a directory nested 1,500 (and 5,000) levels deep
where the archive has a regular file of that name; ``python3 pycasync.py
untar`` must replace the tree by the file (exit 0), and a symlink inside the
tree pointing outside the target must be removed as a link, its target left
alone. The child runs with a descriptor limit of 128, so a removal that
keeps one descriptor per level fails too. Absolute paths of such trees
exceed PATH_MAX: every tree here is built and inspected with ``dir_fd``.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys

import pytest

from casync_store.plumbing import dirfd as _dirfd
from tests.support.cli import CLI, ROOT, ok

NAME = "d"
CONTENT = b"the archive's file where a deep tree was\n"
FD_LIMIT = 128


def make_deep(parent: str, depth: int, link_target: str | None = None) -> None:
    """``parent/d/d/.../d`` (``depth`` directories), a file at the bottom, and a symlink halfway."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir(NAME, dir_fd=fd)
            child = os.open(NAME, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
            if link_target is not None and level == depth // 2:
                os.symlink(link_target, "escape", dir_fd=fd)
                os.symlink(os.path.dirname(link_target), "escape-dir", dir_fd=fd)
        with open(os.open("bottom", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd), "wb") as f:
            f.write(b"x")
    finally:
        os.close(fd)


def limited_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def run_limited(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, CLI, *args], env=env, cwd=ROOT, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=300, preexec_fn=limited_fds)


@pytest.fixture
def archive(env: dict[str, str], tmp_path: os.PathLike[str]) -> str:
    """A catar (made by ``pycasync tar``) whose top directory holds the regular file ``d``."""
    src = os.path.join(tmp_path, "src")
    os.mkdir(src)
    with open(os.path.join(src, NAME), "wb") as f:
        f.write(CONTENT)
    with open(os.path.join(src, "other"), "wb") as f:
        f.write(b"other\n")
    path = os.path.join(tmp_path, "a.catar")
    ok(env, "tar", path, src)
    return path


@pytest.mark.parametrize("depth", [1_500, 5_000])
def test_untar_replaces_a_deep_tree_by_the_archive_file(
    env: dict[str, str], tmp_path: os.PathLike[str], archive: str, depth: int
) -> None:
    target, outside = os.path.join(tmp_path, "target"), os.path.join(tmp_path, "outside")
    os.mkdir(target)
    os.mkdir(outside)
    precious = os.path.join(outside, "precious")
    with open(precious, "wb") as f:
        f.write(b"keep me\n")
    make_deep(target, depth, link_target=precious)
    proc = run_limited(env, "untar", archive, target)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stderr == b""
    path = os.path.join(target, NAME)
    assert not os.path.islink(path) and os.path.isfile(path)
    with open(path, "rb") as f:
        assert f.read() == CONTENT
    assert sorted(os.listdir(target)) == [NAME, "other"]  # the whole tree is gone
    with open(precious, "rb") as f:  # the symlinks were removed, never followed
        assert f.read() == b"keep me\n"
    assert os.listdir(outside) == ["precious"]


def test_remove_tree_keeps_a_bounded_number_of_descriptors(tmp_path: os.PathLike[str]) -> None:
    """20,000 levels removed in-process under a descriptor limit just above the window."""
    depth = 20_000
    make_deep(str(tmp_path), depth)
    open_fds = [int(n) for n in os.listdir("/proc/self/fd")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    pfd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    # Descriptors are numbered lowest free first: this many more than are open now, no more.
    resource.setrlimit(resource.RLIMIT_NOFILE, (max([*open_fds, pfd]) + 1 + _dirfd.FD_WINDOW + 4, hard))
    try:
        _dirfd.remove(pfd, NAME)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        os.close(pfd)
    assert os.listdir(tmp_path) == []
    assert sorted(int(n) for n in os.listdir("/proc/self/fd")) == sorted(open_fds)  # all closed again


def test_remove_stops_where_a_moved_tree_leads_outside(
    tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Part of the tree moved away while it is removed: ``..`` then leads elsewhere, and removal stops.

    The moved part (the tree being removed) is emptied, but its new parent,
    which is not the directory the removal came from, is left alone.
    """
    make_deep(str(tmp_path), _dirfd.FD_WINDOW + 10)
    keep = os.path.join(tmp_path, "keep")
    os.mkdir(keep)
    with open(os.path.join(keep, "sentinel"), "wb") as f:
        f.write(b"s")
    real_rmdir = os.rmdir

    def moving_rmdir(name: str, *, dir_fd: int) -> None:
        if not os.path.exists(os.path.join(keep, "moved")):  # at the first rmdir (the bottom)
            os.rename(os.path.join(tmp_path, NAME, NAME), os.path.join(keep, "moved"))
        real_rmdir(name, dir_fd=dir_fd)

    monkeypatch.setattr(_dirfd.os, "rmdir", moving_rmdir)
    pfd = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as info:
            _dirfd.remove(pfd, NAME)
    finally:
        os.close(pfd)
    monkeypatch.undo()
    assert info.value.errno == errno.ESTALE
    assert os.listdir(os.path.join(tmp_path, NAME)) == []  # where the tree was moved from: left
    assert sorted(os.listdir(keep)) == ["moved", "sentinel"] and os.listdir(os.path.join(keep, "moved")) == []
