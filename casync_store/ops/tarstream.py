"""Conversions between tar streams (GNU, PAX, ustar) and catar archives.

This module owns ``tar --input-format tar`` and ``untar --output-format
gnu-tar``. Reading: a tar stream (a file or stdin, plain or gzip/bzip2/xz
compressed; stdlib :mod:`tarfile` in streaming mode) is turned into an
in-memory tree of :class:`~casync_format.catar.Entry` objects while file
payloads are spooled, in stream order, to ONE anonymous temporary file; the
tree is then pushed in casync's order into a
:class:`~casync_format.catar.CatarWriter` (a catar, or a caidx chunked
straight into a store). Member names are normalised like GNU tar does: leading
``/`` are stripped (with a warning) and ``.`` components and empty ones are
dropped; a name with a ``..`` component is refused (:class:`FormatError`), as
is a member whose parent is not a directory (e.g. a file through a symlink the
stream made earlier). A later member replaces an earlier one of the same name
(a directory member only updates an existing directory's metadata; replacing a
directory with a non-directory is refused). Hard links become copies of their
target's payload. Parents that the stream implies but never lists become
directories with mode ``0755``, owner 0:0 and mtime 0 (the metadata desync
gives the root it adds with ``--tar-add-root``). The archive root is the
stream's ``.`` member when it has one; otherwise, without ``add_root``, the
single top-level directory (as desync, which takes the first member as the
root), and with ``add_root`` a synthetic root holding every top-level member.
Writing: decoder items become tar members, payloads copied in bounded
blocks; GNU format is desync's byte for byte (:mod:`._gnutar`: whole-second
mtimes, floored; xattrs as PAX records), PAX and ustar go through
:mod:`tarfile` in streaming mode (PAX also nanoseconds and
``SCHILY.xattr.*``); sockets cannot be represented and are skipped.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import IO, TYPE_CHECKING, BinaryIO, Callable

from casync_format.catar import DESYNC_TAR_FLAGS, CatarWriter, Entry, normalize_feature_flags
from casync_format.chunker import DEFAULT_PARAMS, ChunkerParams
from casync_format.constants import (
    CA_FORMAT_WITH_DEVICE_NODES,
    CA_FORMAT_WITH_FIFOS,
    CA_FORMAT_WITH_SYMLINKS,
)
from casync_format.digest import SHA512_256, Digest
from casync_format.errors import FormatError, ParameterError

from ..plumbing.atomic import atomic_write
from ..plumbing.config import StoreOptions
from ..plumbing.progress import Progress
from ..stores.base import WriteStore, require_writable
from ..stores.indexio import STDIO
from ._gnutar import write_gnu
from .tar import TarStats, TreeEvent, index_events, index_flags, write_tree

if TYPE_CHECKING:
    from casync_format.catar_read import Item, Readable

try:
    import lzma

    _LZMA_ERRORS: tuple[type[Exception], ...] = (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python built without lzma
    _LZMA_ERRORS = ()

__all__ = [
    "TarTree",
    "TarStreamStats",
    "read_tarstream",
    "tar_from_tarstream",
    "tar_index_from_tarstream",
    "write_tarstream",
    "catar_to_tarstream",
]

log = logging.getLogger(__name__)

_SEC = 1_000_000_000
_BLOCK = 1 << 20
_XATTR_PREFIX = "SCHILY.xattr."
_READ_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, zlib.error, *_LZMA_ERRORS)
_PAX_TIME = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")
_FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
_DEFAULT_DIR_MODE = stat.S_IFDIR | 0o755
_KIND_FLAG = {
    stat.S_IFLNK: CA_FORMAT_WITH_SYMLINKS,
    stat.S_IFBLK: CA_FORMAT_WITH_DEVICE_NODES,
    stat.S_IFCHR: CA_FORMAT_WITH_DEVICE_NODES,
    stat.S_IFIFO: CA_FORMAT_WITH_FIFOS,
}


def _b(text: str) -> bytes:
    """Original bytes of a string tarfile decoded with utf-8/surrogateescape."""
    return text.encode("utf-8", "surrogateescape")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class _Node:
    """A tree node: the entry, its payload offset in the spool, its children (directories)."""

    __slots__ = ("children", "entry", "is_dir", "offset")

    def __init__(self, entry: Entry, offset: int = -1, is_dir: bool = False) -> None:
        self.entry = entry
        self.offset = offset
        self.is_dir = is_dir
        self.children: dict[bytes, _Node] = {}


def _default_dir(name: bytes) -> _Node:
    return _Node(Entry(name=name, mode=_DEFAULT_DIR_MODE), is_dir=True)


def _split(name: bytes, display: str) -> list[bytes]:
    """Components of a member name, normalised like GNU tar does."""
    if name.startswith(b"/"):
        log.warning("removing leading '/' from tar member name %s", display)
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        raise FormatError(f"tar member {display}: '..' in the name would escape the archive root")
    return parts


def _pax_mtime_ns(text: str) -> int | None:
    m = _PAX_TIME.fullmatch(text.strip())
    if m is None:
        return None
    frac = (m.group(3) or "")[:9].ljust(9, "0")
    ns = int(m.group(2)) * _SEC + int(frac)
    return -ns if m.group(1) else ns


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    ns = _pax_mtime_ns(text) if text is not None else None
    return ns if ns is not None else int(member.mtime) * _SEC


def _xattrs(member: tarfile.TarInfo) -> list[tuple[bytes, bytes]]:
    found = [
        (_b(key[len(_XATTR_PREFIX):]), _b(value))
        for key, value in member.pax_headers.items()
        if key.startswith(_XATTR_PREFIX)
    ]
    return sorted(found)


def _file_type(member: tarfile.TarInfo) -> int | None:
    if member.isreg():
        return stat.S_IFREG
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    if member.isfifo():
        return stat.S_IFIFO
    return None


def _entry(member: tarfile.TarInfo, name: bytes, ftype: int, no_time: bool) -> Entry:
    return Entry(
        name=name,
        mode=ftype | (member.mode & 0o7777),
        uid=member.uid,
        gid=member.gid,
        mtime_ns=0 if no_time else _mtime_ns(member),
        user=_b(member.uname) or None,
        group=_b(member.gname) or None,
        xattrs=_xattrs(member),
        size=member.size if ftype == stat.S_IFREG else 0,
        target=_b(member.linkname) if ftype == stat.S_IFLNK else None,
        rdev=os.makedev(member.devmajor, member.devminor) if ftype in (stat.S_IFCHR, stat.S_IFBLK) else 0,
    )


@dataclass
class TarStreamStats:
    """What a conversion did: members read or written, and payload bytes."""

    entries: int = 0  # objects in the resulting archive or stream (root included)
    files: int = 0  # regular files among them
    payload_bytes: int = 0  # bytes of file content
    hardlinks: int = 0  # hard-link members turned into copies (reading)
    skipped: int = 0  # members that cannot be represented and were left out


class TarTree:
    """A tar stream read into memory: the entry tree plus one payload spool.

    Build it with :func:`read_tarstream`; iterate :meth:`events` to push it
    into a writer; :meth:`close` (or use as a context manager) drops the spool.
    """

    def __init__(self, spool: IO[bytes], feature_flags: int = DESYNC_TAR_FLAGS, no_time: bool = False):
        self._spool = spool
        self._flags = normalize_feature_flags(feature_flags)
        self._no_time = no_time
        self._top = _default_dir(b"")
        self._top_explicit = False
        self.stats = TarStreamStats()

    def __enter__(self) -> TarTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the payload spool."""
        self._spool.close()

    def add_member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Add one member of ``tf`` (its payload is read now, into the spool)."""
        raw = _b(member.name)
        display = repr(raw)[1:]
        parts = _split(raw, display)
        if member.islnk():
            node = self._link_copy(member, parts, display)
        else:
            ftype = _file_type(member)
            if ftype is None:
                log.warning("skipping tar member %s: unsupported type %r", display, member.type)
                self.stats.skipped += 1
                return
            if not self._flags & _KIND_FLAG.get(ftype, ~0):
                log.debug("skipping tar member %s: its file type is not in the feature flags", display)
                self.stats.skipped += 1
                return
            node = _Node(_entry(member, parts[-1] if parts else b"", ftype, self._no_time),
                         is_dir=ftype == stat.S_IFDIR)
            if ftype == stat.S_IFREG:
                node.offset = self._spool_payload(tf, member, display)
        self._insert(parts, node, display)

    def _spool_payload(self, tf: tarfile.TarFile, member: tarfile.TarInfo, display: str) -> int:
        src = tf.extractfile(member)
        if src is None:  # pragma: no cover - isreg() members always have data
            raise FormatError(f"tar member {display}: no data")
        offset = self._spool.seek(0, os.SEEK_END)
        shutil.copyfileobj(src, self._spool, _BLOCK)
        if self._spool.tell() - offset != member.size:
            raise FormatError(f"tar member {display}: payload shorter than its {member.size} bytes")
        return offset

    def _link_copy(self, member: tarfile.TarInfo, parts: list[bytes], display: str) -> _Node:
        target_raw = _b(member.linkname)
        target = self._lookup(_split(target_raw, repr(target_raw)[1:]))
        if target is None or target.is_dir:
            what = "a directory" if target is not None else "not an earlier member"
            raise FormatError(f"tar hard link {display} -> {repr(target_raw)[1:]}: target is {what}")
        self.stats.hardlinks += 1
        return _Node(replace(target.entry, name=parts[-1] if parts else b""), target.offset)

    def _lookup(self, parts: list[bytes]) -> _Node | None:
        node: _Node | None = self._top
        for comp in parts:
            if node is None or not node.is_dir:
                return None
            node = node.children.get(comp)
        return node

    def _insert(self, parts: list[bytes], node: _Node, display: str) -> None:
        if not parts:
            if not node.is_dir:
                raise FormatError(f"tar member {display}: the archive root must be a directory")
            self._top.entry = node.entry
            self._top_explicit = True
            return
        parent = self._top
        for i, comp in enumerate(parts[:-1]):
            child = parent.children.get(comp)
            if child is None:
                child = parent.children[comp] = _default_dir(comp)
            elif not child.is_dir:
                where = _s(b"/".join(parts[: i + 1]))
                raise FormatError(f"tar member {display}: {where!r} is not a directory")
            parent = child
        old = parent.children.get(parts[-1])
        if old is not None and old.is_dir:
            if not node.is_dir:
                raise FormatError(f"tar member {display}: would replace a directory with a non-directory")
            old.entry = node.entry
            return
        parent.children[parts[-1]] = node

    def root(self, add_root: bool) -> _Node:
        """The archive root (see the module docstring for the rules)."""
        if add_root or self._top_explicit:
            return self._top
        kids = self._top.children
        if len(kids) == 1:
            (only,) = kids.values()
            if only.is_dir:
                only.entry = replace(only.entry, name=b"")
                return only
        names = ", ".join(repr(k)[1:] for k in list(kids)[:3])
        raise FormatError(
            f"tar stream has no single top-level directory ({len(kids)} top-level entries"
            f"{': ' + names if names else ''}); use --tar-add-root"
        )

    def events(self, add_root: bool) -> Iterator[TreeEvent]:
        """The tree as :class:`~casync_store.ops.tar.TreeEvent` s in casync order.

        The root is entered first and left last; children follow their
        directory sorted by name bytes; paths are relative (``b""`` = root);
        regular files carry a reader of their spooled payload.
        """
        root = self.root(add_root)
        self._spool.flush()
        yield TreeEvent("enter", root.entry, b"", None)
        stack = [(b"", iter(sorted(root.children.items())))]
        while stack:
            nxt = next(stack[-1][1], None)
            if nxt is None:
                yield TreeEvent("leave", None, stack.pop()[0], None)
                continue
            name, node = nxt
            path = stack[-1][0] + b"/" + name if stack[-1][0] else name
            if node.is_dir:
                yield TreeEvent("enter", node.entry, path, None)
                stack.append((path, iter(sorted(node.children.items()))))
            elif stat.S_ISREG(node.entry.mode):
                spool = _SpoolSlice(self._spool, node.offset, node.entry.size)
                yield TreeEvent("file", node.entry, path, spool)  # type: ignore[arg-type]
            else:
                yield TreeEvent("file", node.entry, path, None)


class _SpoolSlice:
    """A reader of ``size`` bytes at ``offset`` of the spool file."""

    def __init__(self, spool: IO[bytes], offset: int, size: int) -> None:
        self._fd = spool.fileno()
        self._pos = offset
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        data = os.pread(self._fd, n, self._pos) if n else b""
        self._pos += len(data)
        self._left -= len(data)
        return data


def _check_end(tf: tarfile.TarFile) -> None:
    """Refuse a stream cut inside a header; warn when the end-of-archive blocks are missing.

    tarfile takes both for the end of the archive (GNU tar too); at the end
    tarfile has read one block past the last member: zeros when the stream
    is complete.
    """
    tail = tf.fileobj.tell() - tf.offset if tf.fileobj is not None else tarfile.BLOCKSIZE
    if 0 < tail < tarfile.BLOCKSIZE:
        raise FormatError(f"tar stream truncated inside a header at byte {tf.offset}")
    if tail == 0:
        log.warning("tar stream ends at byte %d without an end-of-archive marker", tf.offset)


def read_tarstream(
    source: BinaryIO, *, feature_flags: int = DESYNC_TAR_FLAGS, no_time: bool = False
) -> TarTree:
    """Read a whole tar stream (any compression ``tarfile`` detects) into a :class:`TarTree`.

    Members of file types ``feature_flags`` does not allow are left out, as
    casync leaves them out of a directory. Raises :class:`FormatError` for a
    damaged stream or a hostile or contradictory member name.
    """
    spool = tempfile.TemporaryFile(prefix="pycasync-tar-")  # noqa: SIM115 (the tree owns it)
    tree = TarTree(spool, feature_flags, no_time)
    try:
        with tarfile.open(fileobj=source, mode="r|*", encoding="utf-8", errors="surrogateescape") as tf:
            while True:
                member = tf.next()
                if member is None:
                    break
                # streaming: keep no per-member state in tarfile (members is missing from typeshed's stubs)
                tf.members.clear()  # type: ignore[attr-defined]
                tree.add_member(tf, member)
            _check_end(tf)
    except _READ_ERRORS as e:
        tree.close()
        raise FormatError(f"cannot read tar stream: {e}") from e
    except BaseException:
        tree.close()
        raise
    return tree


def tar_from_tarstream(
    source: BinaryIO,
    output: str | os.PathLike[str],
    *,
    feature_flags: int = DESYNC_TAR_FLAGS,
    add_root: bool = False,
    no_time: bool = False,
) -> TarStats:
    """Convert the tar stream ``source`` into a catar at ``output`` (``-``: stdout).

    The whole stream is read first (payloads into one temporary file), so a
    bad stream leaves no output; the catar then appears atomically. See the
    module docstring for names, the root and ``add_root`` (desync's
    ``--tar-add-root``); ``no_time`` records every mtime as 0.
    """
    output = os.fspath(output)
    flags = normalize_feature_flags(feature_flags)
    with read_tarstream(source, feature_flags=flags, no_time=no_time) as tree:
        events = tree.events(add_root)
        if output == STDIO:
            out = sys.stdout.buffer
            stats = write_tree(CatarWriter(out.write, flags), events)
            out.flush()
            return stats
        with atomic_write(output) as f:
            return write_tree(CatarWriter(f.write, flags), events)


def tar_index_from_tarstream(
    source: BinaryIO,
    index_path: str | os.PathLike[str],
    store: WriteStore | None,
    *,
    params: ChunkerParams = DEFAULT_PARAMS,
    digest: Digest = SHA512_256,
    concurrency: int | None = None,
    feature_flags: int = DESYNC_TAR_FLAGS,
    add_root: bool = False,
    no_time: bool = False,
    compression: str | None = None,
    progress: Progress | None = None,
    options_for: Callable[[str], StoreOptions] | None = None,
) -> TarStats:
    """Convert the tar stream ``source`` into a caidx at ``index_path``, chunks into ``store``.

    The tree is read as :func:`tar_from_tarstream` reads it, then goes through
    :func:`casync_store.ops.tar.index_events` (same flags, chunking and storing as
    ``tar -i``; no temporary catar; no index unless complete; ``index_path``
    may be remote, with ``options_for`` giving its store's options).
    """
    if store is not None:
        store = require_writable(store)
    flags = index_flags(feature_flags, digest)
    with read_tarstream(source, feature_flags=flags, no_time=no_time) as tree:
        return index_events(
            tree.events(add_root), index_path, store, feature_flags=flags, params=params, digest=digest,
            concurrency=concurrency, compression=compression, progress=progress, options_for=options_for,
        )


def _pax_time(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    secs, frac = divmod(abs(ns), _SEC)
    return f"{sign}{secs}.{frac:09d}".rstrip("0").rstrip(".")


def _tarinfo(path: bytes, entry: Entry, fmt: int) -> tarfile.TarInfo | None:
    info = tarfile.TarInfo(_s(path) if path else ".")
    mode = entry.mode
    if stat.S_ISREG(mode):
        info.type, info.size = tarfile.REGTYPE, entry.size
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, _s(entry.target or b"")
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(entry.rdev), os.minor(entry.rdev)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    else:
        return None
    info.mode = mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = _s(entry.user or b""), _s(entry.group or b"")
    info.mtime = entry.mtime_ns // _SEC
    if fmt == tarfile.PAX_FORMAT:
        pax: dict[str, str] = {}  # TarInfo's own starts empty; typeshed types it as a read-only Mapping
        info.pax_headers = pax
        if entry.mtime_ns % _SEC:
            pax["mtime"] = _pax_time(entry.mtime_ns)
        for name, value in entry.xattrs:
            try:
                key = _XATTR_PREFIX + name.decode("utf-8")
            except UnicodeDecodeError:
                log.warning("%s: xattr name %r is not UTF-8, left out of the PAX header", info.name, name)
                continue
            pax[key] = _s(value)
    return info


def write_tarstream(items: Iterable[Item], out: BinaryIO, *, format: str = "gnu") -> TarStreamStats:
    """Write decoder ``items`` to ``out`` as a tar stream; return counts.

    ``format`` is ``gnu`` (default: desync's bytes, whole-second mtimes,
    xattrs as PAX ``SCHILY.xattr.*`` records; see :mod:`._gnutar`), ``pax``
    (nanosecond mtimes and ``SCHILY.xattr.*`` records) or ``ustar``. Member
    names are relative to the archive root, which is ``.``; payloads stream
    through in bounded blocks. Sockets are skipped with a warning. On an
    error no end-of-archive marker is written, so the stream reads as
    truncated. ``out`` is left open.
    """
    fmt = _FORMATS.get(format)
    if fmt is None:
        raise ParameterError(f"unknown tar format {format!r}: use gnu, pax or ustar")
    if fmt == tarfile.GNU_FORMAT:  # desync's bytes (see _gnutar)
        entries, files, payload, skipped = write_gnu(items, out)
        for path in skipped:
            log.warning("%s: sockets cannot be stored in a tar stream, skipped", _s(path))
        return TarStreamStats(entries=entries, files=files, payload_bytes=payload, skipped=len(skipped))
    stats = TarStreamStats()
    with tarfile.open(fileobj=out, mode="w|", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for item in items:
            if item.kind == "leave" or item.entry is None:
                continue
            info = _tarinfo(item.path, item.entry, fmt)
            if info is None:
                log.warning("%s: sockets cannot be stored in a tar stream, skipped", _s(item.path))
                stats.skipped += 1
                continue
            _add(tf, info, item, stats)
    return stats


def catar_to_tarstream(source: BinaryIO, target: str | BinaryIO, *, format: str = "gnu") -> TarStreamStats:
    """Convert the catar byte stream ``source`` into a tar stream (``untar --output-format gnu-tar``).

    ``target`` is an open binary stream (left open) or a path, which is
    written atomically: it appears only once the whole tar stream is complete.
    """
    from casync_format.catar_read import iter_catar

    if not isinstance(target, str):
        return write_tarstream(iter_catar(source), target, format=format)
    with atomic_write(target) as out:
        return write_tarstream(iter_catar(source), out, format=format)


class _Exact:
    """A payload reader that fails clearly when it ends before ``size`` bytes."""

    def __init__(self, payload: Readable | None, size: int, name: str) -> None:
        self._payload = payload
        self._left = size
        self._name = name

    def read(self, n: int = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        parts = []
        got = 0
        while got < want:
            block = self._payload.read(want - got) if self._payload is not None else b""
            if not block:
                raise FormatError(f"payload of {self._name!r} ends {self._left - got} bytes early")
            parts.append(block)
            got += len(block)
        self._left -= got
        return b"".join(parts)


def _add(tf: tarfile.TarFile, info: tarfile.TarInfo, item: Item, stats: TarStreamStats) -> None:
    try:
        if info.type == tarfile.REGTYPE:
            tf.addfile(info, _Exact(item.payload, info.size, info.name))
            stats.files += 1
            stats.payload_bytes += info.size
        else:
            tf.addfile(info)
    except ValueError as e:  # a name or number the chosen format cannot hold
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"cannot write {info.name!r} as a tar member: {e}") from e
    stats.entries += 1
