"""Streaming decoder of casync's catar archives.

:func:`iter_catar` turns a byte stream (a binary file or a ``read(n)``
callable) into :class:`Item` events in archive order: ``"enter"`` for a
directory (the root first, path ``b""``), ``"file"`` for every other object
(regular file, symlink, device, fifo, socket) and ``"leave"`` at the end of a
directory. A regular file's item carries a :class:`PayloadReader` of exactly
its size; whatever the consumer leaves unread is skipped when iteration goes
on, so an archive of any size is decoded in bounded memory (depth x a few
hundred bytes, plus one read buffer; goodbye tables are streamed too).

Every record is checked before its body is read: sizes against casync's
limits for its type (so an absurd size fails at once, never allocates),
record order inside an entry as casync writes it, names (no ``b""``,
``b"."``, ``b".."``, ``/`` or NUL), children strictly ordered by name (which
also refuses duplicates), payloads, symlink targets and device numbers only
for the right file types, one feature-flag set for the whole archive, and each
goodbye table against the entries it closes (item count, offsets, sizes and
tail; the name hashes too with ``check_hashes=True``). Damage or truncation
raises :class:`~casync_format.errors.FormatError` naming the byte offset.
Records casync writes that pycasync does not restore (user/group names, ACLs,
SELinux labels, file capabilities, chattr/FAT flags, quota project ids) are
decoded into the :class:`~casync_format.catar.Entry` fields, never refused.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Generator
from typing import NamedTuple

from ._catar_entry import ENTRY_RECORD, unpack_entry_record
from ._catar_goodbye import goodbye_hash
from ._catar_input import CatarInput as _Input
from ._catar_input import PayloadReader, Readable, Source
from ._catar_input import show_path as _show
from .catar import Entry
from .constants import (
    CA_FORMAT_ACL_DEFAULT,
    CA_FORMAT_ACL_DEFAULT_GROUP,
    CA_FORMAT_ACL_DEFAULT_USER,
    CA_FORMAT_ACL_GROUP,
    CA_FORMAT_ACL_GROUP_OBJ,
    CA_FORMAT_ACL_USER,
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_GOODBYE_TAIL_MARKER,
    CA_FORMAT_GROUP,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_XATTR,
)
from .errors import FormatError

__all__ = [
    "Item", "PayloadReader", "Readable", "Source", "CatarReader", "iter_catar", "DEFAULT_MAX_DEPTH",
    "record_name",
]  # fmt: skip

DEFAULT_MAX_DEPTH = 4096  # directory levels (casync itself stops at 64)

_GOODBYE_ITEM = struct.Struct("<3Q")
_U64 = struct.Struct("<Q")
_GOODBYE_BATCH = 4096  # goodbye items read at a time
_MASK64 = (1 << 64) - 1
_MAX_PAYLOAD = (1 << 63) - 1
_ENTRY_SIZE = ENTRY_RECORD.size  # 64: casync has this one ENTRY layout

_NAMES = {
    CA_FORMAT_ENTRY: "ENTRY",
    CA_FORMAT_USER: "USER",
    CA_FORMAT_GROUP: "GROUP",
    CA_FORMAT_XATTR: "XATTR",
    CA_FORMAT_ACL_USER: "ACL_USER",
    CA_FORMAT_ACL_GROUP: "ACL_GROUP",
    CA_FORMAT_ACL_GROUP_OBJ: "ACL_GROUP_OBJ",
    CA_FORMAT_ACL_DEFAULT: "ACL_DEFAULT",
    CA_FORMAT_ACL_DEFAULT_USER: "ACL_DEFAULT_USER",
    CA_FORMAT_ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    CA_FORMAT_FCAPS: "FCAPS",
    CA_FORMAT_QUOTA_PROJID: "QUOTA_PROJID",
    CA_FORMAT_SELINUX: "SELINUX",
    CA_FORMAT_SYMLINK: "SYMLINK",
    CA_FORMAT_DEVICE: "DEVICE",
    CA_FORMAT_PAYLOAD: "PAYLOAD",
    CA_FORMAT_FILENAME: "FILENAME",
    CA_FORMAT_GOODBYE: "GOODBYE",
}

# Metadata records between ENTRY and PAYLOAD/SYMLINK/DEVICE: (rank, repeatable,
# min size, max size). casync writes them in rank order (caformat.h) and its
# decoder refuses any other order; the size limits are casync's *_SIZE_MAX.
_META = {
    CA_FORMAT_USER: (1, False, 16 + 2, 16 + 256),
    CA_FORMAT_GROUP: (2, False, 16 + 2, 16 + 256),
    CA_FORMAT_XATTR: (3, True, 16 + 2, 16 + 256 + 64 * 1024),
    CA_FORMAT_ACL_USER: (4, True, 32, 32 + 256),
    CA_FORMAT_ACL_GROUP: (5, True, 32, 32 + 256),
    CA_FORMAT_ACL_GROUP_OBJ: (6, False, 24, 24),
    CA_FORMAT_ACL_DEFAULT: (7, False, 48, 48),
    CA_FORMAT_ACL_DEFAULT_USER: (8, True, 32, 32 + 256),
    CA_FORMAT_ACL_DEFAULT_GROUP: (9, True, 32, 32 + 256),
    CA_FORMAT_SELINUX: (10, False, 16 + 2, 16 + 4096),
    CA_FORMAT_FCAPS: (11, False, 16, 16 + 64 * 1024),
    CA_FORMAT_QUOTA_PROJID: (12, False, 24, 24),
}
_ACL_TYPES = frozenset(
    {
        CA_FORMAT_ACL_USER,
        CA_FORMAT_ACL_GROUP,
        CA_FORMAT_ACL_GROUP_OBJ,
        CA_FORMAT_ACL_DEFAULT,
        CA_FORMAT_ACL_DEFAULT_USER,
        CA_FORMAT_ACL_DEFAULT_GROUP,
    }
)
_FILENAME_MAX = 16 + 256  # NAME_MAX 255 + NUL
_SYMLINK_MAX = 16 + 4096  # PATH_MAX incl. NUL
_DEVICE_SIZE = 32
_FILE_TYPES = frozenset(
    {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFBLK, stat.S_IFCHR, stat.S_IFIFO, stat.S_IFSOCK}
)
_ID_LIMIT = (1 << 32) - 1  # (uid_t) -1 is not an owner
_S_IFMT, _S_IFREG, _S_IFDIR = 0o170000, stat.S_IFREG, stat.S_IFDIR
_TERMINAL_OF = {  # the record a node of each file type must end with
    stat.S_IFREG: CA_FORMAT_PAYLOAD,
    stat.S_IFLNK: CA_FORMAT_SYMLINK,
    stat.S_IFCHR: CA_FORMAT_DEVICE,
    stat.S_IFBLK: CA_FORMAT_DEVICE,
}


def record_name(kind: int) -> str:
    """casync's name of a record type (``"0x..."`` for an unknown one)."""
    return _NAMES.get(kind, f"unknown record 0x{kind:016x}")


