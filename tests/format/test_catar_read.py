"""Tests of the streaming catar decoder (casync_format.catar_read).

Archives come from the real casync (default ``best`` features and other
feature sets, ACLs set through their xattrs, fcaps, chattr flags), from
pycasync's CatarWriter (every record type, hypothesis round trips) and from
raw bytes crafted here (hostile names, duplicates, wrong records, truncation
at every byte, absurd sizes, damaged goodbye tables, bit flips). The tree
builders, snapshots and archive crafting come from tests.support.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import struct
import subprocess
import time
import tracemalloc
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casync_format.catar import (
    CA_FORMAT_DEFAULT,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_BEST,
    CA_FORMAT_WITH_FLAG_NOATIME,
    DESYNC_TAR_FLAGS,
    CatarWriter,
    Entry,
)
from casync_format.catar_read import Item, iter_catar
from casync_format.constants import (
    CA_FORMAT_ACL_USER,
    CA_FORMAT_DEVICE,
    CA_FORMAT_ENTRY,
    CA_FORMAT_FCAPS,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_QUOTA_PROJID,
    CA_FORMAT_SELINUX,
    CA_FORMAT_SYMLINK,
    CA_FORMAT_XATTR,
)
from casync_format.errors import FormatError
from tests.support import DESYNC_WITH
from tests.support.catar_build import (
    FCAPS,
    GOLDEN,
    HDR,
    HOSTILE,
    MTIME,
    TREES,
    build,
    d,
    dir_entry,
    entry_rec,
    f,
    node,
    rec,
    sl,
    write_tree,
)
from tests.support.trees import make_tree, snapshot_items, snapshot_tree

# -- decoding helper ------------------------------------------------------------------------------


def decode(data: object, **kwargs: object) -> list[Item]:
    """All items of an archive (bytes or a source), payloads read."""
    items = []
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    for item in iter_catar(source, **kwargs):  # type: ignore[arg-type]
        if item.payload is not None:
            item.payload.read()
        items.append(item)
    return items


def _casync_tree(tmp_path: os.PathLike[str], run_casync, *with_: str) -> tuple[str, bytes]:  # type: ignore[no-untyped-def]
    src = os.path.join(tmp_path, "src")
    make_tree(src)
    archive = os.path.join(tmp_path, "x.catar")
    run_casync("make", *with_, archive, src)
    with open(archive, "rb") as data:
        return src, data.read()


# -- archives made by casync -----------------------------------------------------------------------


def test_casync_default_features(tmp_path, run_casync) -> None:
    src, data = _casync_tree(tmp_path, run_casync)
    reader = iter_catar(io.BytesIO(data), check_hashes=True)
    items = list(_read_all(reader))
    assert reader.feature_flags == CA_FORMAT_DEFAULT
    assert snapshot_items(items) == snapshot_tree(src)
    paths = [item.path for item in items if item.kind != "leave"]
    for parent in {os.path.dirname(p) for p in paths}:  # children in casync's (strcmp) order
        children = [p for p in paths if os.path.dirname(p) == parent and p != parent]
        assert children == sorted(children)
    assert [i.kind for i in items].count("enter") == [i.kind for i in items].count("leave")
    assert items[0].kind == "enter" and items[-1] == Item("leave", b"", None, None)


def _read_all(items: Iterable[Item]) -> Iterator[Item]:
    for item in items:
        if item.payload is not None:
            content = item.payload.read()
            item = item._replace(payload=io.BytesIO(content))
        yield item


@pytest.mark.parametrize(
    ("with_", "flags"),
    [
        (DESYNC_WITH, DESYNC_TAR_FLAGS),
        (["--with=unix"], None),
        (["--with=fat"], None),
        (["--without=all"], None),
        (["--with=best", "--with=flag-nodump", "--exclude-nodump=no"], None),
    ],
)
def test_casync_feature_sets(tmp_path, run_casync, with_: list[str], flags: int | None) -> None:
    src, data = _casync_tree(tmp_path, run_casync, *with_)
    reader = iter_catar(io.BytesIO(data), check_hashes=True)
    items = list(_read_all(reader))
    if flags is not None:
        assert reader.feature_flags == flags
        assert snapshot_items(items, caps=False) == snapshot_tree(src, caps=False)
    on_disk = snapshot_tree(src)
    for item in items:  # every path exists; file contents survive any feature set
        assert item.path in on_disk
        if item.payload is not None:
            assert hashlib.sha256(item.payload.getvalue()).hexdigest() == on_disk[item.path][-1]


def _acl(entries: list[tuple[int, int, int]]) -> bytes:
    """A system.posix_acl_* xattr value (version 2, (tag, perm, id) entries)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def test_casync_acl_and_chattr(tmp_path, run_casync) -> None:
    src = os.path.join(tmp_path, "src")
    os.makedirs(os.path.join(src, "d"))
    with open(os.path.join(src, "f"), "wb") as out:
        out.write(b"x")
    any_id = 0xFFFFFFFF
    try:
        os.setxattr(
            os.path.join(src, "f"),
            "system.posix_acl_access",
            _acl(
                [(1, 6, any_id), (2, 4, 1234), (4, 4, any_id), (8, 6, 4321), (16, 6, any_id), (32, 4, any_id)]
            ),
        )
        os.setxattr(
            os.path.join(src, "d"),
            "system.posix_acl_default",
            _acl([(1, 7, any_id), (2, 5, 1234), (4, 5, any_id), (16, 7, any_id), (32, 5, any_id)]),
        )
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs here: {exc}")
    chattr = subprocess.run(["chattr", "+A", os.path.join(src, "f")], capture_output=True).returncode == 0
    archive = os.path.join(tmp_path, "x.catar")
    run_casync("make", archive, src)
    with open(archive, "rb") as data:
        items = {i.path: i for i in decode(data.read(), check_hashes=True) if i.entry}
    acl_f, acl_d = items[b"f"].entry.acl, items[b"d"].entry.acl
    assert acl_f is not None and acl_d is not None
    assert HDR.unpack_from(acl_f)[1] == CA_FORMAT_ACL_USER
    assert struct.pack("<Q", 1234) in acl_f and struct.pack("<Q", 4321) in acl_f
    if chattr:
        assert items[b"f"].entry.flags & CA_FORMAT_WITH_FLAG_NOATIME


