"""The directory walker of ``tar``: a tree read as casync's encoder reads it.

:func:`walk_tree` lists each directory's children in ``strcmp`` order of
their names and visits them through directory fds (``openat``-style, so depth
is not limited by PATH_MAX), recording for each object what the feature flags
ask for (uids, user names, time granularity, permissions, symlinks, device
nodes, fifos, sockets, xattrs, fcaps, chattr flags) and leaving out what
casync leaves out (file types the flags do not allow, the ``nodump`` chattr
flag with ``CA_FORMAT_EXCLUDE_NODUMP``, ``.caexclude`` rules with
``CA_FORMAT_EXCLUDE_FILE``, other file systems with ``one_file_system`` or
``CA_FORMAT_EXCLUDE_SUBMOUNTS``). It yields :class:`TreeEvent` s that drive a
:class:`~casync_format.catar.CatarWriter` (see :mod:`casync_store.ops.tar`, which
re-exports both names). Syscalls per object are kept to what casync does:
the directory entry type avoids an ``lstat`` for directories and regular
files (they are opened with ``O_NOFOLLOW`` and ``fstat``-ed), the chattr
ioctl runs only when the flags need chattr or nodump bits, xattrs are listed
only with the xattr/fcaps flags.

Not read from the file system (their records are left out even when the
flags declare them): POSIX ACLs, SELinux labels, quota project ids, FAT
attributes, btrfs subvolume flags. desync's feature set declares none of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import grp
import io
import os
import pwd
import stat
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple, Union

from casync_format._catar_exclude import EXCLUDE_FILE_NAME, ExcludeRules
from casync_format.catar import (
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_CHATTR,
    CA_FORMAT_WITH_FCAPS,
    CA_FORMAT_WITH_USER_NAMES,
    DESYNC_TAR_FLAGS,
    KIND_FLAGS,
    Entry,
    flags_from_chattr,
    normalize_feature_flags,
    xattr_name_stored,
)
from casync_format.constants import (
    CA_FORMAT_EXCLUDE_FILE,
    CA_FORMAT_EXCLUDE_NODUMP,
    CA_FORMAT_EXCLUDE_SUBMOUNTS,
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_WITH_XATTRS,
)
from casync_format.errors import FormatError

__all__ = ["PathLike", "TreeEvent", "walk_tree"]

PathLike = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_FS_NODUMP_FL = 0x40
_FS_IOC_GETFLAGS = (2 << 30) | (struct.calcsize("l") << 16) | (ord("f") << 8) | 1
_UNSUPPORTED = {errno.ENOTTY, errno.ENOSYS, errno.EBADF, errno.EOPNOTSUPP, errno.EINVAL}  # casync's list
_OPEN = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW
_O_PATH = getattr(os, "O_PATH", 0)
_OPEN_HINTED = _OPEN | os.O_NONBLOCK  # a node that turned into a fifo must not block the walk
_NO_RULES = ExcludeRules()  # immutable, so one serves every directory without rules


class TreeEvent(NamedTuple):
    """One step of a tree walk, in the order a :class:`CatarWriter` takes them.

    ``kind`` is ``"enter"`` (a directory; the first event is the root),
    ``"file"`` (any non-directory) or ``"leave"`` (the directory entered last
    is complete; the last event leaves the root). ``entry`` is None for
    ``"leave"``. ``path`` is the object's path (the source directory joined
    with the names, bytes). ``payload`` is, for regular files, a binary file
    open on the content, valid only until the iterator is advanced.
    """

    kind: str
    entry: Entry | None
    path: bytes
    payload: BinaryIO | None


class _Dir:
    """A directory being walked: its fd, sorted child names and exclusion rules."""

    __slots__ = (
        "active", "dev", "fd", "loaded", "mount_id", "names", "next", "path", "rules", "types", "virtual",
    )

    def __init__(self, fd: int, path: bytes, dev: int, rules: ExcludeRules, virtual: bool) -> None:
        self.fd = fd
        self.path = path
        self.dev = dev
        self.rules = rules
        self.virtual = virtual  # on an API file system (proc, sysfs...): casync lists no children
        self.loaded = False  # .caexclude looked at (casync does it when testing the first child)
        self.active = True  # whether ``rules`` has any rule (known once loaded)
        listing = [] if virtual else _list_dir(fd)
        self.names = [name for name, _ in listing]
        self.types = [kind for _, kind in listing]  # the entry's S_IFREG/S_IFDIR hint, else 0
        self.next = 0
        self.mount_id: int | None = None


# Kernel API file systems whose directories and files casync does not enumerate or read
# (binfmt_misc, cgroup2, cgroup, configfs, debugfs, devpts, efivarfs, fusectl, hugetlbfs,
# mqueue, nfsd, proc, pstore, rpc_pipefs, securityfs, selinuxfs, smackfs, sysfs).
_VIRTUAL_FS = frozenset({
    0x42494E4D, 0x63677270, 0x27E0EB, 0x62656570, 0x64626720, 0x1CD1, 0xDE5E81E4, 0x65735543,
    0x958458F6, 0x19800202, 0x6E667364, 0x9FA0, 0x6165676C, 0x67596969, 0x73636673, 0xF97CFF8C,
    0x43415D53, 0x62656572,
})
_LIBC: list[object] = []


def _is_virtual_fs(fd: int) -> bool:
    """Whether ``fd`` is on a kernel API file system (``fstatfs`` ``f_type``; False if unknown)."""
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).fstatfs)
        except (OSError, AttributeError):
            _LIBC.append(None)
    fstatfs = _LIBC[0]
    if fstatfs is None:
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type (a long) comes first
    if fstatfs(fd, buf) != 0:  # type: ignore[operator]
        return False
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF in _VIRTUAL_FS


def _chattr(fd: int) -> int:
    """The file's chattr flags (0 where the file system has none)."""
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0\0\0\0")  # the kernel writes an int
    except OSError as exc:
        if exc.errno in _UNSUPPORTED:
            return 0
        raise
    return int.from_bytes(raw, sys.byteorder)


