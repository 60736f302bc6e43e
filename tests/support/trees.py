"""Directory trees on disk for the catar tests, and snapshots to compare trees and archives.

:func:`make_tree` builds a tree with every file type casync archives (odd
names, modes, nanosecond mtimes, xattrs; as root also owners, device nodes and
fcaps); :func:`snapshot_tree` describes every object under a root and
:func:`snapshot_items` gives the same description of decoded archive items,
so a tree, its archive and its extraction compare with ``==``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable

from casync_format.catar_read import Item
from tests.support import IS_ROOT
from tests.support.catar_build import FCAPS, MTIME

__all__ = ["make_tree", "snapshot_tree", "snapshot_items"]


def make_tree(root: str, *, deep: int = 20, privileged: bool = IS_ROOT, long_name: int = 255) -> None:
    """A tree with every file type, odd names, modes, owners, nsec mtimes and xattrs.

    ``casync extract`` fails on names longer than 237 bytes (its temporary
    names add 18 bytes), hence ``long_name``.
    """
    os.makedirs(root)
    j = os.path.join
    with open(j(root, "data"), "wb") as out:
        out.write(os.urandom(1000) * 150)
    for name, mode in (("empty", 0o644), ("exec", 0o755), ("suid", 0o4755), ("sgid", 0o2711)):
        with open(j(root, name), "wb") as out:
            out.write(name.encode() * 3)
        os.chmod(j(root, name), mode)
    os.mkdir(j(root, "sticky"))
    os.chmod(j(root, "sticky"), 0o1777)
    os.mkdir(j(root, "ro"))
    with open(j(root, "ro", "inside"), "wb") as out:
        out.write(b"read only dir")
    odd = [b"x" * long_name, b"caf\xe9", b"new\nline", b"sp ace", b"-dash", b"\xff\xfe"]
    for name in odd:
        with open(os.path.join(os.fsencode(root), name), "wb") as out:
            out.write(name)
    os.symlink("data", j(root, "link"))
    os.symlink("/nonexistent/abs/target", j(root, "dangling"))
    os.mkfifo(j(root, "fifo"), 0o640)
    os.mknod(j(root, "socket"), stat.S_IFSOCK | 0o755)
    path = j(root, "deep")
    for level in range(deep):
        path = j(path, f"d{level}")
    os.makedirs(path)
    with open(j(path, "bottom"), "wb") as out:
        out.write(b"bottom")
    os.setxattr(j(root, "data"), "user.one", b"1")
    os.setxattr(j(root, "data"), "user.two", b"\x00binary\xff")
    os.setxattr(j(root, "sticky"), "user.dir", b"on a dir")
    if privileged:
        _privileged_parts(root)
    _set_times(root)
    os.chmod(j(root, "ro"), 0o555)


def _privileged_parts(root: str) -> None:
    j = os.path.join
    os.mknod(j(root, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(j(root, "loop"), stat.S_IFBLK | 0o600, os.makedev(7, 200))
    os.chown(j(root, "data"), 1234, 4321)
    os.chown(j(root, "sticky"), 2345, 5432)
    os.chown(j(root, "link"), 3456, 6543, follow_symlinks=False)
    with open(j(root, "capable"), "wb") as out:
        out.write(b"#!/bin/true\n")
    os.setxattr(j(root, "capable"), "security.capability", FCAPS)
    os.setxattr(j(root, "data"), "trusted.t", b"trusted value")
    os.chmod(j(root, "suid"), 0o4755)  # chown/xattr changes cleared nothing, but be sure


def _set_times(root: str) -> None:
    """Distinct nanosecond mtimes, directories after their contents."""
    walk = list(os.walk(root, topdown=False))
    counter = 0
    for dirpath, dirnames, filenames in walk:
        for name in filenames + [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]:
            counter += 1
            os.utime(
                os.path.join(dirpath, name), ns=(MTIME, MTIME + counter * 1_000_001), follow_symlinks=False
            )
        counter += 1
        os.utime(dirpath, ns=(MTIME, MTIME + counter * 1_000_001))


def _xattrs(path: bytes, caps: bool) -> tuple[tuple[bytes, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    keep = []
    for name in names:
        if name.startswith(("user.", "trusted.")) or (caps and name == "security.capability"):
            value = os.getxattr(path, name, follow_symlinks=False)
            keep.append((name.encode(), value))
    return tuple(sorted(keep))


def snapshot_tree(root: str, *, caps: bool = True, owners: bool = True) -> dict[bytes, tuple]:
    """``{relative path: (mode, uid, gid, mtime_ns, rdev, size, target, xattrs, sha256)}``."""
    base = os.fsencode(root)
    result: dict[bytes, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [b"", *dirnames, *filenames] if dirpath == base else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else dirpath
            rel = os.path.relpath(path, base) if path != base else b""
            result[b"" if rel == b"." else rel] = _describe(path, caps, owners)
    return result


def _describe(path: bytes, caps: bool, owners: bool) -> tuple:
    st_ = os.lstat(path)
    mode = st_.st_mode
    target = os.readlink(path) if stat.S_ISLNK(mode) else None
    digest = None
    size = 0
    if stat.S_ISREG(mode):
        with open(path, "rb") as data:
            digest = hashlib.sha256(data.read()).hexdigest()
        size = st_.st_size
    rdev = st_.st_rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0
    uid, gid = (st_.st_uid, st_.st_gid) if owners else (0, 0)
    xattrs = () if stat.S_ISLNK(mode) else _xattrs(path, caps)
    return (mode, uid, gid, st_.st_mtime_ns, rdev, size, target, xattrs, digest)


def snapshot_items(items: Iterable[Item], *, caps: bool = True, owners: bool = True) -> dict[bytes, tuple]:
    """The same description built from decoder items (payloads read)."""
    result: dict[bytes, tuple] = {}
    for item in items:
        if item.kind == "leave":
            continue
        e = item.entry
        assert e is not None
        digest = hashlib.sha256(item.payload.read()).hexdigest() if item.payload is not None else None
        xattrs = list(e.xattrs)
        if caps and e.fcaps is not None:
            xattrs.append((b"security.capability", e.fcaps))
        uid, gid = (e.uid, e.gid) if owners else (0, 0)
        result[item.path] = (
            e.mode,
            uid,
            gid,
            e.mtime_ns,
            e.rdev,
            e.size,
            e.target,
            tuple(sorted(xattrs)),
            digest,
        )
    return result