def test_golden_best_archive() -> None:
    """A casync archive kept in the repository: ACLs, xattrs, fcaps, chattr flag, every file type."""
    with open(GOLDEN, "rb") as data:
        raw = data.read()
    items = {i.path: i for i in decode(raw, check_hashes=True) if i.entry}
    assert sorted(items) == [b"", b"acl", b"acl/file", b"caps", b"fifo", b"link", b"noatime"]
    assert items[b"acl"].entry.acl and items[b"acl/file"].entry.acl
    assert items[b"caps"].entry.fcaps == FCAPS
    assert items[b"noatime"].entry.flags == CA_FORMAT_WITH_FLAG_NOATIME
    assert items[b"acl/file"].entry.xattrs == [(b"user.k", b"v")]
    assert items[b"link"].entry.target == b"caps"
    assert all(i.entry.mtime_ns == MTIME for i in items.values())


def make_golden(path: str, run_casync) -> None:  # type: ignore[no-untyped-def]
    """How tests/data/catar/best-acl.catar was made (as root on ext4): ``make_golden(GOLDEN, run_casync)``."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src, "acl"))
        any_id = 0xFFFFFFFF
        with open(os.path.join(src, "acl", "file"), "wb") as out:
            out.write(b"acl")
        os.setxattr(os.path.join(src, "acl", "file"), "user.k", b"v")
        os.setxattr(
            os.path.join(src, "acl", "file"),
            "system.posix_acl_access",
            _acl([(1, 6, any_id), (2, 4, 1234), (4, 4, any_id), (16, 6, any_id), (32, 4, any_id)]),
        )
        os.setxattr(
            os.path.join(src, "acl"),
            "system.posix_acl_default",
            _acl([(1, 7, any_id), (4, 5, any_id), (8, 5, 4321), (16, 7, any_id), (32, 5, any_id)]),
        )
        with open(os.path.join(src, "caps"), "wb") as out:
            out.write(b"#!/bin/true\n")
        os.setxattr(os.path.join(src, "caps"), "security.capability", FCAPS)
        with open(os.path.join(src, "noatime"), "wb") as out:
            out.write(b"n")
        subprocess.run(["chattr", "+A", os.path.join(src, "noatime")], check=True)
        os.mkfifo(os.path.join(src, "fifo"))
        os.symlink("caps", os.path.join(src, "link"))
        for dirpath, dirnames, filenames in os.walk(src, topdown=False):
            for name in dirnames + filenames:
                os.utime(os.path.join(dirpath, name), ns=(MTIME, MTIME), follow_symlinks=False)
        os.utime(src, ns=(MTIME, MTIME))
        run_casync("make", path, src)


# -- archives made by pycasync's writer ------------------------------------------------------------


def test_writer_every_record_type() -> None:
    flags = CA_FORMAT_WITH_BEST
    acl = rec(CA_FORMAT_ACL_USER, struct.pack("<QQ", 1234, 4) + b"alice\0")
    out = io.BytesIO()
    writer = CatarWriter(out.write, flags)
    writer.begin(Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=5, quota_projid=7))
    writer.add(
        Entry(
            b"a",
            stat.S_IFREG | 0o4755,
            uid=1000,
            gid=100,
            user=b"alice",
            group=b"users",
            xattrs=[(b"user.x", b"1")],
            size=3,
            selinux=b"system_u:object_r:bin_t:s0",
            fcaps=FCAPS,
            quota_projid=9,
            acl=acl,
            flags=CA_FORMAT_WITH_FLAG_NOATIME,
        ),
        io.BytesIO(b"abc"),
    )
    writer.add(Entry(b"b", stat.S_IFCHR | 0o600, rdev=os.makedev(4, 5)))
    writer.add(Entry(b"c", stat.S_IFLNK | 0o777, target=b"a"))
    writer.finish()
    items = decode(out.getvalue(), check_hashes=True)
    root, a, b, c = (i.entry for i in items[:4])
    assert root.quota_projid == 7
    assert (a.user, a.group, a.selinux, a.fcaps, a.quota_projid, a.acl) == (
        b"alice",
        b"users",
        b"system_u:object_r:bin_t:s0",
        FCAPS,
        9,
        acl,
    )
    assert a.xattrs == [(b"user.x", b"1")] and a.flags == CA_FORMAT_WITH_FLAG_NOATIME and a.size == 3
    assert b.rdev == os.makedev(4, 5) and c.target == b"a"


def _expected(tree: dict, prefix: bytes = b"") -> Iterator[tuple]:
    for name in sorted(tree):
        path = prefix + b"/" + name if prefix else name
        value = tree[name]
        if isinstance(value, dict):
            yield ("enter", path, stat.S_IFDIR | 0o750, None)
            yield from _expected(value, path)
            yield ("leave", path, None, None)
        elif value[0] == "file":
            yield ("file", path, stat.S_IFREG | value[2], value[1])
        elif value[0] == "link":
            yield ("file", path, stat.S_IFLNK | 0o777, value[1])
        else:
            yield ("file", path, stat.S_IFIFO | 0o644, None)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(TREES)
def test_round_trip_with_writer(tree: dict) -> None:
    got = []
    for item in iter_catar(io.BytesIO(write_tree(tree)), check_hashes=True):
        e = item.entry
        if e is None:
            got.append((item.kind, item.path, None, None))
        elif item.payload is not None:
            got.append((item.kind, item.path, e.mode, item.payload.read()))
        else:
            got.append((item.kind, item.path, e.mode, e.target))
    assert got == [("enter", b"", stat.S_IFDIR | 0o755, None), *_expected(tree), ("leave", b"", None, None)]


# -- the payload reader and streaming --------------------------------------------------------------


def test_payload_partly_read_is_skipped() -> None:
    data = build(f(b"a", b"A" * 100_000), f(b"b", b"bbb"))
    items = iter_catar(io.BytesIO(data))
    next(items)
    first = next(items)
    assert first.payload.read(10) == b"A" * 10 and first.payload.remaining == 99_990
    second = next(items)
    assert second.payload.read() == b"bbb"
    with pytest.raises(ValueError):
        first.payload.read(1)
    buffer = bytearray(4)
    assert second.payload.readinto(buffer) == 0


@pytest.mark.parametrize("piece", [3, 1000, 1 << 20])
def test_payload_read_view_is_zero_copy_and_exact(piece: int) -> None:
    """``read_view`` hands out views of the decoder's buffer: same bytes as ``read``, never more."""
    big = bytes(range(256)) * 2000  # 512000 bytes: crosses reads of every size above
    data = build(f(b"a", big), f(b"b", b"tail"), f(b"c", b"skipped"))
    stream = io.BytesIO(data)
    items = iter_catar(lambda n: stream.read(min(n, piece)))
    next(items)
    first = next(items)
    got, views = bytearray(), []
    while True:
        view = first.payload.read_view(70_000)
        assert isinstance(view, memoryview) and len(view) <= 70_000
        if not view:
            break
        got += view
        views.append(view)
    assert bytes(got) == big and first.payload.remaining == 0
    second = next(items)
    assert bytes(second.payload.read_view(2)) == b"ta" and second.payload.read() == b"il"
    third = next(items)  # moving on invalidates the readers
    with pytest.raises(ValueError, match="read after the decoder moved on"):
        second.payload.read_view(1)
    assert second.payload.closed and not third.payload.closed
    assert [i.kind for i in items] == ["leave"]