def _mount_id(fd: int) -> int:
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _read_xattrs(fd: int, regular: bool) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """The xattrs casync stores (``user.``/``trusted.``) and ``security.capability``."""
    try:
        names = os.listxattr(fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EBADF, errno.ENOTSUP):
            return [], None
        raise
    if not names:
        return [], None
    kept: list[tuple[bytes, bytes]] = []
    fcaps = None
    for name in names:
        raw = os.fsencode(name)
        is_caps = regular and raw == b"security.capability"
        if not (is_caps or xattr_name_stored(raw)):
            continue
        try:
            value = os.getxattr(fd, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # went missing meanwhile
                continue
            raise
        if is_caps:
            fcaps = value
        else:
            kept.append((raw, value))
    kept.sort()
    return kept, fcaps


class _Names:
    """uid/gid to name lookups as casync does them (none for 0), cached."""

    def __init__(self, flags: int) -> None:
        self.numeric_fallback = not flags & (CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS)
        self.cache: dict[tuple[str, int], bytes | None] = {}

    def name(self, kind: str, ident: int) -> bytes | None:
        """The name of user (``kind="user"``) or group ``ident``, or None."""
        key = (kind, ident)
        if key not in self.cache:
            if len(self.cache) > 4096:
                self.cache.clear()
            self.cache[key] = self._lookup(kind, ident)
        return self.cache[key]

    def _lookup(self, kind: str, ident: int) -> bytes | None:
        if ident == 0:
            return None
        try:
            found = pwd.getpwuid(ident).pw_name if kind == "user" else grp.getgrgid(ident).gr_name
        except KeyError:
            return str(ident).encode() if self.numeric_fallback else None
        return os.fsencode(found)


class _Walker:
    """State of one walk: feature flags and options."""

    def __init__(self, flags: int, one_file_system: bool, no_time: bool, skip: set[tuple[int, int]]):
        self.flags = flags
        self.no_time = no_time
        self.other_fs = one_file_system or bool(flags & CA_FORMAT_EXCLUDE_SUBMOUNTS)
        self.skip = skip
        self.names = _Names(flags) if flags & CA_FORMAT_WITH_USER_NAMES else None
        self.dropped = frozenset(kind for kind, need in KIND_FLAGS.items() if not flags & need)
        self.chattr = bool(flags & CA_FORMAT_WITH_CHATTR)
        self.nodump = bool(flags & CA_FORMAT_EXCLUDE_NODUMP)
        self.exclude_file = bool(flags & CA_FORMAT_EXCLUDE_FILE)
        self.xattrs = bool(flags & (CA_FORMAT_WITH_XATTRS | CA_FORMAT_WITH_FCAPS))

    def entry(self, name: bytes, st: os.stat_result, fd: int | None, parent: _Dir | None) -> Entry:
        """The Entry for an object; ``fd`` is open on it for directories and regular files."""
        mode = st.st_mode
        entry = Entry(name, mode, st.st_uid, st.st_gid, 0 if self.no_time else st.st_mtime_ns)
        kind = mode & 0o170000
        if kind == stat.S_IFREG:
            entry.size = st.st_size
        elif kind in (stat.S_IFBLK, stat.S_IFCHR):
            entry.rdev = st.st_rdev
        elif kind == stat.S_IFLNK and parent is not None:
            entry.target = os.readlink(name, dir_fd=parent.fd)
        if self.names is not None:
            entry.user = self.names.name("user", st.st_uid)
            entry.group = self.names.name("group", st.st_gid)
        if fd is not None and self.chattr:
            entry.flags = flags_from_chattr(_chattr(fd))
        if self.xattrs and kind != stat.S_IFLNK:
            entry.xattrs, entry.fcaps = self._xattrs(name, fd, parent, kind == stat.S_IFREG)
        return entry

    def _xattrs(
        self, name: bytes, fd: int | None, parent: _Dir | None, regular: bool
    ) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
        if fd is not None:
            return _read_xattrs(fd, regular)
        if parent is None or not _O_PATH:
            return [], None
        # casync lists xattrs of other nodes through an O_PATH fd, as we do.
        path_fd = os.open(name, _O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
        try:
            return _read_xattrs(path_fd, False)
        finally:
            os.close(path_fd)

    def excluded(self, parent: _Dir, name: bytes, st: os.stat_result, fd: int | None) -> ExcludeRules | None:
        """None when casync would leave the child out, else the exclusion rules inside it."""
        kind = st.st_mode & 0o170000
        if kind in self.dropped:
            return None
        if self.skip and (st.st_dev, st.st_ino) in self.skip:
            return None
        if fd is not None and self.nodump and _chattr(fd) & _FS_NODUMP_FL:
            return None
        if self.other_fs and self._other_mount(parent, st, fd):
            return None
        if not self.exclude_file:
            return _NO_RULES
        if not parent.loaded:
            parent.loaded = True
            if EXCLUDE_FILE_NAME in parent.names:
                parent.rules = parent.rules.with_file(_read_exclude_file(parent))
            parent.active = bool(parent.rules)
        if not parent.active:
            return parent.rules
        out, inner = parent.rules.test(name, kind == stat.S_IFDIR)
        return None if out else inner

    def _other_mount(self, parent: _Dir, st: os.stat_result, fd: int | None) -> bool:
        if st.st_dev != parent.dev:
            return True
        if not self.flags & CA_FORMAT_EXCLUDE_SUBMOUNTS or fd is None:
            return False
        if parent.mount_id is None:
            parent.mount_id = _mount_id(parent.fd)
        child = _mount_id(fd)
        return child >= 0 and parent.mount_id >= 0 and child != parent.mount_id


def _read_exclude_file(parent: _Dir) -> bytes:
    # casync follows a symlink here (plain openat), so do we.
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    path = os.path.join(parent.path, EXCLUDE_FILE_NAME)
    try:
        fd = os.open(EXCLUDE_FILE_NAME, flags, dir_fd=parent.fd)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, path) from None
    with open(fd, "rb") as f:
        try:
            data = f.read(_EXCLUDE_FILE_MAX + 1)  # bounded: it may be a symlink to /dev/zero
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, path) from None
    if len(data) > _EXCLUDE_FILE_MAX:
        raise FormatError(f"{os.fsdecode(path)}: exclude file larger than {_EXCLUDE_FILE_MAX} bytes")
    return data


