"""Tests of the catar encoder's C helpers against their pure-Python references.

The optional extension ``casync_format._chunker`` builds GOODBYE records
(``encode_goodbye``) and the FILENAME + ENTRY records of plain children
(``encode_child``); the archive bytes must not depend on whether it is
built, so each helper is compared with the Python code on hypothesis inputs.
"""

from __future__ import annotations

import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format import catar
from casync_format._catar_goodbye import encode_goodbye, encode_goodbye_c, encode_goodbye_py
from casync_format.catar import (
    CA_FORMAT_DEFAULT,
    CA_FORMAT_WITH_16BIT_UIDS,
    DESYNC_TAR_FLAGS,
    CatarWriter,
    Entry,
    normalize_feature_flags,
)
from casync_format.constants import CA_FORMAT_FILENAME
from casync_format.errors import FormatError

__all__: list[str] = []

U64 = (1 << 64) - 1


def _require(impl: object) -> None:
    if impl is None:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but casync_format._chunker lacks the catar helpers")
        pytest.skip("the C extension casync_format._chunker is not built")


def test_prefers_c_when_built():
    assert encode_goodbye is (encode_goodbye_c or encode_goodbye_py)


@st.composite
def _goodbye_case(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], int, int]:
    entry_offset = draw(st.integers(0, 1 << 40))
    offset = entry_offset + 64
    children = []
    for _ in range(draw(st.integers(0, 70))):
        size = draw(st.integers(1, 1 << 20))
        children.append((draw(st.integers(0, U64)), offset, offset + size))
        offset += size
    if children and draw(st.booleans()):  # names with equal hashes
        children.append((children[0][0], offset, offset + 100))
        offset += 100
    return children, offset, entry_offset


@settings(max_examples=300, deadline=None)
@given(case=_goodbye_case())
def test_goodbye_c_equals_python(case):
    _require(encode_goodbye_c)
    children, goodbye_offset, entry_offset = case
    assert encode_goodbye_c(children, goodbye_offset, entry_offset) == encode_goodbye_py(  # type: ignore[misc]
        children, goodbye_offset, entry_offset
    )


@pytest.mark.parametrize("count", [0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 100, 1000])
def test_goodbye_c_equals_python_sizes(count):
    _require(encode_goodbye_c)
    children = [((i * 0x9E3779B97F4A7C15) & U64, 100 + 10 * i, 110 + 10 * i) for i in range(count)]
    goodbye_offset = 100 + 10 * count
    assert encode_goodbye_c(children, goodbye_offset, 7) == encode_goodbye_py(  # type: ignore[misc]
        children, goodbye_offset, 7
    )


def test_goodbye_c_refuses_garbage():
    _require(encode_goodbye_c)
    with pytest.raises(TypeError):
        encode_goodbye_c([(1, 2)], 10, 0)  # type: ignore[list-item, misc]
    with pytest.raises(ValueError):
        encode_goodbye_c([(1, 20, 30)], 10, 0)  # type: ignore[misc]


_NAMES = st.one_of(
    st.binary(min_size=1, max_size=20),
    st.sampled_from([b".", b"..", b"a/b", b"a\0b", b"x" * 255, b"x" * 256, b"", b"\xff\n"]),
)
_OWNER = st.one_of(
    st.integers(0, 70000), st.sampled_from([0xFFFF, 0xFFFFFFFF, 0xFFFFFFFE, 1 << 32, -1])
)
_KINDS = [stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, 0o110000]


@st.composite
def _entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(_KINDS))
    entry = Entry(
        draw(_NAMES),
        kind | draw(st.integers(0, 0o7777)),
        draw(_OWNER),
        draw(_OWNER),
        draw(st.integers(-(1 << 63), 1 << 64)),
        draw(st.integers(-5, 1 << 40)),
        size=draw(st.integers(-2, 1 << 62)),
    )
    if kind == stat.S_IFLNK:
        entry.target = b"target"
    extra = draw(st.sampled_from(["", "xattrs", "user", "selinux", "fcaps", "quota", "acl", "empty-xattrs"]))
    if extra == "xattrs":
        entry.xattrs = [(b"user.a", b"1")]
    elif extra == "user":
        entry.user = b"someone"
    elif extra == "selinux":
        entry.selinux = b"label"
    elif extra == "fcaps":
        entry.fcaps = b""
    elif extra == "quota":
        entry.quota_projid = 3
    elif extra == "acl":
        entry.acl = b"x"
    return entry


def _python_child(entry: Entry, flags: int) -> bytes:
    name = entry.name
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > 255:
        raise FormatError("bad name")
    head = (16 + len(name) + 1).to_bytes(8, "little") + CA_FORMAT_FILENAME.to_bytes(8, "little")
    return head + name + b"\0" + catar._encode_general(entry, flags)


FLAG_SETS = [DESYNC_TAR_FLAGS, CA_FORMAT_DEFAULT, normalize_feature_flags(0x1F22 | CA_FORMAT_WITH_16BIT_UIDS)]


@settings(max_examples=600, deadline=None)
@given(entry=_entries(), flags=st.sampled_from(FLAG_SETS))
def test_child_c_equals_python(entry, flags):
    _require(catar._ENCODE_CHILD_C)
    flags = normalize_feature_flags(flags)
    consts = catar._child_consts(catar._encoder(flags))
    if consts is None:
        return  # the writer does not use the C path for this feature set
    got = catar._ENCODE_CHILD_C(entry, consts)  # type: ignore[misc]
    try:
        want = _python_child(entry, flags)
    except Exception as exc:  # any Python failure (FormatError, struct.error)
        assert got is None, f"C encoded what Python refuses ({exc!r})"
        return
    assert got is None or got == want


@settings(max_examples=300, deadline=None)
@given(entry=_entries(), flags=st.sampled_from(FLAG_SETS))
def test_encoder_short_path_equals_general(entry, flags):
    flags = normalize_feature_flags(flags)
    try:
        want = catar._encode_general(entry, flags)
    except Exception as exc:  # compare failures too
        with pytest.raises(type(exc)):
            catar.encode_entry(entry, flags)
        return
    assert catar.encode_entry(entry, flags) == want


def test_writer_same_bytes_with_and_without_c(monkeypatch):
    def build() -> bytes:
        out: list[bytes] = []
        writer = CatarWriter(out.append, DESYNC_TAR_FLAGS)
        writer.begin(Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=5))
        for i in range(40):
            writer.add(Entry(b"f%03d" % i, stat.S_IFREG | 0o644, 1000, 1000, i, size=1), _One())
        writer.enter(Entry(b"sub", stat.S_IFDIR | 0o700, 2, 3, 4))
        writer.add(Entry(b"link", stat.S_IFLNK | 0o777, target=b"../f000"))
        writer.leave()
        writer.finish()
        return b"".join(out)

    fast = build()
    monkeypatch.setattr(catar, "_ENCODE_CHILD_C", None)
    monkeypatch.setattr(catar, "encode_goodbye", encode_goodbye_py)
    assert build() == fast


class _One:
    def read(self, size: int = -1) -> bytes:
        return b"x"