def test_read_callable_source_and_short_reads() -> None:
    data = build(d(b"dir", f(b"x", b"12345")), sl(b"y", b"x"))
    stream = io.BytesIO(data)
    items = decode(lambda n: stream.read(min(n, 3)))
    assert [(i.kind, i.path) for i in items] == [
        ("enter", b""),
        ("enter", b"dir"),
        ("file", b"dir/x"),
        ("leave", b"dir"),
        ("file", b"y"),
        ("leave", b""),
    ]


def test_huge_payload_streams_in_bounded_memory() -> None:
    size = 300 * 1024 * 1024
    head = (
        entry_rec(stat.S_IFDIR | 0o755) + rec(CA_FORMAT_FILENAME, b"big\0") + entry_rec(stat.S_IFREG | 0o644)
    )
    pieces = iter([head, HDR.pack(16 + size, CA_FORMAT_PAYLOAD)])
    zeros = bytes(1 << 20)
    left = [size]

    def read(n: int) -> bytes:
        for piece in pieces:
            return piece
        if left[0]:
            chunk = zeros[: min(n, left[0])]
            left[0] -= len(chunk)
            return chunk
        return b""

    tracemalloc.start()
    try:
        items = iter_catar(read)
        next(items)
        big = next(items)
        assert big.entry.size == size
        with pytest.raises(FormatError, match=r"truncated at byte \d+"):
            next(items)  # skips the payload, then the archive ends
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


