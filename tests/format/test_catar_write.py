"""Tests of the catar encoder: siphash24, goodbye tables, entry records, CatarWriter.

The pieces are checked against published or derived facts (SipHash-2-4
reference vectors, casync's goodbye key and search-tree layout, the feature
flag normalization of caformat-util.c, the reductions caencoder.c applies
per feature set) and the writer's output is parsed back by a small
independent reader here, which checks every GOODBYE item and tail offset.
Hypothesis builds random in-memory trees. Misuse of the writer (order,
names, payload sizes, nesting) must raise FormatError. Byte equality with
casync for real trees is in tests/ops/test_tar.py.
"""

from __future__ import annotations

import io
import stat
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format._catar_exclude import ExcludeRules, glob_match, parse_exclude_file
from casync_format._catar_goodbye import GOODBYE_HASH_KEY, goodbye_hash, make_bst
from casync_format._siphash import siphash24
from casync_format.catar import (
    CA_FORMAT_DEFAULT,
    CA_FORMAT_WITH_16BIT_UIDS,
    CA_FORMAT_WITH_ACL,
    CA_FORMAT_WITH_FCAPS,
    CA_FORMAT_WITH_FLAG_NODUMP,
    CA_FORMAT_WITH_READ_ONLY,
    CA_FORMAT_WITH_SEC_TIME,
    CA_FORMAT_WITH_USEC_TIME,
    CA_FORMAT_WITH_USER_NAMES,
    DESYNC_TAR_FLAGS,
    CatarWriter,
    Entry,
    encode_entry,
    flags_from_chattr,
    normalize_feature_flags,
    xattr_name_stored,
)
from casync_format.constants import (
    CA_FORMAT_ENTRY,
    CA_FORMAT_EXCLUDE_NODUMP,
    CA_FORMAT_FILENAME,
    CA_FORMAT_GOODBYE,
    CA_FORMAT_GOODBYE_TAIL_MARKER,
    CA_FORMAT_PAYLOAD,
    CA_FORMAT_WITH_32BIT_UIDS,
    CA_FORMAT_WITH_NSEC_TIME,
    CA_FORMAT_WITH_PERMISSIONS,
    CA_FORMAT_WITH_SYMLINKS,
    CA_FORMAT_WITH_XATTRS,
)
from casync_format.errors import FormatError, ParameterError

DIR, REG, LNK, FIFO = stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFIFO
ENTRY = struct.Struct("<QQQQQQQQ")


def test_siphash24_reference_vectors():
    key = bytes(range(16))
    # From the SipHash paper's reference implementation (vectors.h), as little-endian ints.
    assert siphash24(b"", key) == 0x726FDB47DD0E0E31
    assert siphash24(bytes(range(8)), key) == 0x93F5F5799A932462
    assert siphash24(bytes(range(15)), key) == 0xA129CA6149BE45E5
    assert siphash24(bytes(range(63)), key) == 0x958A324CEB064572
    with pytest.raises(ValueError):
        siphash24(b"x", b"short")


def test_goodbye_hash_uses_casyncs_key():
    assert GOODBYE_HASH_KEY.hex() == "b3841d0f2b447485c12ec2d130ed3627"
    # Values read from a casync-made archive's goodbye table.
    assert goodbye_hash(b"a") == 5889118529924941741
    assert goodbye_hash(b"d") == 7726187115410013234
    assert goodbye_hash(b"l") == 11648471146397554698


@pytest.mark.parametrize(
    ("n", "layout"),
    [(0, []), (1, [0]), (2, [1, 0]), (3, [1, 0, 2]), (4, [2, 1, 3, 0]), (5, [3, 1, 4, 0, 2]),
     (6, [3, 1, 5, 0, 2, 4]), (7, [3, 1, 5, 0, 2, 4, 6]), (8, [4, 2, 6, 1, 3, 5, 7, 0])],
)
def test_make_bst_small_layouts(n, layout):
    assert [i for i, _s, _e in make_bst([(i, 0, 0) for i in range(n)])] == layout


def test_make_bst_is_a_complete_search_tree_for_every_size():
    for n in [*range(0, 300), 511, 512, 513, 1000, 4095, 4096, 4097]:
        out = [h for h, _s, _e in make_bst([(i, 0, 0) for i in range(n)])]
        assert sorted(out) == list(range(n))
        for i, value in enumerate(out):
            low, high = _subtree_bounds(out, i)
            assert low <= value <= high


