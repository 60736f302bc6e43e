"""Tests of casync_store.plumbing.clone: reflinks on XFS/btrfs loop mounts, copies elsewhere.

The reflink filesystems are made and mounted here (root needed; under
``CI=true`` a missing tool or mount fails instead of skipping). Sharing is
proved with FIEMAP (same physical blocks in source and destination) and with
free space; bytes are checked everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from casync_store.plumbing import clone
from casync_store.plumbing.clone import ShortSourceError, block_size, can_clone, copy_range
from tests.support import rng_bytes
from tests.support.loopfs import loop_mount, physical_map

__all__: list[str] = []

MiB = 1 << 20


@pytest.fixture(scope="module")
def xfs() -> Iterator[str]:
    with loop_mount("xfs") as point:
        yield point


@pytest.fixture(scope="module")
def btrfs() -> Iterator[str]:
    with loop_mount("btrfs") as point:
        yield point


@pytest.fixture(params=["xfs", "btrfs"])
def reflink_fs(request: pytest.FixtureRequest) -> Iterator[str]:
    point = request.getfixturevalue(request.param)
    clone.forget_failures()
    yield point
    for name in os.listdir(point):
        if name != "lost+found":
            os.unlink(os.path.join(point, name))


@pytest.fixture(autouse=True)
def _fresh_memory() -> Iterator[None]:
    clone.forget_failures()
    yield
    clone.forget_failures()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _run_copy(src: str, src_off: int, dst: str, dst_off: int, length: int) -> tuple[int, int]:
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        return copy_range(sfd, src_off, dfd, dst_off, length)
    finally:
        os.close(sfd)
        os.close(dfd)


def _read(path: str, off: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(length)


def test_aligned_range_is_cloned_and_shares_blocks(reflink_fs: str) -> None:
    src, dst = os.path.join(reflink_fs, "src"), os.path.join(reflink_fs, "dst")
    data = rng_bytes(8 * MiB, 1)
    _write(src, data)
    _write(dst, rng_bytes(4 * MiB, 2))  # cloned into, and past the end of, an existing file
    fd = os.open(src, os.O_RDONLY)
    try:
        bs = block_size(fd)
    finally:
        os.close(fd)
    assert bs >= 512
    assert _run_copy(src, MiB, dst, 2 * MiB, 6 * MiB) == (6 * MiB, 0)
    assert _read(dst, 2 * MiB, 6 * MiB) == data[MiB : 7 * MiB]
    assert _read(dst, 0, 2 * MiB) == rng_bytes(4 * MiB, 2)[: 2 * MiB]
    assert os.path.getsize(dst) == 8 * MiB
    src_blocks = physical_map(src, MiB, 6 * MiB, bs)
    dst_blocks = physical_map(dst, 2 * MiB, 6 * MiB, bs)
    assert -1 not in src_blocks
    assert src_blocks == dst_blocks  # the very same disk blocks
    if shutil.which("filefrag"):  # and filefrag -v says so too
        shown = subprocess.run(["filefrag", "-v", dst], capture_output=True, text=True, check=True).stdout
        assert "shared" in shown, shown


def test_clone_frees_no_space_but_a_copy_does(reflink_fs: str) -> None:
    src = os.path.join(reflink_fs, "src")
    _write(src, rng_bytes(64 * MiB, 3))

    def free() -> int:
        os.sync()
        st = os.statvfs(reflink_fs)
        return st.f_bavail * st.f_frsize

    before = free()
    assert _run_copy(src, 0, os.path.join(reflink_fs, "cloned"), 0, 64 * MiB) == (64 * MiB, 0)
    after_clone = free()
    assert before - after_clone < 8 * MiB
    # the same through a plain copy really takes the space: the measure works
    clone.forget_failures()
    sfd = os.open(src, os.O_RDONLY)
    dfd = os.open(os.path.join(reflink_fs, "copied"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        clone._plain_copy(sfd, 0, dfd, 0, 64 * MiB)
        os.fsync(dfd)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert after_clone - free() > 48 * MiB
    assert _read(os.path.join(reflink_fs, "cloned"), 0, 64 * MiB) == rng_bytes(64 * MiB, 3)


@pytest.mark.parametrize(
    ("src_off", "dst_off", "length"),
    [
        (3 * 4096 + 100, 7 * 4096 + 100, MiB + 333),  # congruent: partial head and tail copied
        (4096, 0, 10 * 4096 + 5),  # aligned start, partial tail
        (4000, 8096, 96),  # inside one block: nothing to clone
    ],
)
def test_congruent_unaligned_offsets(reflink_fs: str, src_off: int, dst_off: int, length: int) -> None:
    src, dst = os.path.join(reflink_fs, "src"), os.path.join(reflink_fs, "dst")
    data = rng_bytes(2 * MiB, 4)
    _write(src, data)
    cloned, copied = _run_copy(src, src_off, dst, dst_off, length)
    assert cloned + copied == length
    head = (-src_off) % 4096
    assert cloned == max(0, (length - head) // 4096 * 4096)
    assert _read(dst, dst_off, length) == data[src_off : src_off + length]
    assert _read(dst, 0, dst_off) == bytes(dst_off)  # a hole before it, read as zeros


def test_offsets_not_congruent_are_copied(reflink_fs: str) -> None:
    src, dst = os.path.join(reflink_fs, "src"), os.path.join(reflink_fs, "dst")
    data = rng_bytes(3 * MiB, 5)
    _write(src, data)
    assert _run_copy(src, 1, dst, 0, 2 * MiB) == (0, 2 * MiB)
    assert _read(dst, 0, 2 * MiB) == data[1 : 2 * MiB + 1]


def test_tail_ending_at_source_eof(reflink_fs: str) -> None:
    src, dst = os.path.join(reflink_fs, "src"), os.path.join(reflink_fs, "dst")
    data = rng_bytes(MiB + 123, 6)
    _write(src, data)
    # a whole file into a new one: the kernel lets the unaligned EOF block be cloned too
    assert _run_copy(src, 0, dst, 0, len(data)) == (len(data), 0)
    assert os.path.getsize(dst) == len(data)
    assert _read(dst, 0, len(data) + 10) == data
    # the unaligned EOF block into the middle of a bigger file: bytes after it survive
    other = rng_bytes(3 * MiB, 7)
    _write(dst, other)
    cloned, copied = _run_copy(src, 0, dst, MiB, len(data))
    assert cloned + copied == len(data) and cloned >= MiB
    expect = other[:MiB] + data + other[2 * MiB + 123 :]
    assert _read(dst, 0, 4 * MiB) == expect


def test_within_one_file(reflink_fs: str) -> None:
    """Self-seed: a range of the output cloned to another place of the same file."""
    path = os.path.join(reflink_fs, "out")
    data = rng_bytes(2 * MiB, 8)
    _write(path, data)
    fd = os.open(path, os.O_RDWR)
    try:
        assert copy_range(fd, 0, fd, 4 * MiB, 2 * MiB) == (2 * MiB, 0)
        assert copy_range(fd, 1, fd, 8 * MiB, 1000)[1] == 1000
    finally:
        os.close(fd)
    assert _read(path, 4 * MiB, 2 * MiB) == data
    assert _read(path, 8 * MiB, 1000) == data[1:1001]


def test_short_source_raises(reflink_fs: str) -> None:
    src, dst = os.path.join(reflink_fs, "src"), os.path.join(reflink_fs, "dst")
    _write(src, rng_bytes(MiB, 9))
    with pytest.raises(ShortSourceError) as info:
        _run_copy(src, 0, dst, 0, 2 * MiB)
    assert isinstance(info.value, EOFError) and isinstance(info.value, OSError)
    with pytest.raises(ShortSourceError):
        _run_copy(src, 2 * MiB, dst, 0, 4096)  # starts past the end


def test_across_filesystems_copies(xfs: str, btrfs: str) -> None:
    src, dst = os.path.join(xfs, "cross-src"), os.path.join(btrfs, "cross-dst")
    data = rng_bytes(4 * MiB, 10)
    _write(src, data)
    try:
        sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            assert not can_clone(sfd, dfd)
            assert copy_range(sfd, 0, dfd, 0, len(data)) == (0, len(data))
        finally:
            os.close(sfd)
            os.close(dfd)
        assert _read(dst, 0, len(data)) == data
    finally:
        os.unlink(src)
        os.unlink(dst)


@pytest.mark.parametrize("fstype", ["ext4", "tmpfs"])
def test_filesystems_without_reflinks_copy(fstype: str) -> None:
    with loop_mount(fstype) as point:
        src, dst = os.path.join(point, "src"), os.path.join(point, "dst")
        data = rng_bytes(4 * MiB + 17, 11)
        _write(src, data)
        sfd, dfd = os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            assert not can_clone(sfd, dfd)
            assert copy_range(sfd, 0, dfd, 4096, len(data)) == (0, len(data))
            assert copy_range(sfd, 5, dfd, 0, 100) == (0, 100)
            with pytest.raises(ShortSourceError):
                copy_range(sfd, 4 * MiB, dfd, 8 * MiB, MiB)
        finally:
            os.close(sfd)
            os.close(dfd)
        assert _read(dst, 4096, len(data)) == data
        assert _read(dst, 0, 100) == data[5:105]


# --- fallbacks, on any filesystem (tmp_path), without root -----------------------------------


def _pair(tmp_path: object, data: bytes) -> tuple[int, int]:
    src, dst = os.path.join(str(tmp_path), "src"), os.path.join(str(tmp_path), "dst")
    _write(src, data)
    return os.open(src, os.O_RDONLY), os.open(dst, os.O_RDWR | os.O_CREAT, 0o644)


def test_plain_fallback_without_copy_file_range(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clone, "_HAVE_CFR", False)
    data = rng_bytes(3 * MiB + 5, 12)
    sfd, dfd = _pair(tmp_path, data)
    try:
        assert copy_range(sfd, 7, dfd, 3, 3 * MiB - 2) == (0, 3 * MiB - 2)
        assert os.pread(dfd, 3 * MiB, 3) == data[7 : 3 * MiB + 5]
        with pytest.raises(ShortSourceError):
            copy_range(sfd, 3 * MiB, dfd, 0, 10)
    finally:
        os.close(sfd)
        os.close(dfd)


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL])
def test_copy_file_range_refused_falls_back(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    calls = []

    def refuse(*args: object) -> int:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(clone, "_HAVE_CFR", True)
    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    monkeypatch.setattr(clone, "can_clone", lambda s, d: False)
    data = rng_bytes(MiB, 13)
    sfd, dfd = _pair(tmp_path, data)
    try:
        for _ in range(3):
            assert copy_range(sfd, 0, dfd, 0, MiB) == (0, MiB)
    finally:
        os.close(sfd)
        os.close(dfd)
    assert os.path.getsize(os.path.join(str(tmp_path), "dst")) == MiB
    # a refusal that will not change is remembered per device pair; EINVAL is per range
    assert len(calls) == (3 if code == errno.EINVAL else 1)


def test_copy_file_range_other_errors_propagate(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(clone, "_HAVE_CFR", True)
    monkeypatch.setattr(os, "copy_file_range", fail, raising=False)
    sfd, dfd = _pair(tmp_path, rng_bytes(4096, 14))
    try:
        with pytest.raises(OSError) as info:
            copy_range(sfd, 0, dfd, 0, 4096)
        assert info.value.errno == errno.ENOSPC
    finally:
        os.close(sfd)
        os.close(dfd)


@pytest.mark.parametrize(
    ("code", "remembered"),
    [(errno.EOPNOTSUPP, True), (errno.EXDEV, True), (errno.ENOTTY, True), (errno.EPERM, False)],
)
def test_clone_refusal_is_remembered(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch, code: int, remembered: bool
) -> None:
    calls = []

    def refuse(*args: object) -> None:
        calls.append(args)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(clone, "_ioctl_clone", refuse)
    data = rng_bytes(MiB, 15)
    sfd, dfd = _pair(tmp_path, data)
    try:
        for _ in range(4):
            assert clone.clone_range(sfd, 0, dfd, 0, MiB) is False
            assert copy_range(sfd, 0, dfd, 0, MiB) == (0, MiB)
        assert os.pread(dfd, MiB, 0) == data
    finally:
        os.close(sfd)
        os.close(dfd)
    # a refusal of the filesystem is asked once (by the first clone_range); one of a file each time
    assert len(calls) == (1 if remembered else 8)


def test_unexpected_clone_error_propagates(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(clone, "_ioctl_clone", fail)
    sfd, dfd = _pair(tmp_path, rng_bytes(4096, 16))
    try:
        with pytest.raises(OSError) as info:
            clone.clone_range(sfd, 0, dfd, 0, 4096)
        assert info.value.errno == errno.EIO
    finally:
        os.close(sfd)
        os.close(dfd)


def test_zero_length_and_block_size(tmp_path: object) -> None:
    sfd, dfd = _pair(tmp_path, b"abc")
    try:
        assert copy_range(sfd, 0, dfd, 0, 0) == (0, 0)
        assert block_size(sfd) > 0
    finally:
        os.close(sfd)
        os.close(dfd)
