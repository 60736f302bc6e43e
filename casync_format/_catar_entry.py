"""casync's catar entry model and the encoding of one object's records.

This module owns :class:`Entry`, the metadata of one filesystem object as a
catar carries it (used by the encoder, the decoder, untar, tar streams and
mtree alike), the feature-flag rules (:func:`normalize_feature_flags`,
casync's ``ca_feature_flags_normalize``) and the one ENTRY record layout
(:data:`ENTRY_RECORD`) with its encoder (:func:`encode_entry`: ENTRY,
metadata records, PAYLOAD header / SYMLINK / DEVICE) and the reduction it
applies (:func:`archived_entry`). :mod:`casync_format.catar` re-exports the
public names; :mod:`casync_format.catar_read` decodes ENTRY records with
:func:`unpack_entry_record`.
"""

from __future__ import annotations

import functools
import os
import stat
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .constants import (
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_EXCLUDE_NODUMP,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_WITH_2SEC_TIME,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_CHATTR,
    CA_FORMAT_WITH_DEVICE_NODES,
    CA_FORMAT_WITH_FAT_ATTRS,
    CA_FORMAT_WITH_FCAPS,
    CA_FORMAT_WITH_FIFOS,
    CA_FORMAT_WITH_FLAG_APPEND,
    CA_FORMAT_WITH_FLAG_COMPR,
    CA_FORMAT_WITH_FLAG_DIRSYNC,
    CA_FORMAT_WITH_FLAG_IMMUTABLE,
    CA_FORMAT_WITH_FLAG_NOATIME,
    CA_FORMAT_WITH_FLAG_NOCOMP,
    CA_FORMAT_WITH_FLAG_NOCOW,
    CA_FORMAT_WITH_FLAG_NODUMP,
    CA_FORMAT_WITH_FLAG_PROJINHERIT,
    CA_FORMAT_WITH_FLAG_SYNC,
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
)
from .errors import FormatError, ParameterError

__all__ = [
    "Entry",
    "EntryEncoder",
    "ENTRY_RECORD",
    "CHATTR_FLAGS",
    "KIND_FLAGS",
    "archived_entry",
    "child_consts",
    "encode_entry",
    "encode_entry_general",
    "encoder_for",
    "flags_from_chattr",
    "normalize_feature_flags",
    "time_granularity_ns",
    "unpack_entry_record",
    "xattr_name_stored",
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

_SYMLINK_MAX = 4095  # PATH_MAX less the NUL
_UID_FLAGS = CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS
_U64 = 0xFFFFFFFFFFFFFFFF

_HEADER = struct.Struct("<QQ")
ENTRY_RECORD = struct.Struct("<8Q")
"""casync's one ENTRY layout: le64 size (64), type, feature flags, mode, flags, uid, gid, mtime (ns)."""
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
    return encoder_for(feature_flags).encode(entry)


def encode_entry_general(entry: Entry, flags: int) -> bytes:
    """:func:`encode_entry` spelled out step by step (the reference for :class:`EntryEncoder`)."""
    mode = entry.mode
    kind = stat.S_IFMT(mode)
    _check_kind(mode, flags)
    granularity = time_granularity_ns(flags)
    mtime = 0 if granularity is None else (entry.mtime_ns & _U64) // granularity * granularity
    head = ENTRY_RECORD.pack(
        ENTRY_RECORD.size, CA_FORMAT_ENTRY, flags, _fixup_mode(mode, flags), _entry_flags(entry, flags, kind),
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


class EntryEncoder:
    """:func:`encode_entry` for one normalized feature set, its per-flag decisions made once.

    The common objects (no metadata records, owners in range, a kind the
    flags allow, permissions kept) take a short path; anything else goes
    through :func:`encode_entry_general`, which raises the errors. Both give the
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
            return encode_entry_general(entry, self.flags)
        if self.owners:
            if not (0 <= uid < 0xFFFF or 0xFFFF < uid < 0xFFFFFFFF) or not (
                0 <= gid < 0xFFFF or 0xFFFF < gid < 0xFFFFFFFF
            ):
                return encode_entry_general(entry, self.flags)
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
                ENTRY_RECORD.size, CA_FORMAT_ENTRY, self.flags, mode & 0o177777, entry.flags & self.reg_flags,
                uid, gid, mtime, _HEADER.size + size, CA_FORMAT_PAYLOAD,
            )
        if kind == stat.S_IFDIR:
            extra, mode = entry.flags & self.dir_flags, mode & 0o177777
        else:
            extra = 0
            mode = stat.S_IFLNK | 0o777 if kind == stat.S_IFLNK else mode & 0o177777
        head = ENTRY_RECORD.pack(ENTRY_RECORD.size, CA_FORMAT_ENTRY, self.flags, mode, extra, uid, gid, mtime)
        if kind == stat.S_IFDIR:
            return head
        return head + _tail_record(entry, kind)


@functools.lru_cache(maxsize=64)
def encoder_for(flags: int) -> EntryEncoder:
    return EntryEncoder(flags)


def child_consts(encoder: EntryEncoder) -> tuple[int, int, int, int, bool] | None:
    """What the extension's ``encode_child`` needs to know of a feature set (None: it cannot take it)."""
    if not encoder.simple:
        return None
    return (encoder.flags, encoder.granularity, encoder.reg_flags, encoder.dir_flags, encoder.owners)


unpack_entry_record = ENTRY_RECORD.unpack_from
"""``(size, type, feature flags, mode, flags, uid, gid, mtime)`` of the ENTRY record at
``buffer[offset:]`` (``unpack_entry_record(buffer, offset=0)``); the caller checks the values."""


def archived_entry(entry: Entry, feature_flags: int) -> Entry:
    """``entry`` with mode, flags, owner and mtime as its ENTRY record stores them.

    ``feature_flags`` must be normalized. The values are what a decoder of the
    archive reads back (time granularity, permission bits, owners, the
    chattr/FAT bits the set keeps); an object the set cannot carry raises
    :class:`FormatError` as :func:`encode_entry` does.
    """
    _, _, _, mode, flags, uid, gid, mtime = unpack_entry_record(encode_entry(entry, feature_flags))
    return replace(entry, mode=mode, flags=flags, uid=uid, gid=gid, mtime_ns=mtime)
