"""Catar archives for tests: crafted record by record, or written by CatarWriter from a tree spec.

Raw crafting (:func:`rec`, :func:`entry_rec`, the :class:`node` builders
:func:`d`, :func:`f`, :func:`sl`, and :func:`build`, which adds consistent
goodbye tables) makes archives the writer never would, such as the
:data:`HOSTILE` table of archives the decoder must refuse, each with the
message it must give. :data:`TREES` is a hypothesis strategy of nested tree
specs that :func:`write_tree` serializes with :class:`CatarWriter`.
:data:`GOLDEN` is casync's ``best`` archive in ``tests/data``; :data:`FCAPS`
a file capability value and :data:`MTIME` a base mtime in nanoseconds.
"""

from __future__ import annotations

import io
import os
import stat
import struct

from hypothesis import strategies as st

from casync_format._catar_goodbye import encode_goodbye, goodbye_hash
from casync_format.catar import CA_FORMAT_DEFAULT, DESYNC_TAR_FLAGS, CatarWriter, Entry
from casync_format.constants import (
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_USER,
    CA_FORMAT_XATTR,
)
from tests.support import DATA_DIR

__all__ = ["FCAPS", "MTIME", "GOLDEN", "HDR", "rec", "entry_rec", "node", "d", "f", "sl", "build",
           "NAMES", "LEAF", "TREES", "write_tree", "dir_entry", "HOSTILE"]  # fmt: skip

FCAPS = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)  # cap_net_raw+ep, VFS_CAP_REVISION_2
MTIME = 1_600_000_000_123_456_789
GOLDEN = os.path.join(DATA_DIR, "catar", "best-acl.catar")


HDR = struct.Struct("<QQ")


def rec(kind: int, body: bytes = b"") -> bytes:
    """One raw record."""
    return HDR.pack(16 + len(body), kind) + body


def entry_rec(mode: int, flags: int = DESYNC_TAR_FLAGS, uid: int = 0, gid: int = 0, mtime: int = 0) -> bytes:
    """A raw ENTRY record."""
    return struct.pack("<8Q", 64, CA_FORMAT_ENTRY, flags, mode, 0, uid, gid, mtime)


class node:
    """A raw archive node: ENTRY + ``body`` records (+ children for a directory)."""

    def __init__(
        self,
        name: bytes,
        mode: int,
        body: bytes = b"",
        children: list[node] | None = None,
        entry: bytes | None = None,
    ) -> None:
        self.name, self.mode, self.body, self.children, self.entry = name, mode, body, children, entry


def d(name: bytes, *children: node, mode: int = 0o755, meta: bytes = b"") -> node:
    """A directory node."""
    return node(name, stat.S_IFDIR | mode, meta, list(children))


def f(name: bytes, data: bytes = b"", mode: int = 0o644, meta: bytes = b"") -> node:
    """A regular file node."""
    return node(name, stat.S_IFREG | mode, meta + rec(CA_FORMAT_PAYLOAD, data))


def sl(name: bytes, target: bytes) -> node:
    """A symlink node."""
    return node(name, stat.S_IFLNK | 0o777, rec(CA_FORMAT_SYMLINK, target + b"\0"))


def build(*children: node, flags: int = DESYNC_TAR_FLAGS, root: node | None = None) -> bytes:
    """A raw archive of a root directory holding ``children`` (consistent goodbye tables)."""
    out = bytearray()

    def emit(n: node) -> None:
        entry_offset = len(out)
        out.extend(n.entry if n.entry is not None else entry_rec(n.mode, flags))
        out.extend(n.body)
        if n.children is not None:
            items = []
            for child in n.children:
                start = len(out)
                out.extend(rec(CA_FORMAT_FILENAME, child.name + b"\0"))
                emit(child)
                items.append((goodbye_hash(child.name), start, len(out)))
            out.extend(encode_goodbye(items, len(out), entry_offset))

    emit(root if root is not None else d(b"", *children))
    return bytes(out)


# -- trees written by CatarWriter --------------------------------------------------------------------

NAMES = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)
LEAF = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=300), st.sampled_from([0o644, 0o755, 0o4755, 0o600])),
    st.tuples(st.just("link"), st.binary(min_size=1, max_size=40).filter(lambda t: b"\0" not in t)),
    st.tuples(st.just("fifo")),
)
TREES = st.recursive(
    st.dictionaries(NAMES, LEAF, max_size=4),
    lambda children: st.dictionaries(NAMES, st.one_of(LEAF, children), max_size=4),
    max_leaves=25,
)


def write_tree(tree: dict, flags: int = DESYNC_TAR_FLAGS, mtime: int = 0) -> bytes:
    """Serialize a hypothesis tree with CatarWriter."""
    out = io.BytesIO()
    writer = CatarWriter(out.write, flags)
    writer.begin(Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=mtime))

    def walk(children: dict) -> None:
        for name in sorted(children):
            value = children[name]
            if isinstance(value, dict):
                writer.enter(Entry(name, stat.S_IFDIR | 0o750, mtime_ns=mtime))
                walk(value)
                writer.leave()
            elif value[0] == "file":
                data = value[1]
                writer.add(
                    Entry(name, stat.S_IFREG | value[2], size=len(data), mtime_ns=mtime), io.BytesIO(data)
                )
            elif value[0] == "link":
                writer.add(Entry(name, stat.S_IFLNK | 0o777, target=value[1], mtime_ns=mtime))
            else:
                writer.add(Entry(name, stat.S_IFIFO | 0o644, mtime_ns=mtime))

    walk(tree)
    writer.finish()
    return out.getvalue()


