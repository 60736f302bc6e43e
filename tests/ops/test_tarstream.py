"""Tests of tar-stream conversions (casync_store.ops.tarstream).

Trees built here are packed by the real GNU ``tar`` (GNU, PAX, compressed,
sparse, hard links) and converted with :func:`tar_from_tarstream`; the result
must equal, byte for byte, the catar of the same tree made directly (our
``tar`` and casync's ``make`` with desync's feature set). The other way, a
catar goes through :func:`write_tarstream` and is unpacked and listed by the
real GNU tar, then compared with the source tree. Also: stdin/stdout through a
subprocess, the caidx variant, hostile tar members, and hypothesis round trips
(catar -> tar stream -> catar is the identity for PAX).
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format.catar_read import iter_catar
from casync_format.errors import FormatError, ParameterError
from casync_store.ops.tar import tar, tar_index
from casync_store.ops.tarstream import (
    read_tarstream,
    tar_from_tarstream,
    tar_index_from_tarstream,
    write_tarstream,
)
from casync_store.ops.untar import index_reader
from casync_store.stores.indexio import open_index
from tests.support import DESYNC_WITH, IS_ROOT, ROOT
from tests.support.tar_trees import GNU_TAR, build_tree, gnu_tar, set_times, snapshot

pytestmark = pytest.mark.skipif(GNU_TAR is None, reason="GNU tar is not installed")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _convert(tar_path: str, out: str, **kw: object) -> bytes:
    with open(tar_path, "rb") as src:
        tar_from_tarstream(src, out, **kw)  # type: ignore[arg-type]
    return _read(out)


@pytest.fixture
def tree(tmp_path) -> str:
    root = str(tmp_path / "tree")
    build_tree(root)
    return root


@pytest.fixture
def direct(tree: str, tmp_path) -> bytes:
    """The catar of ``tree`` made directly by our ``tar``."""
    out = str(tmp_path / "direct.catar")
    tar(tree, out)
    return _read(out)


# -- tar stream -> catar --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", ["", "-z", "-j", "-J"])
def test_pax_stream_equals_direct_catar(tree: str, direct: bytes, tmp_path, compress: str) -> None:
    packed = str(tmp_path / "tree.tar")
    flags = [compress] if compress else []
    gnu_tar("--format=pax", "--xattrs", "--sparse", *flags, "-C", tree, "-cf", packed, ".")
    assert _convert(packed, str(tmp_path / "out.catar")) == direct


def test_pax_stream_equals_casync(tree: str, tmp_path, run_casync) -> None:
    ref = str(tmp_path / "casync.catar")
    run_casync("make", *DESYNC_WITH, ref, tree)
    packed = str(tmp_path / "tree.tar")
    gnu_tar("--format=pax", "--xattrs", "-C", tree, "-cf", packed, ".")
    assert _convert(packed, str(tmp_path / "out.catar")) == _read(ref)


def test_gnu_stream_equals_direct_catar(tmp_path) -> None:
    tree = str(tmp_path / "tree")
    build_tree(tree, whole_seconds=True, xattrs=False)  # what the GNU format carries
    direct = str(tmp_path / "direct.catar")
    tar(tree, direct)
    packed = str(tmp_path / "tree.tar")
    gnu_tar("--format=gnu", "--sparse", "-C", tree, "-cf", packed, ".")
    assert _convert(packed, str(tmp_path / "out.catar")) == _read(direct)


def test_ustar_and_v7_names(tmp_path) -> None:
    tree = str(tmp_path / "tree")
    os.makedirs(os.path.join(tree, "d"))
    with open(os.path.join(tree, "d", "f"), "wb") as f:
        f.write(b"x" * 1000)
    set_times(tree, whole_seconds=True)
    direct = str(tmp_path / "direct.catar")
    tar(tree, direct)
    for fmt in ("ustar", "v7"):
        packed = str(tmp_path / f"{fmt}.tar")
        gnu_tar(f"--format={fmt}", "-C", tree, "-cf", packed, ".")
        assert _convert(packed, str(tmp_path / f"{fmt}.catar")) == _read(direct)


def test_top_level_directory_is_the_root(tree: str, direct: bytes, tmp_path) -> None:
    """``tar -cf x.tar tree`` (members ``tree/...``): the single top directory is the root."""
    packed = str(tmp_path / "named.tar")
    gnu_tar("--format=pax", "--xattrs", "-C", os.path.dirname(tree), "-cf", packed, "tree")
    assert _convert(packed, str(tmp_path / "out.catar")) == direct


def test_add_root_wraps_members(tree: str, direct: bytes, tmp_path) -> None:
    packed = str(tmp_path / "named.tar")
    gnu_tar("--format=pax", "--xattrs", "-C", os.path.dirname(tree), "-cf", packed, "tree")
    out = str(tmp_path / "out.catar")
    with open(packed, "rb") as src:
        tar_from_tarstream(src, out, add_root=True)
    with open(out, "rb") as f:
        items = [(i.kind, i.path, i.entry) for i in iter_catar(f)]
    root = items[0][2]
    assert items[0][:2] == ("enter", b"")
    assert (root.mode, root.uid, root.gid, root.mtime_ns) == (stat.S_IFDIR | 0o755, 0, 0, 0)
    assert items[1][:2] == ("enter", b"tree")
    with io.BytesIO(direct) as f:
        expect = [(i.kind, i.path, i.entry) for i in iter_catar(f)]
    inner = [(k, p[5:], e) for k, p, e in items[1:-1]]
    for (k, p, e), (k2, p2, e2) in zip(inner, expect):
        assert (k, p) == (k2, p2)
        if e is not None:
            assert (e.mode, e.uid, e.gid, e.mtime_ns, e.size, e.xattrs) == (
                e2.mode, e2.uid, e2.gid, e2.mtime_ns, e2.size, e2.xattrs)
    assert len(inner) == len(expect)


def test_several_top_level_members_need_add_root(tree: str, tmp_path) -> None:
    packed = str(tmp_path / "loose.tar")
    gnu_tar("-C", tree, "-cf", packed, "a", "sub")
    with open(packed, "rb") as src, pytest.raises(FormatError, match="tar-add-root"):
        tar_from_tarstream(src, str(tmp_path / "no.catar"))
    assert not os.path.exists(tmp_path / "no.catar")
    out = str(tmp_path / "yes.catar")
    with open(packed, "rb") as src:
        stats = tar_from_tarstream(src, out, add_root=True)
    assert stats.files == 2 and stats.directories == 3
    with open(out, "rb") as f:
        paths = [i.path for i in iter_catar(f) if i.kind != "leave"]
    assert paths == [b"", b"a", b"sub", b"sub/big", b"sub/deeper"]


def test_index_from_tarstream_equals_tar_index(tree: str, tmp_path, local_store) -> None:
    packed = str(tmp_path / "tree.tar")
    gnu_tar("--format=pax", "--xattrs", "-C", tree, "-cf", packed, ".")
    ours, ref = str(tmp_path / "stream.caidx"), str(tmp_path / "direct.caidx")
    with open(packed, "rb") as src:
        stats = tar_index_from_tarstream(src, ours, local_store, concurrency=2)
    tar_index(tree, ref, None)
    assert _read(ours) == _read(ref)
    assert stats.chunks is not None and stats.chunks.chunks_total > 0
    direct = str(tmp_path / "direct.catar")
    tar(tree, direct)
    with open_index(ours) as index, index_reader(index, local_store) as stream:
        assert stream.read() == _read(direct)


def test_stdin_to_stdout(tree: str, direct: bytes, tmp_path) -> None:
    packed = gnu_tar("--format=pax", "--xattrs", "-C", tree, "-cf", "-", ".")
    code = (
        "import sys; from casync_store.ops.tarstream import tar_from_tarstream; "
        "tar_from_tarstream(sys.stdin.buffer, '-')"
    )
    out = subprocess.run([sys.executable, "-c", code], input=packed, cwd=ROOT, check=True,
                         capture_output=True).stdout
    assert out == direct


def test_no_time(tmp_path) -> None:
    tree = str(tmp_path / "tree")
    build_tree(tree, xattrs=False)
    packed = gnu_tar("--format=pax", "-C", tree, "-cf", "-", ".")
    out = str(tmp_path / "out.catar")
    tar_from_tarstream(io.BytesIO(packed), out, no_time=True)
    direct = str(tmp_path / "direct.catar")
    tar(tree, direct, no_time=True)
    assert _read(out) == _read(direct)


# -- hostile and odd members ----------------------------------------------------------------------


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple:
    return (name, kind, data, link)


def _tar_bytes(members: list[tuple], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = kind, link, 0o644, 1_000_000
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return buf.getvalue()


def _paths(data: bytes, tmp_path, **kw: object) -> dict[bytes, object]:
    out = str(tmp_path / "x.catar")
    tar_from_tarstream(io.BytesIO(data), out, **kw)  # type: ignore[arg-type]
    with open(out, "rb") as f:
        return {i.path: (i.entry, i.payload.read() if i.payload else None) for i in iter_catar(f) if i.entry}


@pytest.mark.parametrize(
    "members, message",
    [
        ([_member("../evil", data=b"x")], r"'\.\.'"),
        ([_member("./", tarfile.DIRTYPE), _member("a/../../evil")], r"'\.\.'"),
        ([_member("l", tarfile.SYMTYPE, link="/etc"), _member("l/passwd", data=b"x")], "not a directory"),
        ([_member("f", data=b"1"), _member("f/x", data=b"2")], "not a directory"),
        ([_member("d", tarfile.DIRTYPE), _member("d", data=b"x")], "replace a directory"),
        ([_member("h", tarfile.LNKTYPE, link="missing")], "not an earlier member"),
        ([_member("d", tarfile.DIRTYPE), _member("h", tarfile.LNKTYPE, link="d")], "directory"),
        ([_member("h", tarfile.LNKTYPE, link="../../etc/passwd")], r"'\.\.'"),
        ([_member(".", data=b"x")], "root must be a directory"),
        ([_member("n" * 256, data=b"x")], "longer than 255"),
    ],
)
def test_hostile_members_fail_cleanly(tmp_path, members: list, message: str) -> None:
    out = tmp_path / "bad.catar"
    with pytest.raises(FormatError, match=message):
        tar_from_tarstream(io.BytesIO(_tar_bytes(members)), str(out), add_root=True)
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_absolute_names_lose_their_slash(tmp_path) -> None:
    got = _paths(_tar_bytes([_member("/abs/x", data=b"data"), _member("//y", data=b"y")]), tmp_path,
                 add_root=True)
    assert set(got) == {b"", b"abs", b"abs/x", b"y"}
    assert got[b"abs/x"][1] == b"data"
    implied = got[b"abs"][0]
    assert (implied.mode, implied.mtime_ns, implied.uid) == (stat.S_IFDIR | 0o755, 0, 0)


def test_later_members_win_and_links_are_copies(tmp_path) -> None:
    members = [
        _member("f", data=b"first"),
        _member("f", data=b"second"),
        _member("h", tarfile.LNKTYPE, link="f"),
        _member("l", tarfile.SYMTYPE, link="/etc"),
        _member("l", tarfile.DIRTYPE),  # a directory replaces the symlink: nothing is followed
        _member("l/x", data=b"inside"),
        _member("./d/", tarfile.DIRTYPE),
        _member("d//./e", data=b"e"),
    ]
    got = _paths(_tar_bytes(members), tmp_path, add_root=True)
    assert got[b"f"][1] == b"second" and got[b"h"][1] == b"second"
    assert stat.S_ISDIR(got[b"l"][0].mode) and got[b"l/x"][1] == b"inside"
    assert got[b"d/e"][1] == b"e"


def test_truncated_and_garbage_streams(tree: str, tmp_path) -> None:
    packed = gnu_tar("--format=gnu", "-C", tree, "-cf", "-", ".")
    out = tmp_path / "bad.catar"
    inside_payload = packed.index(b"hello\n") + 3
    inside_header = packed.index(b"hello\n") + 512 + 100
    gzipped = gnu_tar("-C", tree, "-czf", "-", ".")
    garbage = [b"\x00garbage" * 100, b"BZh91AY&SY" + b"x" * 100, b"\xfd7zXZ\x00" + b"y" * 100, b""]
    for data in (packed[:inside_payload], packed[:inside_header], gzipped[:200], *garbage):
        with pytest.raises(FormatError):
            tar_from_tarstream(io.BytesIO(data), str(out))
        assert not out.exists()


def test_missing_end_marker_is_tolerated(tmp_path, caplog) -> None:
    data = _tar_bytes([_member("./", tarfile.DIRTYPE), _member("a", data=b"x")])
    end = 3 * tarfile.BLOCKSIZE  # two headers and one data block; the zero blocks are cut
    got = _paths(data[:end], tmp_path)
    assert set(got) == {b"", b"a"}
    assert "end-of-archive" in caplog.text


def test_member_types_outside_the_feature_flags_are_left_out(tmp_path) -> None:
    members = [_member("a", data=b"x"), _member("l", tarfile.SYMTYPE, link="a")]
    members.append(_member("p", tarfile.FIFOTYPE))
    with read_tarstream(io.BytesIO(_tar_bytes(members)), feature_flags=0x2 | 0x20 | 0x100) as tree:
        names = [e.entry.name for e in tree.events(add_root=True) if e.entry is not None]
        assert names == [b"", b"a"] and tree.stats.skipped == 2


# -- catar -> tar stream --------------------------------------------------------------------------


def _catar_items(path: str):
    f = open(path, "rb")  # noqa: SIM115 - closed by the caller through the generator
    try:
        yield from iter_catar(f)
    finally:
        f.close()


@pytest.mark.parametrize("fmt", ["gnu", "pax"])
def test_catar_to_tar_extracts_like_the_source(tmp_path, fmt: str) -> None:
    tree = str(tmp_path / "tree")
    build_tree(tree, socket=True)
    catar = str(tmp_path / "tree.catar")
    tar(tree, catar)
    packed = str(tmp_path / "out.tar")
    with open(packed, "wb") as out:
        stats = write_tarstream(_catar_items(catar), out, format=fmt)
    assert stats.skipped == 1  # the socket
    mtime = os.stat(tree).st_mtime_ns
    os.unlink(os.path.join(tree, "socket"))  # for the comparison (tar cannot carry it)
    os.utime(tree, ns=(mtime, mtime))
    dest = str(tmp_path / "dest")
    os.mkdir(dest)
    extra = ["--xattrs", "--xattrs-include=*"] if fmt == "pax" else []
    gnu_tar("-xpf", packed, "-C", dest, "--numeric-owner", *extra)
    pax = fmt == "pax"
    want = snapshot(tree, seconds=not pax, owners=IS_ROOT, xattrs=pax)
    assert snapshot(dest, seconds=not pax, owners=IS_ROOT, xattrs=pax) == want
    listing = gnu_tar("-tvf", packed, "--numeric-owner", "--quoting-style=escape").decode().splitlines()
    assert len(listing) == len(want) == stats.entries
    slash = "/" if pax else ""  # desync's GNU tar (and so ours) names directories without a slash
    assert listing[0].startswith("d") and listing[0].endswith(" ." + slash)
    assert any(line.endswith(" sub/deeper" + slash) for line in listing)
    assert any(line.endswith(" sp\\ ace") or line.endswith(" sp ace") for line in listing)


def test_write_to_stdout(tree: str, tmp_path) -> None:
    catar = str(tmp_path / "tree.catar")
    tar(tree, catar)
    code = (
        "import sys; from casync_format.catar_read import iter_catar; "
        "from casync_store.ops.tarstream import write_tarstream; "
        "write_tarstream(iter_catar(open(sys.argv[1], 'rb')), sys.stdout.buffer)"
    )
    packed = subprocess.run([sys.executable, "-c", code, catar], cwd=ROOT, check=True,
                            capture_output=True).stdout
    assert len(packed) % 512 == 0 and packed.endswith(bytes(1024))  # as desync: no 10 KiB record padding
    names = gnu_tar("-tf", "-", "--quoting-style=literal", input=packed).split(b"\n")
    assert b"." in names and b"sub/big" in names and b"deep" in names


def test_write_rejects_unknown_format_and_short_payload(tree: str, tmp_path) -> None:
    with pytest.raises(ParameterError):
        write_tarstream([], io.BytesIO(), format="zip")
    catar = str(tmp_path / "tree.catar")
    tar(tree, catar)
    data = _read(catar)
    cut = data.index(b"hello\n") + 2
    with pytest.raises(FormatError):
        write_tarstream(iter_catar(io.BytesIO(data[:cut])), io.BytesIO())


def test_gnu_round_trip_floors_mtimes(tmp_path) -> None:
    tree = str(tmp_path / "tree")
    os.mkdir(tree)
    with open(os.path.join(tree, "f"), "wb") as f:
        f.write(b"x")
    os.utime(os.path.join(tree, "f"), ns=(0, 1_999_999_999))
    os.utime(tree, ns=(0, 5_000_000_001))
    catar = str(tmp_path / "t.catar")
    tar(tree, catar)
    buf = io.BytesIO()
    write_tarstream(_catar_items(catar), buf, format="gnu")
    got = _paths(buf.getvalue(), tmp_path)
    assert got[b""][0].mtime_ns == 5_000_000_000 and got[b"f"][0].mtime_ns == 1_000_000_000


def test_payloads_stream_in_bounded_memory(tmp_path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    size = 24 << 20
    with open(tree / "big", "wb") as f:
        f.write(os.urandom(1 << 20) * (size >> 20))
    catar = str(tmp_path / "t.catar")
    tar(str(tree), catar)
    packed = str(tmp_path / "t.tar")
    tracemalloc.start()
    try:
        with open(packed, "wb") as out:
            write_tarstream(_catar_items(catar), out, format="pax")
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open(packed, "rb") as src:
            tar_from_tarstream(src, str(tmp_path / "again.catar"))
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _read(str(tmp_path / "again.catar")) == _read(catar)
    assert peak_write < 8 << 20 and peak_read < 8 << 20, (peak_write, peak_read)


# -- hypothesis: catar -> PAX stream -> catar is the identity -------------------------------------

_names = st.binary(min_size=1, max_size=12).filter(
    lambda n: b"/" not in n and b"\0" not in n and n not in (b".", b"..", b".caexclude")
)
_leaf = st.one_of(
    st.tuples(st.just("file"), st.binary(max_size=300), st.integers(0, 0o7777).map(lambda m: m | 0o400)),
    st.tuples(st.just("link"), st.binary(min_size=1, max_size=40).filter(lambda t: b"\0" not in t),
              st.just(0)),
    st.tuples(st.just("fifo"), st.just(b""), st.integers(0, 0o777).map(lambda m: m | 0o400)),
)
_trees = st.recursive(
    st.dictionaries(_names, _leaf, max_size=4),
    lambda kids: st.dictionaries(_names, st.one_of(_leaf, kids), max_size=4),
    max_leaves=12,
)


def _materialize(path: bytes, spec: dict, times: st.DataObject, whole_seconds: bool = False) -> None:
    os.mkdir(path)
    unit = 10**9 if whole_seconds else 1
    for name, node in spec.items():
        child = os.path.join(path, name)
        if isinstance(node, dict):
            _materialize(child, node, times, whole_seconds)
            continue
        kind, data, mode = node
        if kind == "file":
            with open(child, "wb") as f:
                f.write(data)
            os.chmod(child, mode)
        elif kind == "link":
            os.symlink(data, child)
        else:
            os.mkfifo(child, mode)
        ns = times.draw(st.integers(0, 2**62 // unit)) * unit
        os.utime(child, ns=(0, ns), follow_symlinks=False)
    os.utime(path, ns=(0, times.draw(st.integers(0, 2**62 // unit)) * unit))


@given(spec=_trees, data=st.data(), fmt=st.sampled_from(["pax", "gnu"]))
def test_round_trip_random_trees(spec: dict, data: st.DataObject, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(os.fsencode(tmp), b"tree")
        _materialize(tree, spec, data)
        catar = os.path.join(tmp, "t.catar")
        tar(tree, catar)
        buf = io.BytesIO()
        write_tarstream(_catar_items(catar), buf, format=fmt)
        again = os.path.join(tmp, "again.catar")
        tar_from_tarstream(io.BytesIO(buf.getvalue()), again)
        if fmt == "pax":
            assert _read(again) == _read(catar)
            return
        with open(catar, "rb") as a, open(again, "rb") as b:
            for x, y in zip(iter_catar(a), iter_catar(b)):
                assert (x.kind, x.path) == (y.kind, y.path)
                if x.entry is not None:
                    assert y.entry.mtime_ns == x.entry.mtime_ns // 10**9 * 10**9
                    assert y.entry.mode == x.entry.mode and y.entry.size == x.entry.size
                    assert (x.payload and x.payload.read()) == (y.payload and y.payload.read())


@given(st.lists(st.tuples(st.sampled_from(["", "/", "./", "../", "a/", "a/../", "b/"]),
                          st.sampled_from(["x", "y", "..", ".", "a"]),
                          st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE])),
                max_size=6))
def test_random_member_names_never_escape(members: list) -> None:
    data = _tar_bytes([(p + n, k, b"d", "x") for p, n, k in members])
    try:
        with read_tarstream(io.BytesIO(data)) as tree:
            events = list(tree.events(add_root=True))
    except FormatError:
        return
    for event in events:
        parts = event.path.split(b"/") if event.path else []
        assert all(p not in (b"", b".", b"..") for p in parts)


@settings(max_examples=25)
@given(spec=_trees, data=st.data(), fmt=st.sampled_from(["pax", "gnu"]))
def test_random_trees_through_gnu_tar(spec: dict, data: st.DataObject, fmt: str) -> None:
    """Real GNU tar packs a random tree; converting its stream equals archiving the tree."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(os.fsencode(tmp), b"tree")
        _materialize(tree, spec, data, whole_seconds=fmt == "gnu")
        catar = os.path.join(tmp, "t.catar")
        tar(tree, catar)
        packed = gnu_tar(f"--format={fmt}", "-C", os.fsdecode(tree), "-cf", "-", ".")
        again = os.path.join(tmp, "again.catar")
        tar_from_tarstream(io.BytesIO(packed), again)
        assert _read(again) == _read(catar)