def _subtree_bounds(out: list[int], i: int) -> tuple[int, int]:
    """Every left descendant of slot i must be smaller, every right one larger: check via parents."""
    low, high = -1, len(out)
    child = i
    while child > 0:
        parent = (child - 1) // 2
        if child == 2 * parent + 1:
            high = min(high, out[parent])
        else:
            low = max(low, out[parent])
        child = parent
    return low, high


def test_normalize_feature_flags_like_casync():
    assert normalize_feature_flags(DESYNC_TAR_FLAGS) == DESYNC_TAR_FLAGS
    assert normalize_feature_flags(CA_FORMAT_DEFAULT) == CA_FORMAT_DEFAULT == 0xB0000001FFEFFE26
    both = CA_FORMAT_WITH_16BIT_UIDS | CA_FORMAT_WITH_32BIT_UIDS
    assert normalize_feature_flags(both) == CA_FORMAT_WITH_32BIT_UIDS
    times = CA_FORMAT_WITH_NSEC_TIME | CA_FORMAT_WITH_USEC_TIME | CA_FORMAT_WITH_SEC_TIME
    assert normalize_feature_flags(times) == CA_FORMAT_WITH_NSEC_TIME
    assert normalize_feature_flags(CA_FORMAT_WITH_ACL) == (
        CA_FORMAT_WITH_ACL | CA_FORMAT_WITH_32BIT_UIDS | CA_FORMAT_WITH_USER_NAMES
    )
    perms = CA_FORMAT_WITH_PERMISSIONS | CA_FORMAT_WITH_READ_ONLY
    assert normalize_feature_flags(perms) == CA_FORMAT_WITH_PERMISSIONS
    nodump = CA_FORMAT_EXCLUDE_NODUMP | CA_FORMAT_WITH_FLAG_NODUMP
    assert normalize_feature_flags(nodump) == CA_FORMAT_EXCLUDE_NODUMP
    for bad in (1 << 40, -1):
        with pytest.raises(ParameterError):
            normalize_feature_flags(bad)


def _entry_fields(data: bytes) -> tuple[int, ...]:
    size, kind, flags, mode, chflags, uid, gid, mtime = ENTRY.unpack_from(data)
    assert (size, kind) == (64, CA_FORMAT_ENTRY)
    return flags, mode, chflags, uid, gid, mtime


def test_entry_reductions_per_feature_set():
    ns = 1_234_567_891_234
    entry = Entry(b"f", REG | 0o4751, uid=1000, gid=100, mtime_ns=ns)
    assert _entry_fields(encode_entry(entry, DESYNC_TAR_FLAGS))[1:] == (REG | 0o4751, 0, 1000, 100, ns)
    usec = _entry_fields(encode_entry(entry, CA_FORMAT_WITH_USEC_TIME))
    assert usec[1:] == (REG | 0o666, 0, 0, 0, ns - 234)
    assert _entry_fields(encode_entry(entry, CA_FORMAT_WITH_SEC_TIME))[5] == 1_234_000_000_000
    assert _entry_fields(encode_entry(entry, 0))[5] == 0
    readonly = Entry(b"r", DIR | 0o555)
    assert _entry_fields(encode_entry(readonly, CA_FORMAT_WITH_READ_ONLY))[1] == DIR | 0o555
    assert _entry_fields(encode_entry(Entry(b"w", DIR | 0o700), CA_FORMAT_WITH_READ_ONLY))[1] == DIR | 0o777
    link = Entry(b"l", LNK | 0o700, target=b"t")
    link_flags = CA_FORMAT_WITH_SYMLINKS | CA_FORMAT_WITH_PERMISSIONS
    assert _entry_fields(encode_entry(link, link_flags))[1] == LNK | 0o777
    negative = Entry(b"n", REG, mtime_ns=-1)
    assert _entry_fields(encode_entry(negative, CA_FORMAT_WITH_NSEC_TIME))[5] == (1 << 64) - 1