# -- hostile archives -------------------------------------------------------------------------------


def dir_entry(flags: int = DESYNC_TAR_FLAGS) -> bytes:
    return entry_rec(stat.S_IFDIR | 0o755, flags)


HOSTILE = {
    "dotdot": (lambda: build(f(b"..", b"x")), r"invalid name b'\.\.'"),
    "dot": (lambda: build(d(b".")), r"invalid name b'\.'"),
    "empty": (lambda: build(f(b"", b"x")), r"FILENAME record at byte \d+ has an invalid size 17"),
    "slash": (lambda: build(d(b"a"), f(b"a/b", b"x")), r"invalid name b'a/b'"),
    "absolute": (lambda: build(f(b"/etc", b"x")), r"invalid name b'/etc'"),
    "nul": (lambda: build(f(b"a\0b", b"x")), r"not one NUL-terminated string"),
    "duplicate": (lambda: build(f(b"a", b"1"), f(b"a", b"2")), r"duplicate name b'a'"),
    "symlink-then-dir": (
        lambda: build(sl(b"l", b"/etc"), d(b"l", f(b"passwd", b"x"))),
        r"duplicate name b'l'",
    ),
    "unordered": (lambda: build(f(b"b"), f(b"a")), r"out-of-order name b'a'"),
    "root-not-dir": (lambda: build(root=f(b"", b"x")), r"root .* is not a directory"),
    "payload-on-dir": (
        lambda: build(d(b"x", meta=rec(CA_FORMAT_PAYLOAD, b""))),
        r"PAYLOAD record .* of mode 0o40755",
    ),
    "symlink-on-file": (
        lambda: build(node(b"x", stat.S_IFREG | 0o644, rec(CA_FORMAT_SYMLINK, b"t\0"))),
        r"SYMLINK",
    ),
    "device-on-fifo": (
        lambda: build(node(b"x", stat.S_IFIFO | 0o644, rec(CA_FORMAT_DEVICE, bytes(16)))),
        r"DEVICE",
    ),
    "file-no-payload": (lambda: build(node(b"x", stat.S_IFREG | 0o644)), r"has no PAYLOAD record"),
    "link-no-target": (lambda: build(node(b"x", stat.S_IFLNK | 0o777)), r"has no SYMLINK record"),
    "device-no-numbers": (lambda: build(node(b"x", stat.S_IFCHR | 0o644)), r"has no DEVICE record"),
    "bad-mode": (lambda: build(node(b"x", 0o170644)), r"invalid mode"),
    "mode-extra-bits": (lambda: build(node(b"x", stat.S_IFIFO | 0o644 | 0o1000000)), r"invalid mode"),
    "owner-minus-one": (
        lambda: build(node(b"x", stat.S_IFIFO, entry=entry_rec(stat.S_IFIFO, uid=2**32 - 1))),
        r"invalid owner",
    ),
    "flags-differ": (
        lambda: build(node(b"x", stat.S_IFIFO, entry=entry_rec(stat.S_IFIFO, CA_FORMAT_DEFAULT))),
        r"feature flags 0x.* not the archive's",
    ),
    "unknown-flags": (
        lambda: build(root=node(b"", stat.S_IFDIR | 0o755, children=[], entry=dir_entry(1 << 40))),
        r"feature flags .* casync does not know",
    ),
    "meta-order": (
        lambda: build(f(b"x", meta=rec(CA_FORMAT_XATTR, b"user.a\0v") + rec(CA_FORMAT_USER, b"u\0"))),
        r"USER record at byte \d+ is out of order",
    ),
    "xattr-dup": (
        lambda: build(f(b"x", meta=rec(CA_FORMAT_XATTR, b"user.a\0v") * 2)),
        r"duplicated or out of order",
    ),
    "xattr-no-name": (lambda: build(f(b"x", meta=rec(CA_FORMAT_XATTR, b"\0value"))), r"no valid name"),
    "two-selinux": (
        lambda: build(f(b"x", meta=rec(CA_FORMAT_SELINUX, b"a\0") * 2)),
        r"SELINUX .* out of order",
    ),
    "unknown-record": (
        lambda: build(f(b"x", meta=rec(0x1234, b"??"))),
        r"unexpected unknown record 0x0*1234",
    ),
    "entry-in-dir": (lambda: dir_entry() + dir_entry(), r"unexpected ENTRY at byte 64"),
    "trailing": (
        lambda: build(f(b"x")) + b"junk",
        r"unexpected data after the end of the archive at byte \d+",
    ),
    "second-archive": (lambda: build(f(b"x")) * 2, r"unexpected data after the end"),
    "deep-goodbye": (
        lambda: dir_entry() + rec(CA_FORMAT_GOODBYE, bytes(48)),
        r"GOODBYE .* has size 64, expected 40",
    ),
    "device-number": (
        lambda: build(node(b"x", stat.S_IFCHR | 0o600, rec(CA_FORMAT_DEVICE, struct.pack("<QQ", 2**40, 1)))),
        r"invalid number",
    ),
}
