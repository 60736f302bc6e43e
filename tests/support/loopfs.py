"""Throwaway filesystems on loop devices, for tests of reflinks and cloning.

:func:`loop_mount` makes a sparse image file in ``/tmp``, formats it
(``xfs`` with reflink, ``btrfs``, ``ext4``) or mounts a ``tmpfs``, mounts it
with ``mount -o loop`` and yields the mount point; on exit it unmounts,
detaches the loop device and deletes the image. :func:`unavailable` skips a
test when root or a tool is missing, but fails it under ``CI=true``, where
these tests must run. :func:`extents` reads a file's physical extents with
the ``FIEMAP`` ioctl, to prove that two files share blocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from typing import NoReturn

import pytest

__all__ = ["MKFS", "loop_mount", "unavailable", "extents", "physical_map"]

# filesystem -> the mkfs command line (the image path is appended)
MKFS = {
    "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "ext4": ["mkfs.ext4", "-q", "-F"],
}
IMAGE_SIZE = 320 << 20  # mkfs.xfs wants at least 300 MB

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_HEAD = struct.Struct("=QQIIII")
_FIEMAP_EXTENT = struct.Struct("=QQQ2QI3I")


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when ``CI=true`` (CI must run it)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def _run(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.contextmanager
def loop_mount(fstype: str) -> Iterator[str]:
    """A fresh, empty, mounted filesystem of ``fstype``; yields its mount point."""
    if os.geteuid() != 0:
        unavailable(f"mounting {fstype} needs root")
    work = tempfile.mkdtemp(prefix=f"pycasync-{fstype}-", dir="/tmp")
    point = os.path.join(work, "mnt")
    os.mkdir(point)
    image = os.path.join(work, "fs.img")
    mounted = False
    try:
        if fstype == "tmpfs":
            cmd = ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", point]
        else:
            tool = MKFS[fstype][0]
            if shutil.which(tool) is None:
                unavailable(f"{tool} is not installed")
            with open(image, "wb") as f:
                f.truncate(IMAGE_SIZE)
            try:
                _run(*MKFS[fstype], image)
            except subprocess.CalledProcessError as e:
                unavailable(f"{tool} failed: {e.stderr.decode(errors='replace').strip()}")
            cmd = ["mount", "-o", "loop", "-t", fstype, image, point]
        try:
            _run(*cmd)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            unavailable(f"cannot mount {fstype}: {e}")
        mounted = True
        yield point
    finally:
        if mounted and subprocess.run(["umount", point], check=False).returncode != 0:
            subprocess.run(["umount", "-l", point], check=False)  # busy: detach it anyway
        if os.path.exists(image):  # mount -o loop detaches on umount; make sure
            found = subprocess.run(["losetup", "-j", image], capture_output=True, text=True)
            for line in found.stdout.splitlines():
                subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)
        if not os.path.ismount(point):  # never delete into a filesystem still mounted
            shutil.rmtree(work, ignore_errors=True)


def extents(path: str) -> list[tuple[int, int, int]]:
    """``(logical, physical, length)`` in bytes of every extent of ``path`` (synced first)."""
    out: list[tuple[int, int, int]] = []
    start, count = 0, 256
    with open(path, "rb") as f:
        while True:
            buf = bytearray(_FIEMAP_HEAD.pack(start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0, count, 0))
            buf += bytes(_FIEMAP_EXTENT.size * count)
            fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf)
            mapped = _FIEMAP_HEAD.unpack_from(buf)[3]
            last = False
            for i in range(mapped):
                fields = _FIEMAP_EXTENT.unpack_from(buf, _FIEMAP_HEAD.size + i * _FIEMAP_EXTENT.size)
                logical, physical, length, flags = fields[0], fields[1], fields[2], fields[5]
                out.append((logical, physical, length))
                start = logical + length
                last = bool(flags & FIEMAP_EXTENT_LAST)
            if mapped == 0 or last:
                return out


def physical_map(path: str, offset: int, length: int, block: int) -> list[int]:
    """The physical address of each ``block``-sized block of ``path`` in the range (-1: hole)."""
    ext = extents(path)
    result = []
    for pos in range(offset, offset + length, block):
        phys = -1
        for logical, physical, size in ext:
            if logical <= pos < logical + size:
                phys = physical + (pos - logical)
                break
        result.append(phys)
    return result
