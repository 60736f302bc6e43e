"""casync's catar archive format: the shared :class:`Entry` model and the streaming encoder.

A catar is a depth-first serialization of a directory tree. Each object is an
ENTRY record (feature flags, mode, chattr/FAT flags, uid, gid, mtime in ns)
followed by its optional USER, GROUP, XATTR, ACL, SELINUX, FCAPS and
QUOTA_PROJID records and then a PAYLOAD (regular file), SYMLINK or DEVICE
record; a directory continues with ``FILENAME`` + child serialization for
every child in ``strcmp`` order of the names and ends with a GOODBYE record
(see :mod:`._catar_goodbye`). Every record starts with ``le64 size, le64
type``; strings end with a NUL. This module owns :class:`Entry` (used by the
decoder, untar, tar streams and mtree too), the feature-flag rules
(:func:`normalize_feature_flags`, casync's ``ca_feature_flags_normalize``),
the encoding of one object's records (:func:`encode_entry`) and
:class:`CatarWriter`, a push-style encoder whose output is byte-identical to
``casync make``'s for the same tree and flags.

The encoder takes raw values and reduces them as casync does for the
declared feature set: mtime to the time granularity (0 without a time flag;
negative times wrap to uint64 as in C); mode to ``S_IFMT|07777`` with
PERMISSIONS/ACL, else 0666/0777 (READ_ONLY: 0444/0555 when no write bit),
symlinks always 0777; uid/gid to 0 without a uid flag (65535 and 2^32-1
are refused, as casync refuses them); ``flags`` masked to the declared
chattr/FAT/subvolume bits, on directories and regular files only; USER/GROUP
records only with USER_NAMES; XATTR records only with XATTRS, only for valid
``user.``/``trusted.`` names, sorted by name, never on symlinks; ``acl`` (the
ACL records exactly as they appear in an archive, headers included,
concatenated) only with ACL; SELINUX only with SELINUX; FCAPS only with
FCAPS and on regular files; QUOTA_PROJID only with QUOTA_PROJID when non-zero.

API (stable)::

    Entry(name, mode, uid=0, gid=0, mtime_ns=0, flags=0, user=None, group=None,
          xattrs=[], size=0, target=None, rdev=0, selinux=None, fcaps=None,
          quota_projid=None, acl=None)
    normalize_feature_flags(flags: int) -> int
    encode_entry(entry: Entry, feature_flags: int) -> bytes
    CatarWriter(write: Callable[[bytes], object], feature_flags: int)
        .begin(root: Entry) -> None          # root directory (name ignored)
        .enter(entry: Entry) -> None         # open a subdirectory of the current directory
        .add(entry: Entry, payload: BinaryIO | None = None) -> None   # any non-directory
        .leave() -> None                     # close the current subdirectory
        .finish() -> None                    # close the root; the archive is complete
        .offset: int                         # bytes written so far
        .feature_flags: int                  # the normalized flags in every ENTRY
    DESYNC_TAR_FLAGS = 0xb000000010001f22, CA_FORMAT_DEFAULT = 0xb0000001ffeffe26
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

from . import _accel
from ._catar_goodbye import encode_goodbye, goodbye_hash
from .constants import (  # noqa: F401 (feature flags re-exported)
    CA_FORMAT_DEFAULT,
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_EXCLUDE_FILE,
    CA_FORMAT_EXCLUDE_NODUMP,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SHA512_256,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_WITH_2SEC_TIME,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_BEST,
    CA_FORMAT_WITH_CHATTR,
    CA_FORMAT_WITH_DEVICE_NODES,
    CA_FORMAT_WITH_FAT_ATTRS,
    CA_FORMAT_WITH_FCAPS,
    CA_FORMAT_WITH_FIFOS,
    CA_FORMAT_WITH_FLAG_APPEND,
    CA_FORMAT_WITH_FLAG_ARCHIVE,
    CA_FORMAT_WITH_FLAG_COMPR,
    CA_FORMAT_WITH_FLAG_DIRSYNC,
    CA_FORMAT_WITH_FLAG_HIDDEN,
    CA_FORMAT_WITH_FLAG_IMMUTABLE,
    CA_FORMAT_WITH_FLAG_NOATIME,
    CA_FORMAT_WITH_FLAG_NOCOMP,
    CA_FORMAT_WITH_FLAG_NOCOW,
    CA_FORMAT_WITH_FLAG_NODUMP,
    CA_FORMAT_WITH_FLAG_PROJINHERIT,
    CA_FORMAT_WITH_FLAG_SYNC,
    CA_FORMAT_WITH_FLAG_SYSTEM,
    CA_FORMAT_WITH_NSEC_TIME,
    CA_FORMAT_WITH_PERMISSIONS,
    CA_FORMAT_WITH_QUOTA_PROJID,
    CA_FORMAT_WITH_READ_ONLY,
    CA_FORMAT_WITH_SEC_TIME,
    CA_FORMAT_WITH_SELINUX,
    CA_FORMAT_WITH_SOCKETS,
    CA_FORMAT_WITH_SUBVOLUME,
    CA_FORMAT_WITH_SUBVOLUME_RO,
    CA_FORMAT_WITH_SYMLINKS,
    CA_FORMAT_WITH_USEC_TIME,
    CA_FORMAT_WITH_USER_NAMES,
    CA_FORMAT_WITH_XATTRS,
    CA_FORMAT_XATTR,
    DESYNC_TAR_FLAGS,
)
from .errors import FormatError, ParameterError

__all__ = [
    "Entry",
    "CatarWriter",
    "encode_entry",
    "normalize_feature_flags",
    "time_granularity_ns",
    "flags_from_chattr",
    "xattr_name_stored",
    "DESYNC_TAR_FLAGS",
    "NAME_MAX",
    "CHATTR_FLAGS",
    "KIND_FLAGS",
    "CA_FORMAT_WITH_16BIT_UIDS",
    "CA_FORMAT_WITH_USER_NAMES",
    "CA_FORMAT_WITH_SEC_TIME",
    "CA_FORMAT_WITH_USEC_TIME",
    "CA_FORMAT_WITH_2SEC_TIME",
    "CA_FORMAT_WITH_READ_ONLY",
    "CA_FORMAT_WITH_FLAG_HIDDEN",
    "CA_FORMAT_WITH_FLAG_SYSTEM",
    "CA_FORMAT_WITH_FLAG_ARCHIVE",
    "CA_FORMAT_WITH_FLAG_APPEND",
    "CA_FORMAT_WITH_FLAG_NOATIME",
    "CA_FORMAT_WITH_FLAG_COMPR",
    "CA_FORMAT_WITH_FLAG_NOCOW",
    "CA_FORMAT_WITH_FLAG_NODUMP",
    "CA_FORMAT_WITH_FLAG_DIRSYNC",
    "CA_FORMAT_WITH_FLAG_IMMUTABLE",
    "CA_FORMAT_WITH_FLAG_SYNC",
    "CA_FORMAT_WITH_FLAG_NOCOMP",
    "CA_FORMAT_WITH_FLAG_PROJINHERIT",
    "CA_FORMAT_WITH_SUBVOLUME",
    "CA_FORMAT_WITH_SUBVOLUME_RO",
    "CA_FORMAT_WITH_ACL",
    "CA_FORMAT_WITH_SELINUX",
    "CA_FORMAT_WITH_FCAPS",
    "CA_FORMAT_WITH_QUOTA_PROJID",
    "CA_FORMAT_WITH_CHATTR",
    "CA_FORMAT_WITH_FAT_ATTRS",
    "CA_FORMAT_WITH_BEST",
    "CA_FORMAT_DEFAULT",
]

# Linux chattr bits (FS_*_FL) and the feature flag casync records for each.
CHATTR_FLAGS: tuple[tuple[int, int], ...] = (
    (0x00000020, CA_FORMAT_WITH_FLAG_APPEND),
    (0x00000080, CA_FORMAT_WITH_FLAG_NOATIME),
    (0x00000004, CA_FORMAT_WITH_FLAG_COMPR),
    (0x00800000, CA_FORMAT_WITH_FLAG_NOCOW),
    (0x00000040, CA_FORMAT_WITH_FLAG_NODUMP),
    (0x00010000, CA_FORMAT_WITH_FLAG_DIRSYNC),
    (0x00000010, CA_FORMAT_WITH_FLAG_IMMUTABLE),
    (0x00000008, CA_FORMAT_WITH_FLAG_SYNC),
    (0x00000400, CA_FORMAT_WITH_FLAG_NOCOMP),
    (0x20000000, CA_FORMAT_WITH_FLAG_PROJINHERIT),
)

NAME_MAX = 255  # longest file name casync (Linux) accepts, in bytes
_SYMLINK_MAX = 4095  # PATH_MAX less the NUL
_UID_FLAGS = CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS
_U64 = 0xFFFFFFFFFFFFFFFF
_BLOCK = 1 << 20  # payload bytes read per call
_SMALL = 64 * 1024  # payloads up to this size go out in one piece with their records

_HEADER = struct.Struct("<QQ")
_ENTRY = struct.Struct("<QQQQQQQQ")
_DEVICE = struct.Struct("<QQQQ")
_QUOTA = struct.Struct("<QQQ")
_ENTRY_PAYLOAD = struct.Struct("<QQQQQQQQQQ")  # ENTRY + a regular file's PAYLOAD header


@dataclass
class Entry:
    """One filesystem object in a catar archive (metadata only)."""

    name: bytes  # last path component; b"" for the archive root
    mode: int  # full st_mode: type bits | permission bits (incl. suid/sgid/sticky)
    uid: int = 0
    gid: int = 0
    mtime_ns: int = 0  # nanoseconds since the epoch
    flags: int = 0  # chattr/FAT flags as casync records them (CA_FORMAT_WITH_FLAG_*), 0 if none
    user: bytes | None = None  # user name record, when the feature set carries names
    group: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # (name, value), casync's order
    size: int = 0  # payload size (regular files)
    target: bytes | None = None  # symlink target
    rdev: int = 0  # device number (os.makedev) for block/char devices
    # Items read but not restored by untar (kept so mtree/tar conversions can see them):
    selinux: bytes | None = None
    fcaps: bytes | None = None
    quota_projid: int | None = None
    acl: bytes | None = None  # raw ACL records, opaque


def normalize_feature_flags(flags: int) -> int:
    """casync's normalization of a feature set: drop redundant bits, add implied ones.

    Raises :class:`ParameterError` for bits casync does not know. The result is
    what casync writes into every ENTRY record (and a caidx header).
    """
    if flags < 0 or flags & ~CA_FORMAT_FEATURE_FLAGS_MAX:
        raise ParameterError(f"unsupported feature flags {flags:#x}")
    if flags & CA_FORMAT_WITH_ACL and not flags & (_UID_FLAGS | CA_FORMAT_WITH_USER_NAMES):
        flags |= CA_FORMAT_WITH_32BIT_UIDS | CA_FORMAT_WITH_USER_NAMES
    if flags & CA_FORMAT_WITH_32BIT_UIDS:
        flags &= ~CA_FORMAT_WITH_16BIT_UIDS
    if flags & CA_FORMAT_WITH_NSEC_TIME:
        flags &= ~(CA_FORMAT_WITH_USEC_TIME | CA_FORMAT_WITH_SEC_TIME | CA_FORMAT_WITH_2SEC_TIME)
    if flags & CA_FORMAT_WITH_USEC_TIME:
        flags &= ~(CA_FORMAT_WITH_SEC_TIME | CA_FORMAT_WITH_2SEC_TIME)
    if flags & CA_FORMAT_WITH_SEC_TIME:
        flags &= ~CA_FORMAT_WITH_2SEC_TIME
    if flags & CA_FORMAT_WITH_ACL:
        flags &= ~(CA_FORMAT_WITH_PERMISSIONS | CA_FORMAT_WITH_READ_ONLY)
    if flags & CA_FORMAT_WITH_PERMISSIONS:
        flags &= ~CA_FORMAT_WITH_READ_ONLY
    if flags & CA_FORMAT_EXCLUDE_NODUMP:
        flags &= ~CA_FORMAT_WITH_FLAG_NODUMP
    if flags & CA_FORMAT_WITH_SUBVOLUME_RO:
        flags |= CA_FORMAT_WITH_SUBVOLUME
    return flags


@functools.lru_cache(maxsize=64)
def time_granularity_ns(flags: int) -> int | None:
    """The mtime resolution the feature set keeps, in ns (None: no times, all zero)."""
    for bit, granularity in (
        (CA_FORMAT_WITH_NSEC_TIME, 1),
        (CA_FORMAT_WITH_USEC_TIME, 1000),
        (CA_FORMAT_WITH_SEC_TIME, 1_000_000_000),
        (CA_FORMAT_WITH_2SEC_TIME, 2_000_000_000),
    ):
        if flags & bit:
            return granularity
    return None


def flags_from_chattr(chattr: int) -> int:
    """The CA_FORMAT_WITH_FLAG_* bits for Linux chattr bits (``FS_IOC_GETFLAGS``)."""
    result = 0
    for fs_bit, ca_bit in CHATTR_FLAGS:
        if chattr & fs_bit:
            result |= ca_bit
    return result


def xattr_name_stored(name: bytes) -> bool:
    """Whether casync keeps an xattr of this name in XATTR records (valid ``user.``/``trusted.`` names)."""
    dot = name.find(b".")
    if dot <= 0 or dot + 1 >= len(name) or len(name) > 255 or b"\0" in name:
        return False
    return name.startswith((b"user.", b"trusted."))


def _record(kind: int, body: bytes) -> bytes:
    """One record: header (size including the header, type) and body."""
    return _HEADER.pack(_HEADER.size + len(body), kind) + body


def _cstring(kind: int, value: bytes, what: str, limit: int) -> bytes:
    if b"\0" in value or len(value) > limit:
        raise FormatError(f"{what} {value[:64]!r} contains NUL or exceeds {limit} bytes")
    return _record(kind, value + b"\0")


def _fixup_mode(mode: int, flags: int) -> int:
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return stat.S_IFLNK | 0o777
    if flags & (CA_FORMAT_WITH_PERMISSIONS | CA_FORMAT_WITH_ACL):
        return kind | (mode & 0o7777)
    directory = kind == stat.S_IFDIR
    if flags & CA_FORMAT_WITH_READ_ONLY and not mode & 0o222:
        return kind | (0o555 if directory else 0o444)
    return kind | (0o777 if directory else 0o666)


def _owner(value: int, flags: int, what: str) -> int:
    if not flags & _UID_FLAGS:
        return 0
    limit = 0xFFFF if flags & CA_FORMAT_WITH_16BIT_UIDS else 0xFFFFFFFF
    if value < 0 or value > limit or value in (0xFFFF, 0xFFFFFFFF):
        raise FormatError(f"{what} {value} cannot be stored with feature flags {flags:#x}")
    return value


# The feature flag each non-directory, non-regular file type needs.
KIND_FLAGS = {
    stat.S_IFLNK: CA_FORMAT_WITH_SYMLINKS,
    stat.S_IFBLK: CA_FORMAT_WITH_DEVICE_NODES,
    stat.S_IFCHR: CA_FORMAT_WITH_DEVICE_NODES,
    stat.S_IFIFO: CA_FORMAT_WITH_FIFOS,
    stat.S_IFSOCK: CA_FORMAT_WITH_SOCKETS,
}


def _check_kind(mode: int, flags: int) -> None:
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFREG or kind == stat.S_IFDIR:
        return
    if kind not in KIND_FLAGS:
        raise FormatError(f"unknown file type in mode {mode:#o}")
    if not flags & KIND_FLAGS[kind]:
        raise FormatError(f"file type of mode {mode:#o} is not allowed by feature flags {flags:#x}")


def _meta_records(entry: Entry, flags: int, kind: int) -> Iterable[bytes]:
    """USER, GROUP, XATTR, ACL, SELINUX, FCAPS and QUOTA_PROJID records, in casync's order."""
    if flags & CA_FORMAT_WITH_USER_NAMES:
        if entry.user is not None:
            yield _cstring(CA_FORMAT_USER, entry.user, "user name", 255)
        if entry.group is not None:
            yield _cstring(CA_FORMAT_GROUP, entry.group, "group name", 255)
    if flags & CA_FORMAT_WITH_XATTRS and kind != stat.S_IFLNK and entry.xattrs:
        kept = sorted((name, value) for name, value in entry.xattrs if xattr_name_stored(name))
        previous = None
        for name, value in kept:
            if name == previous:
                raise FormatError(f"duplicate xattr {name!r}")
            previous = name
            yield _record(CA_FORMAT_XATTR, name + b"\0" + value)
    if flags & CA_FORMAT_WITH_ACL and entry.acl:
        yield entry.acl
    if flags & CA_FORMAT_WITH_SELINUX and entry.selinux is not None:
        yield _cstring(CA_FORMAT_SELINUX, entry.selinux, "SELinux label", 4095)
    if flags & CA_FORMAT_WITH_FCAPS and entry.fcaps is not None and kind == stat.S_IFREG:
        yield _record(CA_FORMAT_FCAPS, entry.fcaps)
    if flags & CA_FORMAT_WITH_QUOTA_PROJID and entry.quota_projid and kind in (stat.S_IFDIR, stat.S_IFREG):
        yield _QUOTA.pack(_QUOTA.size, CA_FORMAT_QUOTA_PROJID, entry.quota_projid)


