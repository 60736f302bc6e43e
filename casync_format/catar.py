"""casync's catar archive format: the shared :class:`Entry` model and the streaming encoder.

A catar is a depth-first serialization of a directory tree. Each object is an
ENTRY record (feature flags, mode, chattr/FAT flags, uid, gid, mtime in ns)
followed by its optional USER, GROUP, XATTR, ACL, SELINUX, FCAPS and
QUOTA_PROJID records and then a PAYLOAD (regular file), SYMLINK or DEVICE
record; a directory continues with ``FILENAME`` + child serialization for
every child in ``strcmp`` order of the names and ends with a GOODBYE record
(see :mod:`._catar_goodbye`). Every record starts with ``le64 size, le64
type``; strings end with a NUL. This module is the encoding API: it
re-exports from :mod:`._catar_entry` the :class:`Entry` model (used by the
decoder, untar, tar streams and mtree too), the feature-flag rules
(:func:`normalize_feature_flags`, casync's ``ca_feature_flags_normalize``)
and the encoding of one object's records (:func:`encode_entry`,
:func:`archived_entry`), and owns :class:`CatarWriter`, a push-style encoder
whose output is byte-identical to ``casync make``'s for the same tree and
flags. A large file's payload goes out through one overridable method,
:meth:`CatarWriter.copy_payload` (copy in the kernel, or hand the bytes to a
chunker), with :meth:`CatarWriter.read_payload` and
:meth:`CatarWriter.payload_error` for an override to use.

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
    archived_entry(entry: Entry, feature_flags: int) -> Entry  # as its ENTRY record stores it
    CatarWriter(write: Callable[[bytes], object], feature_flags: int)
        .begin(root: Entry) -> None          # root directory (name ignored)
        .enter(entry: Entry) -> None         # open a subdirectory of the current directory
        .add(entry: Entry, payload: BinaryIO | None = None) -> None   # any non-directory
        .leave() -> None                     # close the current subdirectory
        .finish() -> None                    # close the root; the archive is complete
        .offset: int                         # bytes written so far
        .feature_flags: int                  # the normalized flags in every ENTRY
        .copy_payload(entry, payload, size)  # hook: a large file's payload (override it)
        .read_payload(entry, payload, size) -> bytes            # exactly size bytes, else FormatError
        .payload_error(entry, payload, missing) -> FormatError  # absent, short or too long
    SMALL_PAYLOAD = 65536                    # payloads up to this size never reach copy_payload
    DESYNC_TAR_FLAGS = 0xb000000010001f22, CA_FORMAT_DEFAULT = 0xb0000001ffeffe26
"""

from __future__ import annotations

import os
import stat
import struct
from typing import BinaryIO, Callable

from . import _accel
from ._catar_entry import (
    CHATTR_FLAGS,
    KIND_FLAGS,
    Entry,
    archived_entry,
    encode_entry,
    flags_from_chattr,
    normalize_feature_flags,
    time_granularity_ns,
    xattr_name_stored,
)
from ._catar_entry import child_consts as _child_consts
from ._catar_entry import encode_entry_general as _encode_general  # noqa: F401 (the reference tests compare with)
from ._catar_entry import encoder_for as _encoder
from ._catar_goodbye import encode_goodbye, goodbye_hash
from .constants import (
    CA_FORMAT_DEFAULT,
    CA_FORMAT_FILENAME,
    CA_FORMAT_WITH_2SEC_TIME,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_BEST,
    CA_FORMAT_WITH_CHATTR,
    CA_FORMAT_WITH_FAT_ATTRS,
    CA_FORMAT_WITH_FCAPS,
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
    CA_FORMAT_WITH_QUOTA_PROJID,
    CA_FORMAT_WITH_READ_ONLY,
    CA_FORMAT_WITH_SEC_TIME,
    CA_FORMAT_WITH_SELINUX,
    CA_FORMAT_WITH_SUBVOLUME,
    CA_FORMAT_WITH_SUBVOLUME_RO,
    CA_FORMAT_WITH_USEC_TIME,
    CA_FORMAT_WITH_USER_NAMES,
    DESYNC_TAR_FLAGS,
)
from .errors import FormatError

__all__ = [
    "Entry",
    "CatarWriter",
    "archived_entry",
    "encode_entry",
    "SMALL_PAYLOAD",
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

NAME_MAX = 255  # longest file name casync (Linux) accepts, in bytes
_BLOCK = 1 << 20  # payload bytes read per call
SMALL_PAYLOAD = 64 * 1024
"""Payloads up to this size go out in one ``write`` with their records, never via
:meth:`CatarWriter.copy_payload`."""
_HEADER = struct.Struct("<QQ")


# The extension's short path of CatarWriter._child, or None (not built, or PYCASYNC_PUREPYTHON=1).
_ENCODE_CHILD_C: Callable[[Entry, tuple[int, int, int, int, bool]], bytes | None] | None = _accel.c_function(
    "catar-entry"
)



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
        if self._child_c is not None and self._child_consts is not None:
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
        if 0 < size <= SMALL_PAYLOAD:  # one write for the records and a small file's content
            records += self.read_payload(entry, payload, size)
            size = 0
        self._write(records)
        self.offset = end = start + len(records)
        if size:
            self.copy_payload(entry, payload, size)
            end = self.offset
        parent.children.append((goodbye_hash(entry.name), start, end))

    def read_payload(self, entry: Entry, payload: BinaryIO | None, size: int) -> bytes:
        """Read exactly ``size`` bytes of ``entry``'s payload (short reads are retried).

        A missing ``payload``, one that ends early or one whose ``read``
        returns more than asked raises :meth:`payload_error`'s error.
        """
        if payload is None:
            raise self.payload_error(entry, payload, size)
        data = payload.read(size)
        while len(data) < size:  # a short read that is not the end yet
            more = payload.read(size - len(data))
            if not more:
                raise self.payload_error(entry, payload, size - len(data))
            data += more
        if len(data) > size:
            raise self.payload_error(entry, payload, size - len(data))
        return data

    def payload_error(self, entry: Entry, payload: object, missing: int) -> FormatError:
        """The :class:`FormatError` for ``entry``'s payload, to raise.

        ``payload`` None: there is none (``missing`` bytes were needed);
        else it ended ``missing`` bytes early (``missing > 0``) or gave more
        bytes than asked (``missing < 0``).
        """
        where = self._path(entry.name)
        if payload is None:
            return FormatError(f"catar writer: no payload for {where!r} ({missing} bytes)")
        if missing > 0:
            return FormatError(f"catar writer: payload of {where!r} ended {missing} bytes early")
        return FormatError(f"catar writer: payload of {where!r} is too long")

    def copy_payload(self, entry: Entry, payload: BinaryIO | None, size: int) -> None:
        """The hook for a regular file's payload above :data:`SMALL_PAYLOAD`: ``size`` bytes of ``payload``.

        Called by :meth:`add` after the file's records are written, with
        ``size`` its whole payload. This default reads ``payload`` in bounded
        blocks (:meth:`read_payload`) and writes them. A subclass may copy
        another way (in the kernel, or by leaving the bytes to a chunker that
        reads them itself); it must account for exactly ``size`` bytes in
        :attr:`offset` before it returns (this default does, for whatever it
        is called with), or raise :meth:`payload_error`'s error.
        """
        while size:
            block = self.read_payload(entry, payload, min(size, _BLOCK))
            self._emit(block)
            size -= len(block)

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