class Item(NamedTuple):
    """One decoding event: ``kind`` is ``"enter"``, ``"file"`` or ``"leave"``.

    ``path`` is relative to the archive root (``b""`` is the root, components
    joined by ``b"/"``); ``entry`` is None for ``"leave"``; ``payload`` is a
    :class:`PayloadReader` for regular files, else None.
    """

    kind: str
    path: bytes
    entry: Entry | None
    payload: PayloadReader | None


class _Dir:
    """Decoder state for one open directory (a few ints and one name)."""

    __slots__ = ("child_hash", "child_start", "count", "entry_offset", "last", "name_len", "sum")

    def __init__(self, name_len: int, entry_offset: int) -> None:
        self.name_len = name_len
        self.entry_offset = entry_offset  # archive offset of the directory's ENTRY
        self.last: bytes | None = None  # the previous child's name
        self.count = 0
        self.child_start = -1  # FILENAME offset of the child being decoded
        self.child_hash = 0
        self.sum = 0  # multiset fingerprint of (start, size, hash) of the children


def _cstring(body: bytes, what: str, start: int) -> bytes:
    """``body`` without its terminating NUL; refuses a missing NUL or one inside."""
    if not body or body[-1] != 0 or b"\0" in body[:-1]:
        raise FormatError(f"{what} record at byte {start} is not one NUL-terminated string")
    return body[:-1]


def _check_name(name: bytes, start: int) -> None:
    if name in (b"", b".", b"..") or b"/" in name:
        raise FormatError(f"FILENAME record at byte {start} holds the invalid name {name!r}")