def _entry_flags(entry: Entry, flags: int, kind: int) -> int:
    if kind not in (stat.S_IFDIR, stat.S_IFREG):
        return 0
    allowed = CA_FORMAT_WITH_CHATTR | CA_FORMAT_WITH_FAT_ATTRS
    if kind == stat.S_IFDIR:
        allowed |= CA_FORMAT_WITH_SUBVOLUME | CA_FORMAT_WITH_SUBVOLUME_RO
    return entry.flags & flags & allowed


def encode_entry(entry: Entry, feature_flags: int) -> bytes:
    """The records of one object, from ENTRY to its PAYLOAD header / SYMLINK / DEVICE.

    ``feature_flags`` must be normalized (:func:`normalize_feature_flags`).
    The values are reduced as casync reduces them for that feature set (time
    granularity, permission bits, owners, the xattrs it keeps, sorted by
    name), so any source yields casync's bytes. A regular file's payload bytes
    (``entry.size`` of them) must follow. Raises :class:`FormatError` for an
    object the feature set cannot carry.
    """
    return _encoder(feature_flags).encode(entry)


def _encode_general(entry: Entry, flags: int) -> bytes:
    """:func:`encode_entry` spelled out step by step (the reference for :class:`_EntryEncoder`)."""
    mode = entry.mode
    kind = stat.S_IFMT(mode)
    _check_kind(mode, flags)
    granularity = time_granularity_ns(flags)
    mtime = 0 if granularity is None else (entry.mtime_ns & _U64) // granularity * granularity
    head = _ENTRY.pack(
        _ENTRY.size, CA_FORMAT_ENTRY, flags, _fixup_mode(mode, flags), _entry_flags(entry, flags, kind),
        _owner(entry.uid, flags, "uid"), _owner(entry.gid, flags, "gid"), mtime,
    )
    parts = [head]
    if _has_meta(entry):
        parts.extend(_meta_records(entry, flags, kind))
    parts.append(_tail_record(entry, kind))
    return b"".join(parts)