def test_entry_refuses_what_the_feature_set_cannot_carry():
    with pytest.raises(FormatError, match="uid 65535"):
        encode_entry(Entry(b"f", REG, uid=65535), CA_FORMAT_WITH_32BIT_UIDS)
    with pytest.raises(FormatError, match="gid 70000"):
        encode_entry(Entry(b"f", REG, gid=70000), CA_FORMAT_WITH_16BIT_UIDS)
    with pytest.raises(FormatError, match="not allowed"):
        encode_entry(Entry(b"p", FIFO), CA_FORMAT_WITH_SYMLINKS)
    with pytest.raises(FormatError, match="without a target"):
        encode_entry(Entry(b"l", LNK), CA_FORMAT_WITH_SYMLINKS)
    with pytest.raises(FormatError, match="unknown file type"):
        encode_entry(Entry(b"x", 0o644), DESYNC_TAR_FLAGS)


def test_xattrs_user_names_and_fcaps_records():
    entry = Entry(b"f", REG | 0o644, uid=7, user=b"alice", group=b"staff", fcaps=b"\x01\x02",
                  xattrs=[(b"user.z", b"1"), (b"security.selinux", b"x"), (b"trusted.a", b"\0"),
                          (b"user.", b"bad"), (b"user.a", b"")])
    data = encode_entry(entry, DESYNC_TAR_FLAGS | CA_FORMAT_WITH_USER_NAMES | CA_FORMAT_WITH_FCAPS)
    records = _records(data[64:])
    assert [body for _kind, body in records[:2]] == [b"alice\0", b"staff\0"]
    xattrs = [body for kind, body in records if kind == 0xB8157091F80BC486]
    assert xattrs == [b"trusted.a\0\0", b"user.a\0", b"user.z\0" + b"1"]
    assert records[-2][1] == b"\x01\x02" and records[-1] == (CA_FORMAT_PAYLOAD, b"")
    without = encode_entry(entry, DESYNC_TAR_FLAGS & ~CA_FORMAT_WITH_XATTRS)
    assert len(_records(without[64:])) == 1  # just the PAYLOAD header
    with pytest.raises(FormatError, match="duplicate xattr"):
        encode_entry(Entry(b"f", REG, xattrs=[(b"user.a", b"1"), (b"user.a", b"2")]), DESYNC_TAR_FLAGS)
    assert xattr_name_stored(b"user.x") and xattr_name_stored(b"trusted.x")
    refused = [b"user.", b".user", b"system.posix_acl_access", b"user." + b"x" * 300]
    assert not any(map(xattr_name_stored, refused))


def _records(data: bytes, with_payload: bool = False) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack_from("<QQ", data, pos)
        body_end = pos + (16 if kind == CA_FORMAT_PAYLOAD and not with_payload else size)
        out.append((kind, data[pos + 16 : body_end]))
        pos += 16 if kind == CA_FORMAT_PAYLOAD and not with_payload else size
    return out


def test_flags_from_chattr():
    assert flags_from_chattr(0x40) == CA_FORMAT_WITH_FLAG_NODUMP
    assert flags_from_chattr(0) == 0