class CatarReader:
    """Iterator of :class:`Item` over one catar stream (see the module).

    ``feature_flags`` is the archive's feature set, known once the first item
    is out. ``max_depth`` bounds directory nesting (and so memory).
    ``check_hashes`` also checks the name hashes of every goodbye table.
    """

    def __init__(
        self, source: Source, *, check_hashes: bool = False, max_depth: int = DEFAULT_MAX_DEPTH
    ) -> None:
        self._in = _Input(source)
        self.feature_flags: int | None = None
        self._max_depth = max_depth
        self._hash = goodbye_hash if check_hashes else None
        self._events = self._run()

    def __iter__(self) -> CatarReader:
        return self

    def __next__(self) -> Item:
        return next(self._events)

    def close(self) -> None:
        """Stop decoding (the source is not closed)."""
        self._events.close()

    # -- the walk ---------------------------------------------------------------

    def _run(self) -> Generator[Item, None, None]:
        inp = self._in
        root = self._node(b"")
        if not stat.S_ISDIR(root.mode):
            raise FormatError("archive root (ENTRY at byte 0) is not a directory")
        yield Item("enter", b"", root, None)
        stack = [_Dir(0, 0)]
        path = b""
        new = tuple.__new__  # Item(...) without the keyword handling: this loop is hot
        while stack:
            top = stack[-1]
            start = inp.base + inp.pos
            head = inp.header("FILENAME or GOODBYE record")
            if head is None:
                raise FormatError(f"archive truncated at byte {start}: directory {_show(path)} is not closed")
            size, kind = head
            if top.child_start >= 0:
                self._child_done(top, start)
            if kind == CA_FORMAT_FILENAME:
                name = self._filename(size, start, top, path)
                child = path + b"/" + name if path else name
                entry = self._node(name, child)
                fmt = entry.mode & _S_IFMT
                if fmt == _S_IFREG:
                    payload = PayloadReader(inp, entry.size, child)
                    yield new(Item, ("file", child, entry, payload))
                    payload._finish()
                elif fmt == _S_IFDIR:
                    if len(stack) >= self._max_depth:
                        raise FormatError(f"directory {_show(child)} is nested deeper than {self._max_depth}")
                    yield new(Item, ("enter", child, entry, None))
                    stack.append(_Dir(len(name), start + size))
                    path = child
                else:
                    yield new(Item, ("file", child, entry, None))
            elif kind == CA_FORMAT_GOODBYE:
                self._goodbye(top, size, start, path)
                yield new(Item, ("leave", path, None, None))
                stack.pop()
                cut = top.name_len + (1 if len(stack) > 1 else 0)
                path = path[: len(path) - cut] if stack else b""
            else:
                raise FormatError(
                    f"unexpected {record_name(kind)} at byte {start} in directory {_show(path)}"
                    " (expected FILENAME or GOODBYE)"
                )
        if not inp.at_end():
            raise FormatError(f"unexpected data after the end of the archive at byte {inp.offset}")

    def _filename(self, size: int, start: int, top: _Dir, path: bytes) -> bytes:
        if not 18 <= size <= _FILENAME_MAX:
            raise FormatError(f"FILENAME record at byte {start} has an invalid size {size}")
        inp = self._in
        inp.need(size, "FILENAME record", start)
        buf, pos = inp.buf, inp.pos
        end = pos + size - 1  # the terminating NUL
        if buf[end] != 0 or buf.find(b"\0", pos + 16, end) >= 0:
            raise FormatError(f"FILENAME record at byte {start} is not one NUL-terminated string")
        name = buf[pos + 16 : end]
        inp.pos = pos + size
        _check_name(name, start)
        last = top.last
        if last is not None and name <= last:
            how = "duplicate" if name == last else "out-of-order"
            raise FormatError(f"{how} name {name!r} at byte {start} in directory {_show(path)}")
        top.last = name
        top.count += 1
        top.child_start = start
        top.child_hash = self._hash(name) if self._hash is not None else 0
        return name

    @staticmethod
    def _child_done(top: _Dir, end: int) -> None:
        fingerprint = hash((top.child_start, end - top.child_start, top.child_hash))
        top.sum = (top.sum + fingerprint) & _MASK64
        top.child_start = -1

    def _goodbye(self, top: _Dir, size: int, start: int, path: bytes) -> None:
        """Check a GOODBYE table against the entries of the directory it closes."""
        where = f"GOODBYE record at byte {start} of directory {_show(path)}"
        expected = 16 + _GOODBYE_ITEM.size * (top.count + 1)
        if size != expected:
            raise FormatError(f"{where} has size {size}, expected {expected} for {top.count} entries")
        inp = self._in
        inp.take(16, "GOODBYE record", start)
        span = start - top.entry_offset  # ENTRY of the directory .. this record
        total, left, check = 0, top.count, self._hash is not None
        while left:
            n = min(left, _GOODBYE_BATCH)
            for offset, item_size, item_hash in _GOODBYE_ITEM.iter_unpack(inp.take(24 * n, where, start)):
                if not 0 < item_size <= offset <= span:
                    raise FormatError(f"{where} has an item out of bounds ({offset=}, size={item_size})")
                fingerprint = hash((start - offset, item_size, item_hash if check else 0))
                total = (total + fingerprint) & _MASK64
            left -= n
        entry_offset, tail_size, marker = _GOODBYE_ITEM.unpack(inp.take(24, where, start))
        if marker != CA_FORMAT_GOODBYE_TAIL_MARKER or tail_size != size:
            raise FormatError(f"{where} has a damaged tail")
        if entry_offset != span:
            raise FormatError(f"{where} points {entry_offset} bytes back to its ENTRY, not {span}")
        if total != top.sum:
            raise FormatError(f"{where} does not match the directory's entries")

    # -- one node ---------------------------------------------------------------

    def _node(self, name: bytes, path: bytes = b"") -> Entry:
        """Read ENTRY and the metadata records that follow, up to the node's end."""
        inp = self._in
        start = inp.base + inp.pos
        if len(inp.buf) - inp.pos < _ENTRY_SIZE:
            head = inp.header("ENTRY record")
            if head is None:
                raise FormatError(f"archive truncated at byte {start}: no ENTRY for {_show(path)}")
            _check_entry_head(*head, start, path)
            inp.need(_ENTRY_SIZE, "ENTRY record", start)
        size, kind, *fields = unpack_entry_record(inp.buf, inp.pos)
        _check_entry_head(size, kind, start, path)
        entry = self._entry(fields, name, start)
        inp.pos += _ENTRY_SIZE
        regular = entry.mode & _S_IFMT == _S_IFREG
        state: _Meta | None = None
        while True:
            rstart = inp.base + inp.pos
            head = inp.header("record")
            if head is None:
                raise FormatError(f"archive truncated at byte {rstart}: {_show(path)} is incomplete")
            size, kind = head
            if kind == CA_FORMAT_PAYLOAD and regular:  # the common case, inline
                if not 16 <= size <= _MAX_PAYLOAD:
                    raise FormatError(f"PAYLOAD record at byte {rstart} has an invalid size {size}")
                inp.pos += 16
                entry.size = size - 16
                break
            if kind in _META:
                if state is None:
                    state = _Meta()
                self._meta(entry, state, kind, size, rstart)
            elif kind in (CA_FORMAT_FILENAME, CA_FORMAT_GOODBYE):
                break
            else:
                self._terminal(entry, kind, size, rstart, path)
                break
        if state is not None and state.acl:
            entry.acl = bytes(state.acl)
        _check_complete(entry, kind, path, rstart)
        return entry

    def _entry(self, fields: list[int], name: bytes, start: int) -> Entry:
        flags, mode, entry_flags, uid, gid, mtime = fields
        if flags != self.feature_flags:
            if self.feature_flags is not None:
                raise FormatError(f"ENTRY at byte {start} has feature flags 0x{flags:x}, not the archive's")
            if flags & ~CA_FORMAT_FEATURE_FLAGS_MAX:
                raise FormatError(f"archive uses feature flags 0x{flags:x} that casync does not know")
            self.feature_flags = flags
        if mode & ~0o177777 or mode & 0o170000 not in _FILE_TYPES:
            raise FormatError(f"ENTRY at byte {start} has an invalid mode 0o{mode:o}")
        if uid >= _ID_LIMIT or gid >= _ID_LIMIT:
            raise FormatError(f"ENTRY at byte {start} has an invalid owner {uid}:{gid}")
        if mtime > _MAX_PAYLOAD:
            raise FormatError(f"ENTRY at byte {start} has an invalid time {mtime}")
        return Entry(name=name, mode=mode, uid=uid, gid=gid, mtime_ns=mtime, flags=entry_flags)

    def _meta(self, entry: Entry, state: _Meta, kind: int, size: int, start: int) -> None:
        """One USER/GROUP/XATTR/ACL_*/SELINUX/FCAPS/QUOTA_PROJID record into ``entry``."""
        rank, repeatable, low, high = _META[kind]
        what = record_name(kind)
        if rank < state.rank or (rank == state.rank and not repeatable):
            raise FormatError(f"{what} record at byte {start} is out of order")
        if not low <= size <= high:
            raise FormatError(f"{what} record at byte {start} has an invalid size {size}")
        state.rank = rank
        raw = self._in.take(size, f"{what} record", start)
        body = raw[16:]
        if kind == CA_FORMAT_XATTR:
            entry.xattrs.append(_xattr(body, start, entry.xattrs))
        elif kind in _ACL_TYPES:
            state.acl += raw
        elif kind == CA_FORMAT_USER:
            entry.user = _cstring(body, what, start)
        elif kind == CA_FORMAT_GROUP:
            entry.group = _cstring(body, what, start)
        elif kind == CA_FORMAT_SELINUX:
            entry.selinux = _cstring(body, what, start)
        elif kind == CA_FORMAT_FCAPS:
            entry.fcaps = bytes(body)
        else:
            entry.quota_projid = _U64.unpack(body)[0]

    def _terminal(self, entry: Entry, kind: int, size: int, start: int, path: bytes) -> None:
        """PAYLOAD (header only), SYMLINK or DEVICE: the last record of a node."""
        fmt = stat.S_IFMT(entry.mode)
        what = record_name(kind)
        if kind == CA_FORMAT_PAYLOAD and fmt == stat.S_IFREG:
            if not 16 <= size <= _MAX_PAYLOAD:
                raise FormatError(f"PAYLOAD record at byte {start} has an invalid size {size}")
            self._in.take(16, what, start)
            entry.size = size - 16
        elif kind == CA_FORMAT_SYMLINK and fmt == stat.S_IFLNK:
            if not 18 <= size <= _SYMLINK_MAX:
                raise FormatError(f"SYMLINK record at byte {start} has an invalid size {size}")
            entry.target = _cstring(self._in.take(size, what, start)[16:], what, start)
        elif kind == CA_FORMAT_DEVICE and fmt in (stat.S_IFCHR, stat.S_IFBLK):
            if size != _DEVICE_SIZE:
                raise FormatError(f"DEVICE record at byte {start} has an invalid size {size}")
            major, minor = struct.unpack_from("<QQ", self._in.take(size, what, start), 16)
            if major >= 1 << 32 or minor >= 1 << 32:
                raise FormatError(f"DEVICE record at byte {start} has an invalid number {major}:{minor}")
            entry.rdev = _makedev(major, minor)
        elif kind in (CA_FORMAT_PAYLOAD, CA_FORMAT_SYMLINK, CA_FORMAT_DEVICE):
            raise FormatError(f"{what} record at byte {start} for {_show(path)} of mode 0o{entry.mode:o}")
        else:
            raise FormatError(f"unexpected {what} at byte {start} in the entry of {_show(path)}")