def _has_meta(entry: Entry) -> bool:
    return bool(
        entry.xattrs or entry.user or entry.group or entry.acl or entry.selinux is not None
        or entry.fcaps is not None or entry.quota_projid
    )


def _tail_record(entry: Entry, kind: int) -> bytes:
    """The PAYLOAD header, SYMLINK or DEVICE record closing an object's records (else b"")."""
    if kind == stat.S_IFREG:
        if entry.size < 0:
            raise FormatError(f"negative payload size {entry.size}")
        return _HEADER.pack(_HEADER.size + entry.size, CA_FORMAT_PAYLOAD)
    if kind == stat.S_IFLNK:
        if not entry.target:
            raise FormatError("symlink without a target")
        return _cstring(CA_FORMAT_SYMLINK, entry.target, "symlink target", _SYMLINK_MAX)
    if kind in (stat.S_IFBLK, stat.S_IFCHR):
        return _DEVICE.pack(_DEVICE.size, CA_FORMAT_DEVICE, os.major(entry.rdev), os.minor(entry.rdev))
    return b""


class _EntryEncoder:
    """:func:`encode_entry` for one normalized feature set, its per-flag decisions made once.

    The common objects (no metadata records, owners in range, a kind the
    flags allow, permissions kept) take a short path; anything else goes
    through :func:`_encode_general`, which raises the errors. Both give the
    same bytes.
    """

    __slots__ = ("dir_flags", "flags", "granularity", "kinds", "owners", "reg_flags", "simple")

    def __init__(self, flags: int) -> None:
        self.flags = flags
        granularity = time_granularity_ns(flags)
        self.granularity = 0 if granularity is None else granularity
        self.owners = bool(flags & _UID_FLAGS) and not flags & CA_FORMAT_WITH_16BIT_UIDS  # full 32-bit range
        self.simple = bool(flags & (CA_FORMAT_WITH_PERMISSIONS | CA_FORMAT_WITH_ACL)) and (
            self.owners or not flags & _UID_FLAGS
        )
        self.kinds = frozenset(
            [stat.S_IFREG, stat.S_IFDIR] + [kind for kind, need in KIND_FLAGS.items() if flags & need]
        )
        chattr = flags & (CA_FORMAT_WITH_CHATTR | CA_FORMAT_WITH_FAT_ATTRS)
        self.reg_flags = chattr
        self.dir_flags = chattr | (flags & (CA_FORMAT_WITH_SUBVOLUME | CA_FORMAT_WITH_SUBVOLUME_RO))

    def encode(self, entry: Entry) -> bytes:
        """The records of ``entry`` (see :func:`encode_entry`)."""
        mode = entry.mode
        kind = mode & 0o170000
        uid, gid = entry.uid, entry.gid
        if not self.simple or kind not in self.kinds or _has_meta(entry):
            return _encode_general(entry, self.flags)
        if self.owners:
            if not (0 <= uid < 0xFFFF or 0xFFFF < uid < 0xFFFFFFFF) or not (
                0 <= gid < 0xFFFF or 0xFFFF < gid < 0xFFFFFFFF
            ):
                return _encode_general(entry, self.flags)
        else:
            uid = gid = 0
        granularity = self.granularity
        if granularity == 1:
            mtime = entry.mtime_ns & _U64
        elif granularity:
            mtime = (entry.mtime_ns & _U64) // granularity * granularity
        else:
            mtime = 0
        if kind == stat.S_IFREG:
            size = entry.size
            if size < 0:
                raise FormatError(f"negative payload size {size}")
            return _ENTRY_PAYLOAD.pack(
                _ENTRY.size, CA_FORMAT_ENTRY, self.flags, mode & 0o177777, entry.flags & self.reg_flags,
                uid, gid, mtime, _HEADER.size + size, CA_FORMAT_PAYLOAD,
            )
        if kind == stat.S_IFDIR:
            extra, mode = entry.flags & self.dir_flags, mode & 0o177777
        else:
            extra = 0
            mode = stat.S_IFLNK | 0o777 if kind == stat.S_IFLNK else mode & 0o177777
        head = _ENTRY.pack(_ENTRY.size, CA_FORMAT_ENTRY, self.flags, mode, extra, uid, gid, mtime)
        if kind == stat.S_IFDIR:
            return head
        return head + _tail_record(entry, kind)