def _parse(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """An independent reader: (path, mode, payload) per object; checks every GOODBYE."""
    out: list[tuple[bytes, int, bytes]] = []
    pos = _parse_node(data, 0, b"", out)
    assert pos == len(data)
    return out


def _parse_node(data: bytes, pos: int, path: bytes, out: list) -> int:
    entry_at = pos
    mode = _entry_fields(data[pos:])[1]
    pos += 64
    payload = b""
    while pos < len(data):
        size, kind = struct.unpack_from("<QQ", data, pos)
        if kind in (CA_FORMAT_FILENAME, CA_FORMAT_GOODBYE):
            break
        if kind == CA_FORMAT_PAYLOAD:
            payload = data[pos + 16 : pos + size]
        pos += size
        if kind in (CA_FORMAT_PAYLOAD, 0x664A6FB6830E0D6C, 0xAC3DACE369DFE643):  # PAYLOAD, SYMLINK, DEVICE
            break
    out.append((path, mode, payload))
    if not stat.S_ISDIR(mode):
        return pos
    children = []
    last = None
    while True:
        size, kind = struct.unpack_from("<QQ", data, pos)
        if kind == CA_FORMAT_GOODBYE:
            break
        name = data[pos + 16 : pos + size - 1]
        assert last is None or name > last
        last = name
        start = pos
        pos = _parse_node(data, pos + size, (path + b"/" if path else b"") + name, out)
        children.append((goodbye_hash(name), start, pos))
    goodbye_at = pos
    size = struct.unpack_from("<Q", data, pos)[0]
    items = [struct.unpack_from("<QQQ", data, pos + 16 + 24 * i) for i in range(len(children) + 1)]
    assert size == 16 + 24 * (len(children) + 1)
    tail = items.pop()
    assert tail == (goodbye_at - entry_at, size, CA_FORMAT_GOODBYE_TAIL_MARKER)
    expected = make_bst(sorted(children))
    assert items == [(goodbye_at - s, e - s, h) for h, s, e in expected]
    return pos + size


def _write(tree_ops, flags=DESYNC_TAR_FLAGS) -> bytes:
    buf = io.BytesIO()
    writer = CatarWriter(buf.write, flags)
    for op, *args in tree_ops:
        getattr(writer, op)(*args)
    assert writer.offset == len(buf.getvalue())
    return buf.getvalue()


def test_writer_output_parses_with_correct_goodbye_tables():
    data = _write([
        ("begin", Entry(b"", DIR | 0o755)),
        ("add", Entry(b"a", REG | 0o644, size=3), io.BytesIO(b"abc")),
        ("enter", Entry(b"b", DIR | 0o700)),
        ("add", Entry(b"big", REG | 0o600, size=3 << 20), io.BytesIO(bytes(3 << 20))),
        ("enter", Entry(b"empty", DIR | 0o755)),
        ("leave",),
        ("add", Entry(b"link", LNK, target=b"../a")),
        ("leave",),
        ("add", Entry(b"c", FIFO | 0o600)),
        ("finish",),
    ])
    parsed = _parse(data)
    assert [p for p, _m, _d in parsed] == [b"", b"a", b"b", b"b/big", b"b/empty", b"b/link", b"c"]
    assert parsed[1][2] == b"abc" and len(parsed[3][2]) == 3 << 20


_ROOT = ("begin", Entry(b"", DIR))


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        ([("enter", Entry(b"d", DIR))], "no open directory"),
        ([("begin", Entry(b"", REG))], "must be a directory"),
        ([("begin", Entry(b"", DIR)), ("begin", Entry(b"", DIR))], "twice"),
        ([_ROOT, ("add", Entry(b"b", FIFO)), ("add", Entry(b"a", FIFO))], "out of order"),
        ([_ROOT, ("add", Entry(b"a", FIFO)), ("add", Entry(b"a", FIFO))], "duplicate"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"a/b", FIFO))], "invalid file name"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"..", FIFO))], "invalid file name"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"", FIFO))], "invalid file name"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"a\0", FIFO))], "invalid file name"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"x" * 256, FIFO))], "longer than 255"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"d", DIR))], "use enter"),
        ([("begin", Entry(b"", DIR)), ("enter", Entry(b"f", REG))], "needs a directory"),
        ([("begin", Entry(b"", DIR)), ("leave",)], "without a matching"),
        ([("begin", Entry(b"", DIR)), ("enter", Entry(b"d", DIR)), ("finish",)], "still open"),
        ([("begin", Entry(b"", DIR)), ("finish",), ("add", Entry(b"a", FIFO))], "no open directory"),
        ([_ROOT, ("add", Entry(b"f", REG, size=5), io.BytesIO(b"abc"))], "2 bytes early"),
        ([("begin", Entry(b"", DIR)), ("add", Entry(b"f", REG, size=5))], "no payload"),
        ([_ROOT, ("add", Entry(b"f", REG, size=200_000), io.BytesIO(bytes(10)))], "early"),
    ],
)
def test_writer_refuses_misuse(ops, message):
    with pytest.raises(FormatError, match=message):
        _write(ops)


def test_writer_reads_only_the_declared_payload():
    source = io.BytesIO(b"0123456789")
    data = _write([("begin", Entry(b"", DIR)), ("add", Entry(b"f", REG, size=4), source), ("finish",)])
    assert _parse(data)[1][2] == b"0123" and source.tell() == 4


def test_writer_order_is_bytewise_like_strcmp():
    names = [b"A", b"B", b"a", b"a-", b"a.b", b"ab", b"\x7f", b"\x80", b"\xff"]
    ops = [("begin", Entry(b"", DIR)), *[("add", Entry(n, FIFO)) for n in names], ("finish",)]
    assert [p for p, _m, _d in _parse(_write(ops))][1:] == names