# -- hostile and damaged archives ------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_refused(case: str) -> None:
    make, message = HOSTILE[case]
    with pytest.raises(FormatError, match=message):
        decode(make())


ABSURD = 2**63


@pytest.mark.parametrize(
    "raw",
    [
        HDR.pack(ABSURD, CA_FORMAT_ENTRY) + bytes(48),
        dir_entry() + HDR.pack(ABSURD, CA_FORMAT_FILENAME) + b"a\0",
        dir_entry() + HDR.pack(ABSURD, CA_FORMAT_GOODBYE) + bytes(40),
        dir_entry() + HDR.pack(2**64 - 1, CA_FORMAT_GOODBYE),
        dir_entry()
        + rec(CA_FORMAT_FILENAME, b"a\0")
        + entry_rec(0o100644)
        + HDR.pack(ABSURD, CA_FORMAT_XATTR),
        dir_entry()
        + rec(CA_FORMAT_FILENAME, b"a\0")
        + entry_rec(0o100644)
        + HDR.pack(ABSURD, CA_FORMAT_FCAPS),
        dir_entry()
        + rec(CA_FORMAT_FILENAME, b"a\0")
        + entry_rec(0o120777)
        + HDR.pack(ABSURD, CA_FORMAT_SYMLINK),
        dir_entry()
        + rec(CA_FORMAT_FILENAME, b"a\0")
        + entry_rec(0o100644)
        + HDR.pack(2**64 - 1, CA_FORMAT_PAYLOAD),
        dir_entry() + HDR.pack(3, CA_FORMAT_FILENAME),
    ],
)
def test_absurd_sizes_fail_fast_in_bounded_memory(raw: bytes) -> None:
    tracemalloc.start()
    began = time.monotonic()
    try:
        with pytest.raises(FormatError, match=r"(invalid size|has size|truncated at byte)"):
            decode(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - began < 1
    assert peak < 4 * 1024 * 1024


def test_absurd_payload_in_the_middle_is_truncation() -> None:
    raw = (
        dir_entry()
        + rec(CA_FORMAT_FILENAME, b"a\0")
        + entry_rec(0o100644)
        + HDR.pack(2**62, CA_FORMAT_PAYLOAD)
    )
    with pytest.raises(
        FormatError, match=r"archive truncated at byte 165: PAYLOAD of a starting at byte 162"
    ):
        decode(raw + b"abc")


def _sample_archive() -> bytes:
    return build(
        d(b"dir", f(b"file", b"content" * 5, meta=rec(CA_FORMAT_XATTR, b"user.a\0v")), sl(b"link", b"file")),
        node(b"fifo", stat.S_IFIFO | 0o644),
        node(b"null", stat.S_IFCHR | 0o666, rec(CA_FORMAT_DEVICE, struct.pack("<QQ", 1, 3))),
        f(b"z", b""),
    )


def test_truncated_at_every_byte() -> None:
    data = _sample_archive()
    decode(data, check_hashes=True)
    for cut in range(len(data)):
        with pytest.raises(FormatError, match=r"truncated at byte \d+") as info:
            decode(data[:cut])
        assert f"at byte {cut}" in str(info.value) or cut == 0


@given(st.data())
def test_truncated_anywhere_in_a_casync_style_archive(data: st.DataObject) -> None:
    raw = write_tree({b"a": {b"b": ("file", b"x" * 999, 0o644), b"c": ("link", b"b")}, b"d": ("fifo",)})
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(FormatError, match=rf"truncated at byte {cut}\b"):
        decode(raw[:cut])


@given(st.data())
def test_corruption_is_format_error_or_harmless(data: st.DataObject) -> None:
    raw = bytearray(_sample_archive())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= 1 << data.draw(st.integers(0, 7))
    with contextlib.suppress(FormatError):
        decode(bytes(raw), check_hashes=data.draw(st.booleans()))


def _goodbye_of(data: bytes) -> int:
    """Offset of the root's GOODBYE record (the last record)."""
    tail_entry_offset = struct.unpack_from("<Q", data, len(data) - 24)[0]
    return tail_entry_offset


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (0, "out of bounds"),
        (1, "out of bounds"),
        (2, None),
        ("tail-offset", "bytes back to its ENTRY"),
        ("tail-size", "damaged tail"),
        ("marker", "damaged tail"),
        ("swap", "does not match"),
    ],
)
def test_damaged_goodbye_table(field: object, message: str | None) -> None:
    data = bytearray(build(f(b"a", b"1"), f(b"b", b"22")))
    start = _goodbye_of(bytes(data))
    first_item = start + 16
    if isinstance(field, int):
        struct.pack_into("<Q", data, first_item + 8 * field, 2**40 if field < 2 else 12345)
    elif field == "swap":
        a, b = data[first_item : first_item + 24], data[first_item + 24 : first_item + 48]
        sizes = struct.unpack_from("<QQQ", a), struct.unpack_from("<QQQ", b)
        struct.pack_into("<QQQ", data, first_item, sizes[0][0], sizes[1][1], sizes[0][2])
        struct.pack_into("<QQQ", data, first_item + 24, sizes[1][0], sizes[0][1], sizes[1][2])
    else:
        tail = len(data) - 24
        position = {"tail-offset": tail, "tail-size": tail + 8, "marker": tail + 16}[str(field)]
        struct.pack_into("<Q", data, position, struct.unpack_from("<Q", data, position)[0] + 8)
    if message is None:  # a wrong name hash is only seen with check_hashes
        decode(bytes(data))
        message = "does not match"
    with pytest.raises(FormatError, match=message):
        decode(bytes(data), check_hashes=True)


def test_depth_is_bounded() -> None:
    inner = f(b"leaf", b"x")
    for level in range(30):
        inner = d(b"d%d" % level, inner)
    data = build(inner)
    assert len(decode(data, max_depth=31)) == 1 + 30 * 2 + 1 + 1
    with pytest.raises(FormatError, match="nested deeper than 10"):
        decode(data, max_depth=10)


def test_quota_and_selinux_records_by_hand() -> None:
    meta = (
        rec(CA_FORMAT_SELINUX, b"label\0")
        + rec(CA_FORMAT_FCAPS, FCAPS)
        + rec(CA_FORMAT_QUOTA_PROJID, struct.pack("<Q", 42))
    )
    items = decode(build(f(b"x", b"1", meta=meta), flags=CA_FORMAT_DEFAULT | CA_FORMAT_WITH_ACL))
    entry = items[1].entry
    assert (entry.selinux, entry.fcaps, entry.quota_projid) == (b"label", FCAPS, 42)