@functools.lru_cache(maxsize=64)
def _encoder(flags: int) -> _EntryEncoder:
    return _EntryEncoder(flags)


# The extension's short path of CatarWriter._child, or None (not built, or PYCASYNC_PUREPYTHON=1).
_ENCODE_CHILD_C: Callable[[Entry, tuple[int, int, int, int, bool]], bytes | None] | None = _accel.c_function(
    "catar-entry"
)


def _child_consts(encoder: _EntryEncoder) -> tuple[int, int, int, int, bool] | None:
    """What the C short path needs to know of a feature set (None: it cannot take this set)."""
    if not encoder.simple:
        return None
    return (encoder.flags, encoder.granularity, encoder.reg_flags, encoder.dir_flags, encoder.owners)


def _check_name(name: bytes) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name:
        raise FormatError(f"invalid file name {name!r}")
    if len(name) > NAME_MAX:
        raise FormatError(f"file name longer than {NAME_MAX} bytes: {name[:64]!r}...")


class _OpenDir:
    """A directory whose children are being written: what its GOODBYE record needs."""

    __slots__ = ("children", "entry_offset", "last_name", "name", "start")

    def __init__(self, name: bytes, entry_offset: int, start: int) -> None:
        self.name = name
        self.entry_offset = entry_offset  # archive offset of its ENTRY record
        self.start = start  # archive offset of its FILENAME record (root: 0)
        self.children: list[tuple[int, int, int]] = []  # (name hash, start, end) per child
        self.last_name = b""  # every valid name sorts after it