def test_writer_handles_deep_nesting_iteratively():
    depth = 5000  # deeper than Python's recursion limit: the writer keeps an explicit stack
    ops = [("begin", Entry(b"", DIR))]
    ops += [("enter", Entry(b"d", DIR))] * depth + [("leave",)] * depth + [("finish",)]
    data = _write(ops)
    per_level = 18 + 64 + 64  # FILENAME, ENTRY, and a GOODBYE with one item
    assert len(data) == 64 + 64 + depth * per_level - 24  # the innermost GOODBYE has no item
    assert struct.unpack_from("<Q", data, len(data) - 8)[0] == CA_FORMAT_GOODBYE_TAIL_MARKER


_NAME = st.binary(min_size=1, max_size=8).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..")
)


@st.composite
def _tree_ops(draw, depth=0):
    ops = []
    for name in sorted(draw(st.sets(_NAME, max_size=7 if depth < 3 else 2))):
        kind = draw(st.sampled_from(["dir", "file", "link", "fifo"] if depth < 4 else ["file"]))
        if kind == "dir":
            ops.append(("enter", Entry(name, DIR | 0o755)))
            ops += draw(_tree_ops(depth + 1))
            ops.append(("leave",))
        elif kind == "file":
            data = draw(st.binary(max_size=100))
            ops.append(("add", Entry(name, REG | 0o644, size=len(data)), io.BytesIO(data)))
        elif kind == "link":
            ops.append(("add", Entry(name, LNK, target=draw(_NAME))))
        else:
            ops.append(("add", Entry(name, FIFO | 0o600)))
    return ops


@given(_tree_ops())
def test_random_trees_parse_back(ops):
    data = _write([("begin", Entry(b"", DIR | 0o755)), *ops, ("finish",)])
    parsed = _parse(data)
    expected_paths = [b""]
    stack: list[bytes] = []
    for op, *args in ops:
        if op == "leave":
            stack.pop()
            continue
        expected_paths.append(b"/".join([*stack, args[0].name]))
        if op == "enter":
            stack.append(args[0].name)
    assert [p for p, _m, _d in parsed] == expected_paths


def test_exclude_rules_semantics():
    rules = ExcludeRules().with_file(b"*.o\n!keep.o\n/top\nbuild/\nsrc/gen\n  # comment\n\n")
    assert rules.test(b"x.o", False)[0] and not rules.test(b"keep.o", False)[0]
    assert rules.test(b"top", False)[0] and rules.test(b"build", True)[0]
    assert not rules.test(b"build", False)[0]
    assert not rules.test(b".x.o", False)[0]  # FNM_PERIOD: * does not match a leading dot
    excluded, inside_src = rules.test(b"src", True)
    assert not excluded
    assert inside_src.test(b"gen", False)[0] and inside_src.test(b"y.o", False)[0]
    assert not inside_src.test(b"top", False)[0]  # anchored rules apply only where they were written
    _excluded, inside_other = rules.test(b"other", True)
    assert not inside_other.test(b"gen", False)[0]
    for bad in (b"a/../b", b"./a", b"!", b"/"):
        with pytest.raises(FormatError):
            parse_exclude_file(bad)
    assert glob_match(b"[a-c]?", b"b1") and not glob_match(b"[!a-c]?", b"b1")


# --------------------------------------------------------------------------- the payload hook


def _hook_tree(writer: CatarWriter) -> None:
    writer.begin(Entry(b"", DIR | 0o755))
    writer.add(Entry(b"big", REG | 0o644, size=200_000), io.BytesIO((bytes(range(256)) * 800)[:200_000]))
    writer.add(Entry(b"edge", REG | 0o644, size=65536), io.BytesIO(b"e" * 65536))
    writer.add(Entry(b"just", REG | 0o644, size=65537), io.BytesIO(b"j" * 65537))
    writer.add(Entry(b"small", REG | 0o644, size=3), io.BytesIO(b"abc"))
    writer.finish()


def test_copy_payload_hook_gets_large_payloads_only():
    from casync_format.catar import SMALL_PAYLOAD

    seen: list[tuple[bytes, int]] = []

    class Recording(CatarWriter):
        def copy_payload(self, entry, payload, size):
            seen.append((entry.name, size))
            half = size // 2  # the default may be called for parts, in order
            super().copy_payload(entry, payload, half)
            super().copy_payload(entry, payload, size - half)

    plain, hooked = io.BytesIO(), io.BytesIO()
    _hook_tree(CatarWriter(plain.write, DESYNC_TAR_FLAGS))
    writer = Recording(hooked.write, DESYNC_TAR_FLAGS)
    _hook_tree(writer)
    assert SMALL_PAYLOAD == 65536
    assert seen == [(b"big", 200_000), (b"just", 65537)]
    assert hooked.getvalue() == plain.getvalue() and writer.offset == len(plain.getvalue())


