"""GNU tar headers as desync writes them, so ``untar --output-format gnu-tar`` matches desync byte for byte.

desync (Go's ``archive/tar`` in GNU format) differs from Python's
:mod:`tarfile` in ways a byte comparison sees: directory names carry no
trailing slash; the mode field holds Go's ``os.FileMode`` (the type bits of a
directory, symlink or device above the permissions, so it is written in GNU's
base-256 form), and here also the Unix set-id and sticky bits (desync keeps
those only as Go bits, which tar readers ignore); user and group names are
left out unless the archive has them; numbers that do not fit in octal are
base-256; a name or link target over 100 bytes is a ``././@LongLink`` record
(types ``L`` and ``K``); and the archive ends with two zero blocks, not
padded to a 10 KiB record. An entry with extended attributes gets a PAX
``x`` header of ``SCHILY.xattr.*`` records before its own (as desync does
when Go picks PAX), so no attribute is dropped silently.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, BinaryIO

from casync_format.errors import FormatError

if TYPE_CHECKING:
    from casync_format._catar_entry import Entry
    from casync_format.catar_read import Item

__all__ = ["BLOCK", "END", "GnuMember", "go_file_mode", "member_headers", "member_of", "write_gnu"]

BLOCK = 512
#: The end-of-archive marker: two zero blocks.
END = bytes(2 * BLOCK)
_MAGIC = b"ustar  \0"  # GNU: "ustar " then version " \0"
_PAX_MAGIC = b"ustar\x0000"  # POSIX, for the PAX "x" record
_COPY_BLOCK = 1 << 20
_TYPES = {stat.S_IFREG: b"0", stat.S_IFLNK: b"2", stat.S_IFCHR: b"3", stat.S_IFBLK: b"4",
          stat.S_IFDIR: b"5", stat.S_IFIFO: b"6"}  # fmt: skip
_LONG_NAME = "././@LongLink"

# Go's os.FileMode type bits
_GO_DIR, _GO_SYMLINK, _GO_DEVICE, _GO_PIPE = 1 << 31, 1 << 27, 1 << 26, 1 << 25
_GO_SOCKET, _GO_SETUID, _GO_SETGID, _GO_CHAR, _GO_STICKY = 1 << 24, 1 << 23, 1 << 22, 1 << 21, 1 << 20


def go_file_mode(mode: int) -> int:
    """The mode desync writes for a Unix ``mode``: its Go ``os.FileMode``, Unix set-id bits kept."""
    fm = mode & 0o7777
    kind = stat.S_IFMT(mode)
    fm |= {stat.S_IFBLK: _GO_DEVICE, stat.S_IFCHR: _GO_DEVICE | _GO_CHAR, stat.S_IFDIR: _GO_DIR,
           stat.S_IFIFO: _GO_PIPE, stat.S_IFLNK: _GO_SYMLINK, stat.S_IFSOCK: _GO_SOCKET}.get(kind, 0)
    specials = ((stat.S_ISUID, _GO_SETUID), (stat.S_ISGID, _GO_SETGID), (stat.S_ISVTX, _GO_STICKY))
    for unix_bit, go_bit in specials:
        if mode & unix_bit:
            fm |= go_bit
    return fm


class GnuMember:
    """One tar member's header fields (names as bytes, as the archive holds them)."""

    def __init__(self, name: bytes, typeflag: bytes, mode: int, uid: int, gid: int, mtime: int,
                 size: int = 0, linkname: bytes = b"", uname: bytes = b"", gname: bytes = b"",
                 devmajor: int = 0, devminor: int = 0,
                 xattrs: Sequence[tuple[bytes, bytes]] = ()) -> None:  # fmt: skip
        self.name, self.typeflag, self.mode, self.uid, self.gid = name, typeflag, mode, uid, gid
        self.mtime, self.size, self.linkname, self.uname, self.gname = mtime, size, linkname, uname, gname
        self.devmajor, self.devminor, self.xattrs = devmajor, devminor, xattrs


