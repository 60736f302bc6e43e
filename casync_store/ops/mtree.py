"""Listings in mtree(5) format, as desync's ``mtree`` command prints them.

This module owns the ``mtree`` output: a header line ``#mtree v1.0``, then one
line per object in archive order (a directory before its contents, children in
casync's order). Paths are relative to the archive root, the root itself is
``.``, and every byte of a name that is a backslash, ``#``, a space, below 32
or above 126 is written as a backslash and three octal digits, so a hostile
name can neither split a line nor inject keywords. Each line carries
``type=``, ``mode=`` (the permission bits ``0777`` in four octal digits, as
desync's ``Mode.Perm()``), ``uid=``, ``gid=``, ``time=SECONDS.NANOSECONDS``,
plus ``size=`` and the payload digest (``sha512256digest=`` or
``sha256digest=``) for regular files and ``target=`` for symlinks; devices
are ``type=char`` / ``type=block`` without their numbers, as in desync. Two
deliberate departures from desync, both where its output is broken: the
nanoseconds are zero-padded on every line (desync pads them with spaces, except
on files, which splits the line into extra fields), and fifos and sockets are
listed as ``type=fifo`` / ``type=socket`` (desync's tar leaves them out and
its decoder takes them for directories; our archives carry them, as desync's
feature flags declare). Inputs are decoder items (a catar, or a caidx streamed
from a store) or a directory, walked like ``tar`` walks it. Lines are returned
without their newline; they are pure ASCII.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator

from casync_format.catar import DESYNC_TAR_FLAGS, Entry, archived_entry, normalize_feature_flags
from casync_format.catar_read import Item, Readable, Source, iter_catar
from casync_format.digest import SHA256, SHA512_256, Digest
from casync_format.errors import FormatError, ParameterError
from casync_format.index import Index

from ..stores.base import Store
from .tar import TreeEvent, walk_tree
from .untar import index_reader

__all__ = [
    "MTREE_HEADER", "mtree_escape", "mtree_line", "mtree_lines", "mtree_dir", "mtree_archive", "mtree_index",
]

MTREE_HEADER = "#mtree v1.0"

_BLOCK = 1 << 20
_I64 = 1 << 63
_KEYWORDS = {SHA512_256.name: ("sha512256digest", "sha512_256"), SHA256.name: ("sha256digest", "sha256")}
_TYPES = (
    (stat.S_ISDIR, "dir"),
    (stat.S_ISREG, "file"),
    (stat.S_ISLNK, "link"),
    (stat.S_ISCHR, "char"),
    (stat.S_ISBLK, "block"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
)
# Bytes written as-is: printable ASCII except space, '#' and backslash.
_PLAIN = frozenset(range(33, 127)) - {ord("#"), ord("\\")}


def mtree_escape(name: bytes) -> str:
    """Escape a path for an mtree line (``\\ooo`` for every unsafe byte)."""
    return "".join(chr(c) if c in _PLAIN else f"\\{c:03o}" for c in name)


def _digest_keyword(digest: Digest) -> tuple[str, str]:
    try:
        return _KEYWORDS[digest.name]
    except KeyError:
        raise ParameterError(f"unsupported mtree hash algorithm {digest.name!r}") from None


def _hash_payload(payload: Readable, size: int, hashlib_name: str, path: bytes) -> str:
    h = hashlib.new(hashlib_name)
    left = size
    while left > 0:
        block = payload.read(min(left, _BLOCK))
        if not block:
            break
        h.update(block)
        left -= len(block)
    if left:
        raise FormatError(f"payload of {path!r} ends {left} bytes early")
    return h.hexdigest()


def mtree_line(
    path: bytes, entry: Entry, payload: Readable | None = None, *, digest: Digest = SHA512_256
) -> str:
    """One mtree line (no newline) for ``entry`` at relative ``path`` (``b""`` = root).

    ``payload`` (regular files) is read to its end, ``entry.size`` bytes, to
    compute the digest keyword; ``digest`` picks the algorithm (desync's
    global ``--digest``).
    """
    kind = next((name for test, name in _TYPES if test(entry.mode)), None)
    if kind is None:
        raise FormatError(f"{path!r}: unknown file type in mode {entry.mode:o}")
    mtime = entry.mtime_ns - (1 << 64) if entry.mtime_ns >= _I64 else entry.mtime_ns  # Go's int64(mtime)
    secs, nsecs = divmod(mtime, 1_000_000_000)
    attrs = [mtree_escape(path) if path else ".", f"type={kind}", f"mode={entry.mode & 0o777:04o}"]
    if kind == "link":
        attrs.append(f"target={mtree_escape(entry.target or b'')}")
    attrs += [f"uid={entry.uid}", f"gid={entry.gid}"]
    if kind == "file":
        attrs.append(f"size={entry.size}")
    attrs.append(f"time={secs}.{nsecs:09d}")
    if kind == "file":
        keyword, hashlib_name = _digest_keyword(digest)
        if payload is None:
            raise FormatError(f"{path!r}: regular file without a payload")
        attrs.append(f"{keyword}={_hash_payload(payload, entry.size, hashlib_name, path)}")
    return " ".join(attrs)


def mtree_lines(items: Iterable[Item], *, digest: Digest = SHA512_256) -> Iterator[str]:
    """The mtree listing (header first, lines without newlines) of decoder items.

    ``items`` come from :func:`casync_format.catar_read.iter_catar` (a catar
    or a caidx's reassembled stream); ``leave`` items produce no line. An
    unsupported digest raises :class:`ParameterError` at once.
    """
    _digest_keyword(digest)
    return _item_lines(items, digest)


def _item_lines(items: Iterable[Item], digest: Digest) -> Iterator[str]:
    yield MTREE_HEADER
    for item in items:
        if item.kind != "leave" and item.entry is not None:
            yield mtree_line(item.path, item.entry, item.payload, digest=digest)


def mtree_dir(
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    digest: Digest = SHA512_256,
    feature_flags: int = DESYNC_TAR_FLAGS,
    one_file_system: bool = False,
) -> Iterator[str]:
    """The mtree listing of directory ``path``, as of the catar ``tar`` would make of it.

    The tree is walked by :func:`casync_store.ops.tar.walk_tree` with
    ``feature_flags`` (default: desync's tar flags), and each object's values
    are reduced as the encoder stores them, so the listing equals the one of
    the archive (desync also tars the directory into a pipe and lists that).
    A path that is not a directory raises :class:`ParameterError` at once.
    """
    flags = normalize_feature_flags(feature_flags)
    _digest_keyword(digest)
    if not os.path.isdir(path):
        raise ParameterError(f"{os.fsdecode(path)} is not a directory")
    return _dir_lines(walk_tree(path, flags, one_file_system), flags, digest)


def _dir_lines(events: Iterator[TreeEvent], flags: int, digest: Digest) -> Iterator[str]:
    yield MTREE_HEADER
    root: bytes | None = None
    try:
        for event in events:
            if event.kind == "leave" or event.entry is None:
                continue
            if root is None:
                root = event.path
            rel = event.path[len(root) + 1 :] if event.path != root else b""
            yield mtree_line(rel, archived_entry(event.entry, flags), event.payload, digest=digest)
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()  # releases the walk's directory fds when the listing stops early


def mtree_archive(source: Source, *, digest: Digest = SHA512_256) -> Iterator[str]:
    """The mtree listing of the catar read from ``source`` (a file or ``read(n)``)."""
    return mtree_lines(iter_catar(source), digest=digest)


def mtree_index(
    index: Index, store: Store, *, digest: Digest | None = None, concurrency: int | None = None
) -> Iterator[str]:
    """The mtree listing of a caidx's archive, chunks fetched from ``store``.

    ``digest`` defaults to the index's (desync requires its ``--digest`` to
    match the index).
    """
    with index_reader(index, store, concurrency) as stream:
        yield from mtree_lines(iter_catar(stream), digest=digest or index.digest)