class _Meta:
    """Per-node state while reading metadata records."""

    __slots__ = ("acl", "rank")

    def __init__(self) -> None:
        self.rank = 0
        self.acl = bytearray()


def _xattr(body: bytes, start: int, previous: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes]:
    """``(name, value)`` of an XATTR body (``name NUL value``), in strictly rising name order."""
    end = body.find(b"\0", 0, 256)
    if end <= 0:
        raise FormatError(f"XATTR record at byte {start} has no valid name")
    name = bytes(body[:end])
    if previous and name <= previous[-1][0]:
        raise FormatError(f"XATTR {name!r} at byte {start} is duplicated or out of order")
    return name, bytes(body[end + 1 :])


def _check_entry_head(size: int, kind: int, start: int, path: bytes) -> None:
    """The header of a node's first record must be an ENTRY's."""
    if kind != CA_FORMAT_ENTRY:
        raise FormatError(f"expected ENTRY for {_show(path)} at byte {start}, found {record_name(kind)}")
    if size != _ENTRY_SIZE:
        raise FormatError(f"ENTRY record at byte {start} has size {size}, expected {_ENTRY_SIZE}")


def _check_complete(entry: Entry, kind: int, path: bytes, start: int) -> None:
    """A regular file, symlink or device must have ended with its own record."""
    need = _TERMINAL_OF.get(entry.mode & _S_IFMT)
    if need is not None and kind != need:
        found = record_name(kind)
        raise FormatError(f"{_show(path)} has no {record_name(need)} record ({found} at byte {start})")


def _makedev(major: int, minor: int) -> int:
    """``os.makedev``, or Linux's encoding where ``os`` lacks it."""
    if hasattr(os, "makedev"):
        return os.makedev(major, minor)
    return ((major & 0xFFF) << 8) | ((major & ~0xFFF) << 32) | (minor & 0xFF) | ((minor & ~0xFF) << 12)


def iter_catar(
    source: Source, *, check_hashes: bool = False, max_depth: int = DEFAULT_MAX_DEPTH
) -> CatarReader:
    """Decode a catar stream into :class:`Item` events (a :class:`CatarReader`).

    ``source`` is a binary file or a ``read(n) -> bytes`` callable; it is read
    sequentially, never seeked or closed.
    """
    return CatarReader(source, check_hashes=check_hashes, max_depth=max_depth)