def _numeric(value: int, width: int, what: str) -> bytes:
    """Octal (digits and a NUL) when it fits, else GNU base-256 (as Go's formatNumeric)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    if -(1 << (8 * (width - 1) - 1)) <= value < 1 << (8 * (width - 1) - 1):
        return b"\x80" + value.to_bytes(width - 1, "big", signed=True)
    raise FormatError(f"{what} {value} does not fit in a tar header")


def _text(value: bytes, width: int, what: str) -> bytes:
    if len(value) > width:
        raise FormatError(f"{what} {value!r} is longer than {width} bytes")
    return value.ljust(width, b"\0")


def _block(m: GnuMember, name: bytes, linkname: bytes, magic: bytes = _MAGIC, devices: bool = True) -> bytes:
    who = m.name.decode("utf-8", "surrogateescape")
    devs = _numeric(m.devmajor, 8, f"{who}: device major") + _numeric(m.devminor, 8, f"{who}: device minor")
    head = b"".join([
        _text(name, 100, "name"), _numeric(m.mode, 8, f"{who}: mode"), _numeric(m.uid, 8, f"{who}: uid"),
        _numeric(m.gid, 8, f"{who}: gid"), _numeric(m.size, 12, f"{who}: size"),
        _numeric(m.mtime, 12, f"{who}: mtime"), b" " * 8, m.typeflag, _text(linkname, 100, "link target"),
        magic, _text(m.uname, 32, "user name"), _text(m.gname, 32, "group name"),
        devs if devices else bytes(16),
    ])  # fmt: skip
    head = head.ljust(BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(head)
    return head[:148] + checksum + head[156:]


def _raw_file(name: bytes, data: bytes, typeflag: bytes, magic: bytes = _MAGIC) -> bytes:
    """A header and data of a GNU or PAX pseudo-member (long name, PAX records), padded."""
    m = GnuMember(name[:100].rstrip(b"/"), typeflag, 0, 0, 0, 0, size=len(data))
    return _block(m, m.name, b"", magic, devices=False) + _padded(data)


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _pax_records(xattrs: Sequence[tuple[bytes, bytes]]) -> bytes:
    out = []
    for key, value in sorted((b"SCHILY.xattr." + name, value) for name, value in xattrs):
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(b"%d" % length) + len(body) != length:
            length += 1
        out.append(b"%d" % length + body)
    return b"".join(out)


def member_headers(m: GnuMember) -> bytes:
    """Everything before the member's data: PAX and long-name records, then its GNU header."""
    parts = []
    if m.xattrs:
        directory, base = os.path.split(m.name)
        pax_name = os.path.join(directory, b"PaxHeaders.0", base)
        parts.append(_raw_file(pax_name, _pax_records(m.xattrs), b"x", _PAX_MAGIC))
    name, linkname = m.name, m.linkname
    if len(name) > 100:
        parts.append(_raw_file(_LONG_NAME.encode(), name + b"\0", b"L"))
        name = name[:100]
    if len(linkname) > 100:
        parts.append(_raw_file(_LONG_NAME.encode(), linkname + b"\0", b"K"))
        linkname = linkname[:100]
    parts.append(_block(m, name, linkname))
    return b"".join(parts)


def member_of(path: bytes, entry: Entry) -> GnuMember | None:
    """The tar member desync writes for a catar entry at ``path`` (None: a socket, which tar cannot hold)."""
    typeflag = _TYPES.get(stat.S_IFMT(entry.mode))
    if typeflag is None:
        return None
    is_dev = typeflag in (b"3", b"4")
    return GnuMember(
        path or b".", typeflag, go_file_mode(entry.mode), entry.uid, entry.gid,
        entry.mtime_ns // 1_000_000_000, size=entry.size if typeflag == b"0" else 0,
        linkname=(entry.target or b"") if typeflag == b"2" else b"",
        uname=entry.user or b"", gname=entry.group or b"",
        devmajor=os.major(entry.rdev) if is_dev else 0, devminor=os.minor(entry.rdev) if is_dev else 0,
        xattrs=entry.xattrs,
    )


def write_gnu(items: Iterable[Item], out: BinaryIO) -> tuple[int, int, int, list[bytes]]:
    """Write decoder ``items`` to ``out`` as desync's GNU tar; (entries, files, payload bytes, skipped paths).

    On an error nothing more is written (no end marker: the stream reads as truncated).
    """
    entries = files = payload = 0
    skipped: list[bytes] = []
    for item in items:
        if item.kind == "leave" or item.entry is None:
            continue
        member = member_of(item.path, item.entry)
        if member is None:
            skipped.append(item.path)
            continue
        out.write(member_headers(member))
        if member.typeflag == b"0":
            _copy(item, member.size, out)
            files += 1
            payload += member.size
        entries += 1
    out.write(END)
    return entries, files, payload, skipped


def _copy(item: Item, size: int, out: BinaryIO) -> None:
    left = size
    while left:
        block = item.payload.read(min(left, _COPY_BLOCK)) if item.payload is not None else b""
        if not block:
            name = item.path.decode("utf-8", "surrogateescape")
            raise FormatError(f"payload of {name!r} ends {left} bytes early")
        out.write(block)
        left -= len(block)
    out.write(bytes(-size % BLOCK))