_EXCLUDE_FILE_MAX = 4 << 20


def _list_dir(fd: int) -> list[tuple[bytes, int]]:
    """A directory's ``(name, type hint)`` pairs in ``strcmp`` order (the hint from ``d_type``)."""
    out = []
    encoding, errors = _FS_ENCODING
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                kind = stat.S_IFREG
            elif entry.is_dir(follow_symlinks=False):
                kind = stat.S_IFDIR
            else:
                kind = 0
            out.append((entry.name.encode(encoding, errors), kind))  # os.fsencode, inlined
    out.sort()
    return out


_FS_ENCODING = (sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _open_child(parent: _Dir, name: bytes, hint: int) -> tuple[os.stat_result, int | None]:
    """lstat a child; open it too when it is a directory or regular file (as casync does).

    When the directory entry says it is a regular file or a directory, it is
    opened (never following a symlink, never blocking) and ``fstat``-ed
    without the ``lstat``; if it has changed type meanwhile, the plain path
    below decides.
    """
    if hint:
        try:
            flags = _OPEN_HINTED | (os.O_DIRECTORY if hint == stat.S_IFDIR else 0)
            fd = os.open(name, flags, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EOPNOTSUPP):
                raise
        else:
            try:
                st = os.fstat(fd)
            except BaseException:
                os.close(fd)
                raise
            if stat.S_IFMT(st.st_mode) == hint:
                return st, fd
            os.close(fd)
    st = os.lstat(name, dir_fd=parent.fd)
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return st, None
    flags = _OPEN | (os.O_DIRECTORY if stat.S_ISDIR(st.st_mode) else 0)
    fd = os.open(name, flags, dir_fd=parent.fd)
    try:
        return os.fstat(fd), fd
    except BaseException:
        os.close(fd)
        raise


def walk_tree(
    source_dir: PathLike,
    feature_flags: int = DESYNC_TAR_FLAGS,
    one_file_system: bool = False,
    no_time: bool = False,
    _skip: set[tuple[int, int]] | None = None,
) -> Iterator[TreeEvent]:
    """Walk ``source_dir`` as ``casync make`` does; yield :class:`TreeEvent` s.

    The first event enters the root (``entry.name == b""``), the last leaves
    it; feed them to a writer with :func:`write_tree`. Entries carry raw
    values (full mode, uid, ns mtime — zero with ``no_time``); the writer
    reduces them to the feature set. Raises :class:`OSError` naming the path
    for unreadable objects and :class:`FormatError` for a bad ``.caexclude``.
    """
    flags = normalize_feature_flags(feature_flags)
    walker = _Walker(flags, one_file_system, no_time, _skip or set())
    root_path = os.fsencode(source_dir)
    fd = os.open(root_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_DIRECTORY)
    stack: list[_Dir] = []
    try:
        try:
            st = os.fstat(fd)
            root = walker.entry(b"", st, fd, None)
            stack.append(_Dir(fd, root_path, st.st_dev, ExcludeRules(), _is_virtual_fs(fd)))
        except BaseException:
            os.close(fd)
            raise
        yield TreeEvent("enter", root, root_path, None)
        while stack:
            top = stack[-1]
            if top.next >= len(top.names):
                stack.pop()
                os.close(top.fd)
                yield TreeEvent("leave", None, top.path, None)
                continue
            index = top.next
            top.next = index + 1
            event, child_fd = _visit(walker, stack, top.names[index], top.types[index])
            if child_fd is None:
                if event is not None:
                    yield event
                continue
            try:
                yield event  # type: ignore[misc]
            finally:
                os.close(child_fd)  # the payload is valid until the walk moves on
    finally:
        for frame in stack:
            with contextlib.suppress(OSError):
                os.close(frame.fd)


def _visit(walker: _Walker, stack: list[_Dir], name: bytes, hint: int) -> tuple[TreeEvent | None, int | None]:
    """The event for one child of ``stack[-1]`` (None: left out) and an fd to close after it.

    A directory is pushed on ``stack`` (which then owns its fd).
    """
    parent = stack[-1]
    try:
        st, fd = _open_child(parent, name, hint)
    except FileNotFoundError:
        return None, None  # vanished since the listing
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, os.fsdecode(parent.path + b"/" + name)) from None
    try:
        rules = walker.excluded(parent, name, st, fd)
        if rules is None:
            if fd is not None:
                os.close(fd)
            return None, None
        entry = walker.entry(name, st, fd, parent)
        path = parent.path + b"/" + name
        virtual = parent.virtual
        if fd is not None and st.st_dev != parent.dev:
            virtual = _is_virtual_fs(fd)
        if fd is None:
            return TreeEvent("file", entry, path, None), None
        if st.st_mode & 0o170000 == stat.S_IFDIR:
            stack.append(_Dir(fd, path, st.st_dev, rules, virtual))
            return TreeEvent("enter", entry, path, None), None
        if virtual:  # casync records such a file with an empty payload
            entry.size = 0
            return TreeEvent("file", entry, path, None), fd
        return TreeEvent("file", entry, path, io.FileIO(fd, "rb", closefd=False)), fd
    except BaseException as exc:
        if fd is not None and not (stack and stack[-1].fd == fd):
            os.close(fd)
        if isinstance(exc, OSError) and exc.filename is None:
            raise type(exc)(exc.errno, exc.strerror, os.fsdecode(parent.path + b"/" + name)) from None
        raise