def test_copy_payload_hook_may_write_around_the_writer():
    # A hook that moves the bytes itself (as tar's sendfile copy does) only has to count them in offset.
    out = io.BytesIO()

    class Around(CatarWriter):
        def copy_payload(self, entry, payload, size):
            out.write(self.read_payload(entry, payload, size))
            self.offset += size

    plain = io.BytesIO()
    _hook_tree(CatarWriter(plain.write, DESYNC_TAR_FLAGS))
    writer = Around(out.write, DESYNC_TAR_FLAGS)
    _hook_tree(writer)
    assert out.getvalue() == plain.getvalue() and writer.offset == len(plain.getvalue())
    _parse(out.getvalue())  # the goodbye offsets account for the hook's bytes


class _Greedy:
    def read(self, size: int = -1) -> bytes:
        return b"z" * (size + 1)


def test_read_payload_and_payload_error():
    writer = CatarWriter(io.BytesIO().write, DESYNC_TAR_FLAGS)
    writer.begin(Entry(b"", DIR | 0o755))
    writer.enter(Entry(b"d", DIR | 0o755))
    entry = Entry(b"f", REG | 0o644, size=5)
    assert writer.read_payload(entry, io.BytesIO(b"12345678"), 5) == b"12345"
    with pytest.raises(FormatError, match=r"no payload for 'd/f' \(5 bytes\)"):
        writer.read_payload(entry, None, 5)
    with pytest.raises(FormatError, match="payload of 'd/f' ended 2 bytes early"):
        writer.read_payload(entry, io.BytesIO(b"abc"), 5)
    with pytest.raises(FormatError, match="payload of 'd/f' is too long"):
        writer.read_payload(entry, _Greedy(), 5)  # type: ignore[arg-type]
    error = writer.payload_error(entry, io.BytesIO(), 3)
    assert isinstance(error, FormatError) and "ended 3 bytes early" in str(error)
    big = Entry(b"g", REG | 0o644, size=100_000)
    with pytest.raises(FormatError, match="payload of 'd/g' ended 1 bytes early"):
        writer.add(big, io.BytesIO(b"x" * 99_999))  # through the default copy_payload


# --------------------------------------------------------------------------- one ENTRY layout


_ARCHIVED_CASES = [
    Entry(b"f", REG | 0o4755, 70000, 5, 5_999_999_999, 0xFFFF_FFFF, size=0),
    Entry(b"d", DIR | 0o1777, 1, 2, 1_234_567_891_234, 0xFFFF_FFFF_FFFF),
    Entry(b"l", LNK | 0o600, 3, 4, 999, 7, target=b"t"),
    Entry(b"p", FIFO | 0o640, 0, 0, 2_000_000_001),
]


@pytest.mark.parametrize(
    "flags",
    [DESYNC_TAR_FLAGS, CA_FORMAT_DEFAULT, normalize_feature_flags(0x1F22 | CA_FORMAT_WITH_SEC_TIME)],
    ids=["desync-tar", "casync-default", "sec-time"],
)
def test_archived_entry_is_what_the_decoder_reads(flags):
    from casync_format.catar import archived_entry
    from casync_format.catar_read import iter_catar

    flags = normalize_feature_flags(flags)
    buf = io.BytesIO()
    writer = CatarWriter(buf.write, flags)
    writer.begin(Entry(b"", DIR | 0o755))
    for entry in sorted(_ARCHIVED_CASES, key=lambda e: e.name):
        if stat.S_ISDIR(entry.mode):
            writer.enter(entry)
            writer.leave()
        else:
            writer.add(entry, io.BytesIO())
    writer.finish()
    decoded = {item.entry.name: item.entry for item in iter_catar(io.BytesIO(buf.getvalue()))
               if item.kind != "leave" and item.entry is not None and item.entry.name}
    for entry in _ARCHIVED_CASES:
        want = decoded[entry.name]
        got = archived_entry(entry, flags)
        assert (got.mode, got.flags, got.uid, got.gid, got.mtime_ns) == (
            want.mode, want.flags, want.uid, want.gid, want.mtime_ns
        )
        assert got.name == entry.name and got.size == entry.size and got.target == entry.target
