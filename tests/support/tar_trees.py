"""Directory trees on disk for the tar-stream tests, GNU tar, and snapshots to compare trees.

:func:`build_tree` builds a tree with every type a tar stream carries (odd
names, modes, hard links, a sparse file, nanosecond or whole-second mtimes,
xattrs where the file system has them; as root also owners and device
nodes); :func:`set_times` gives every object its own mtime;
:func:`snapshot` describes every object under a root, so a tree and what
GNU tar or pycasync unpacked from it compare with ``==``; :func:`gnu_tar`
runs :data:`GNU_TAR` (``None`` when it is not installed).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

from tests.support import IS_ROOT

__all__ = ["GNU_TAR", "BASE_NS", "ODD_NAMES", "build_tree", "set_times", "snapshot", "gnu_tar"]

GNU_TAR = shutil.which("tar")
BASE_NS = 1_600_000_000_000_000_000
ODD_NAMES = [b"x" * 255, b"sp ace", b"new\nline", b"\xff\xfe", b"caf\xc3\xa9", b"#hash", b"back\\slash"]


def _xattrs_supported(path: str) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
        os.removexattr(path, "user.probe")
    except OSError:
        return False
    return True


def build_tree(root: str, *, whole_seconds: bool = False, xattrs: bool = True, socket: bool = False) -> None:
    """A tree with every type tar can carry, odd names, modes, hard links, nsec mtimes."""
    j = os.path.join
    os.makedirs(j(root, "sub", "deeper"))
    with open(j(root, "a"), "wb") as f:
        f.write(b"hello\n")
    with open(j(root, "sub", "big"), "wb") as f:
        f.write(os.urandom(50_000) * 4)
    with open(j(root, "sparse"), "wb") as f:
        f.seek(1 << 20)
        f.write(b"tail")
    open(j(root, "empty"), "wb").close()
    os.link(j(root, "a"), j(root, "hard"))
    for name, mode in (("suid", 0o4755), ("sgid", 0o2750), ("private", 0o600)):
        with open(j(root, name), "wb") as f:
            f.write(name.encode())
        os.chmod(j(root, name), mode)
    os.mkdir(j(root, "sticky"))
    os.chmod(j(root, "sticky"), 0o1777)
    for name in ODD_NAMES:
        with open(os.path.join(os.fsencode(root), name), "wb") as f:
            f.write(name)
    path = j(root, "deep")
    for level in range(12):
        path = j(path, f"level-{level:02d}-{'n' * 20}")
    os.makedirs(path)
    with open(j(path, "bottom"), "wb") as f:
        f.write(b"bottom")
    os.symlink("a", j(root, "link"))
    os.symlink("/nonexistent/" + "t" * 300, j(root, "long-link"))
    os.mkfifo(j(root, "fifo"), 0o640)
    if socket:
        os.mknod(j(root, "socket"), stat.S_IFSOCK | 0o755)
    if xattrs and _xattrs_supported(root):
        os.setxattr(j(root, "a"), "user.one", b"1")
        os.setxattr(j(root, "sub"), "user.dir", b"\x00binary\xff")
    if IS_ROOT:
        os.mknod(j(root, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(j(root, "loop"), stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.chown(j(root, "sub", "big"), 1234, 70000)
        os.chown(j(root, "link"), 3456, 6543, follow_symlinks=False)
        os.chmod(j(root, "suid"), 0o4755)
    set_times(root, whole_seconds)


def set_times(root: str, whole_seconds: bool) -> None:
    step = 1_000_000_000 if whole_seconds else 1_000_000_007
    counter = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]:
            counter += 1
            times = (BASE_NS, BASE_NS + counter * step)
            os.utime(os.path.join(dirpath, name), ns=times, follow_symlinks=False)
        counter += 1
        os.utime(dirpath, ns=(BASE_NS, BASE_NS + counter * step))


def _describe(path: bytes, *, seconds: bool, owners: bool, xattrs: bool) -> tuple:
    s = os.lstat(path)
    digest = None
    if stat.S_ISREG(s.st_mode):
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    mtime = s.st_mtime_ns // 10**9 * 10**9 if seconds else s.st_mtime_ns
    attrs: tuple = ()
    if xattrs and not stat.S_ISLNK(s.st_mode):
        names = sorted(n for n in os.listxattr(path) if n.startswith("user."))
        attrs = tuple((n, os.getxattr(path, n)) for n in names)
    rdev = s.st_rdev if stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode) else 0
    target = os.readlink(path) if stat.S_ISLNK(s.st_mode) else None
    owner = (s.st_uid, s.st_gid) if owners else None
    mode = s.st_mode if not stat.S_ISLNK(s.st_mode) else stat.S_IFLNK
    return (mode, owner, mtime, rdev, target, digest, attrs)


def snapshot(root: str, *, seconds: bool = False, owners: bool = True, xattrs: bool = True) -> dict:
    """``{relative path: description}`` of every object under ``root`` (root = b"")."""
    base = os.fsencode(root)
    out = {b"": _describe(base, seconds=seconds, owners=owners, xattrs=xattrs)}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, base)] = _describe(path, seconds=seconds, owners=owners, xattrs=xattrs)
    return out


def gnu_tar(*args: str, input: bytes | None = None) -> bytes:
    """Run GNU tar; return its stdout."""
    return subprocess.run([GNU_TAR, *args], input=input, check=True, capture_output=True).stdout