class CatarWriter:
    """Streaming catar encoder; push the tree depth-first, children in name order.

    ``write`` receives the archive in pieces and must consume each fully (a
    buffered file's ``write``, a hash's ``update``, a queue's ``put``).
    ``feature_flags`` is normalized as casync does and stored in every ENTRY.
    Call :meth:`begin` with the root directory, then for each child of the
    current directory, in strictly increasing byte order of names (casync's
    ``strcmp`` order), :meth:`add` (non-directories) or :meth:`enter` … :meth:`leave`
    (directories), and finally :meth:`finish`. Misuse (wrong order, bad
    names, a payload of the wrong size) raises :class:`FormatError`. Memory
    is one GOODBYE item (three ints) per child of each open directory.
    """

    def __init__(self, write: Callable[[bytes], object], feature_flags: int) -> None:
        self._write = write
        self.feature_flags = normalize_feature_flags(feature_flags)
        self.offset = 0
        self._stack: list[_OpenDir] = []
        self._state = "new"
        encoder = _encoder(self.feature_flags)
        self._encode = encoder.encode
        self._child_consts = _child_consts(encoder)
        self._child_c = _ENCODE_CHILD_C if self._child_consts is not None else None

    def _emit(self, data: bytes) -> None:
        self._write(data)
        self.offset += len(data)

    def _path(self, name: bytes = b"") -> str:
        parts = [d.name for d in self._stack[1:]]
        if name:
            parts.append(name)
        return os.fsdecode(b"/".join(parts)) or "."

    def begin(self, root: Entry) -> None:
        """Write the root directory's ENTRY; ``root.name`` is ignored."""
        if self._state != "new":
            raise FormatError("catar writer: begin() called twice")
        if not stat.S_ISDIR(root.mode):
            raise FormatError(f"catar root must be a directory (mode {root.mode:#o})")
        self._emit(self._encode(root))
        self._stack.append(_OpenDir(b"", 0, 0))
        self._state = "open"

    def _child(self, entry: Entry) -> tuple[_OpenDir, bytes]:
        """Check ``entry`` as the next child of the current directory; its FILENAME + ENTRY records."""
        if self._state != "open":
            raise FormatError(f"catar writer: no open directory for {entry.name!r}")
        parent = self._stack[-1]
        name = entry.name
        if not name or len(name) > NAME_MAX or b"/" in name or b"\0" in name or name == b"." or name == b"..":
            _check_name(name)
        if name <= parent.last_name:
            raise FormatError(
                f"catar writer: {self._path(name)!r} is out of order or a duplicate "
                f"(children must be sorted by name bytes)"
            )
        parent.last_name = name
        if self._child_c is not None:
            records = self._child_c(entry, self._child_consts)
            if records is not None:
                return parent, records
        filename = _HEADER.pack(_HEADER.size + len(name) + 1, CA_FORMAT_FILENAME)
        return parent, b"".join((filename, name, b"\0", self._encode(entry)))

    def enter(self, entry: Entry) -> None:
        """Begin the subdirectory ``entry`` of the current directory."""
        if not stat.S_ISDIR(entry.mode):
            raise FormatError(f"catar writer: enter() needs a directory, {entry.name!r} is not one")
        start = self.offset
        _parent, records = self._child(entry)
        self._emit(records)
        entry_offset = start + _HEADER.size + len(entry.name) + 1
        self._stack.append(_OpenDir(entry.name, entry_offset, start))

    def add(self, entry: Entry, payload: BinaryIO | None = None) -> None:
        """Add the non-directory ``entry``; a regular file's content is read from ``payload``.

        Exactly ``entry.size`` bytes are read (in bounded blocks); fewer is a
        :class:`FormatError`, anything past them is not read.
        """
        kind = entry.mode & 0o170000
        if kind == stat.S_IFDIR:
            raise FormatError(f"catar writer: {entry.name!r} is a directory: use enter()/leave()")
        start = self.offset
        parent, records = self._child(entry)
        size = entry.size if kind == stat.S_IFREG else 0
        if 0 < size <= _SMALL:  # one write for the records and a small file's content
            records += self._read_payload(entry, payload, size)
            size = 0
        self._write(records)
        self.offset = end = start + len(records)
        if size:
            self._copy_payload(entry, payload)
            end = self.offset
        parent.children.append((goodbye_hash(entry.name), start, end))

    def _read_payload(self, entry: Entry, payload: BinaryIO | None, size: int) -> bytes:
        if payload is None:
            raise FormatError(f"catar writer: no payload for {self._path(entry.name)!r} ({size} bytes)")
        data = payload.read(size)
        while len(data) < size:  # a short read that is not the end yet
            more = payload.read(size - len(data))
            if not more:
                self._payload_ended(entry, size - len(data))
            data += more
        if len(data) > size:
            raise FormatError(f"catar writer: payload of {self._path(entry.name)!r} is too long")
        return data

    def _payload_ended(self, entry: Entry, missing: int) -> None:
        """Raise the error for a payload that ended ``missing`` bytes before ``entry.size``."""
        where = self._path(entry.name)
        raise FormatError(f"catar writer: payload of {where!r} ended {missing} bytes early")

    def _copy_payload(self, entry: Entry, payload: BinaryIO | None, left: int | None = None) -> None:
        """Copy the last ``left`` (default: all) of ``entry.size`` payload bytes to the output.

        A subclass may override this to copy inside the kernel; it must emit
        exactly ``left`` bytes (advancing :attr:`offset`) or raise like this one.
        """
        left = entry.size if left is None else left
        while left:
            block = self._read_payload(entry, payload, min(left, _BLOCK))
            self._emit(block)
            left -= len(block)

    def _close_dir(self) -> _OpenDir:
        directory = self._stack.pop()
        self._emit(encode_goodbye(directory.children, self.offset, directory.entry_offset))
        return directory

    def leave(self) -> None:
        """End the current subdirectory (writes its GOODBYE record)."""
        if self._state != "open" or len(self._stack) < 2:
            raise FormatError("catar writer: leave() without a matching enter()")
        directory = self._close_dir()
        self._stack[-1].children.append((goodbye_hash(directory.name), directory.start, self.offset))

    def finish(self) -> None:
        """End the root directory; the archive is complete."""
        if self._state != "open" or len(self._stack) != 1:
            raise FormatError("catar writer: finish() with directories still open or before begin()")
        self._close_dir()
        self._state = "done"
