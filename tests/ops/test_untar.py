"""Tests of untar / untar_index / index_reader (casync_store.ops.untar).

Trees made by the tests (every file type, odd names, owners, modes, nsec
times, xattrs, fcaps; see ``make_tree`` in tests/support/trees.py) are archived by
the real casync (default ``best`` features and desync's feature set, as catar
and as caidx + store), extracted by pycasync and compared field by field with
the source (lstat, content, xattrs, symlink targets); casync extracts an
archive pycasync's writer made. Hostile archives and hostile targets (symlinks
already in place) must fail or be neutralised without touching anything
outside the target directory.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading

import pytest
from hypothesis import given, settings

from casync_format.catar import DESYNC_TAR_FLAGS, CatarWriter, Entry
from casync_format.constants import CA_FORMAT_DEVICE, CA_FORMAT_XATTR
from casync_format.errors import ChunkMissing, FormatError
from casync_format.index import Index
from casync_store import LocalStore
from casync_store.ops.untar import UntarStats, index_reader, untar, untar_index
from tests.support import DESYNC_WITH, IS_ROOT, ROOT
from tests.support.catar_build import (
    FCAPS,
    GOLDEN,
    HOSTILE,
    MTIME,
    TREES,
    build,
    d,
    f,
    node,
    rec,
    sl,
    write_tree,
)
from tests.support.trees import make_tree, snapshot_tree

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (owners, devices)")
NULL_DEVICE = node(b"null", stat.S_IFCHR | 0o666, rec(CA_FORMAT_DEVICE, struct.pack("<QQ", 1, 3)))


def _untar_bytes(data: bytes, target: str, **kwargs: bool) -> UntarStats:
    return untar(io.BytesIO(data), target, **kwargs)


def _casync_archive(tmp_path, run_casync, *args: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    src = os.path.join(tmp_path, "src")
    make_tree(src)
    archive = os.path.join(tmp_path, "x.catar")
    run_casync("make", *args, archive, src)
    return src, archive


def _outside(parent: str, target: str) -> dict[str, tuple]:
    """Everything below ``parent`` except ``target``: names, types, sizes, link targets."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(parent):
        if dirpath == parent and os.path.basename(target) in dirnames:
            dirnames.remove(os.path.basename(target))
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            link = os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None
            seen[path] = (st_.st_mode, st_.st_size, st_.st_mtime_ns, link)
    return seen


# -- archives made by casync -----------------------------------------------------------------------


def test_untar_casync_default_features(tmp_path, run_casync) -> None:
    src, archive = _casync_archive(tmp_path, run_casync)
    out = os.path.join(tmp_path, "out")
    with open(archive, "rb") as data:
        stats = untar(data, out)
    assert snapshot_tree(out) == snapshot_tree(src)
    assert stats.files >= 10 and stats.symlinks == 2 and stats.fifos == 1 and stats.sockets == 1
    assert stats.xattrs_skipped == 0


def test_untar_desync_feature_set(tmp_path, run_casync) -> None:
    src, archive = _casync_archive(tmp_path, run_casync, *DESYNC_WITH)
    out = os.path.join(tmp_path, "out")
    with open(archive, "rb") as data:
        untar(data, out)
    assert snapshot_tree(out, caps=False) == snapshot_tree(src, caps=False)


def test_untar_index_and_index_reader(tmp_path, run_casync, store_dir) -> None:
    src, archive = _casync_archive(tmp_path, run_casync)
    caidx = os.path.join(tmp_path, "x.caidx")
    run_casync("make", "--chunk-size=4096", f"--store={store_dir}", caidx, src)
    out = os.path.join(tmp_path, "out")
    store = LocalStore(store_dir)
    with open(caidx, "rb") as raw:
        index = Index(raw)
        assert index.count > 3
        stats = untar_index(index, store, out, concurrency=3)
        assert stats.chunks == index.count
        with index_reader(index, store, 2) as stream, open(archive, "rb") as catar:
            assert stream.read() == catar.read()  # the caidx describes casync's catar byte for byte
    assert snapshot_tree(out) == snapshot_tree(src)


def test_untar_index_missing_chunk_stops_cleanly(tmp_path, run_casync, store_dir) -> None:
    src = os.path.join(tmp_path, "src")
    make_tree(src, privileged=False)
    caidx = os.path.join(tmp_path, "x.caidx")
    run_casync("make", "--chunk-size=4096", f"--store={store_dir}", caidx, src)
    with open(caidx, "rb") as raw:
        index = Index(raw)
        victim = index[index.count // 2].id
    chunk = os.path.join(store_dir, victim.hex()[:4], victim.hex() + ".cacnk")
    os.unlink(chunk)
    threads = threading.active_count()
    with open(caidx, "rb") as raw, pytest.raises(ChunkMissing, match=victim.hex()):
        untar_index(Index(raw), LocalStore(store_dir), os.path.join(tmp_path, "out"), concurrency=4)
    assert threading.active_count() == threads


def test_untar_golden_best_archive_with_acls(tmp_path) -> None:
    """ACL, chattr and fcaps records of casync's ``best`` set never stop an extraction."""
    out = os.path.join(tmp_path, "out")
    with open(GOLDEN, "rb") as data:
        stats = untar(data, out)
    assert (stats.files, stats.fifos, stats.symlinks, stats.directories) == (3, 1, 1, 2)
    assert os.getxattr(os.path.join(out, "acl", "file"), "user.k") == b"v"
    assert os.readlink(os.path.join(out, "link")) == "caps"
    assert all(os.lstat(os.path.join(out, name)).st_mtime_ns == MTIME for name in ("", "acl", "link", "fifo"))
    if IS_ROOT:
        assert os.getxattr(os.path.join(out, "caps"), "security.capability") == FCAPS


# -- archives made by pycasync, extracted by casync and by us ---------------------------------------


def _entry(path: bytes, name: bytes) -> Entry:
    st_ = os.lstat(path)
    mode = st_.st_mode
    xattrs = []
    if not stat.S_ISLNK(mode):
        for key in os.listxattr(path, follow_symlinks=False):
            if key.startswith(("user.", "trusted.")):
                xattrs.append((key.encode(), os.getxattr(path, key, follow_symlinks=False)))
    return Entry(
        name,
        mode,
        st_.st_uid,
        st_.st_gid,
        st_.st_mtime_ns,
        xattrs=sorted(xattrs),
        size=st_.st_size if stat.S_ISREG(mode) else 0,
        target=os.readlink(path) if stat.S_ISLNK(mode) else None,
        rdev=st_.st_rdev if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else 0,
    )


def write_dir(src: str, flags: int = DESYNC_TAR_FLAGS) -> bytes:
    """A catar of ``src`` written with pycasync's CatarWriter (a minimal tree walk)."""
    out = io.BytesIO()
    writer = CatarWriter(out.write, flags)
    base = os.fsencode(src)
    writer.begin(_entry(base, b""))

    def walk(directory: bytes) -> None:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            entry = _entry(path, name)
            if stat.S_ISDIR(entry.mode):
                writer.enter(entry)
                walk(path)
                writer.leave()
            elif stat.S_ISREG(entry.mode):
                with open(path, "rb") as payload:
                    writer.add(entry, payload)
            else:
                writer.add(entry)

    walk(base)
    writer.finish()
    return out.getvalue()


def test_casync_extracts_our_archive(tmp_path, run_casync) -> None:
    src = os.path.join(tmp_path, "src")
    make_tree(src, long_name=237)
    archive = os.path.join(tmp_path, "ours.catar")
    with open(archive, "wb") as out:
        out.write(write_dir(src))
    by_casync, by_us = os.path.join(tmp_path, "casync"), os.path.join(tmp_path, "us")
    run_casync("extract", archive, by_casync)
    with open(archive, "rb") as data:
        untar(data, by_us)
    expected = snapshot_tree(src, caps=False)
    assert snapshot_tree(by_casync, caps=False) == expected
    assert snapshot_tree(by_us, caps=False) == expected


@settings(max_examples=25)
@given(TREES)
def test_round_trip_through_the_filesystem(tree: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first, second = os.path.join(tmp, "one"), os.path.join(tmp, "two")
        archive = write_tree(tree, mtime=1_500_000_000_987_654_321)
        _untar_bytes(archive, first)
        assert write_dir(first) == archive  # extract + re-archive reproduces the bytes
        _untar_bytes(archive, second, no_same_permissions=True)
        assert sorted(os.listdir(second)) == sorted(os.fsdecode(n) for n in tree)


def test_deep_nesting_and_no_descriptor_leaks(tmp_path) -> None:
    inner = f(b"bottom", b"deep")
    for level in range(150):  # beyond casync's 64 levels and the extractor's open-descriptor window
        inner = d(b"level%03d" % level, inner, mode=0o750)
    data = build(inner)
    before = len(os.listdir("/proc/self/fd"))
    out = os.path.join(tmp_path, "out")
    stats = _untar_bytes(data, out)
    assert len(os.listdir("/proc/self/fd")) == before
    assert stats.directories == 151
    path = os.path.join(out, *(f"level{level:03d}" for level in reversed(range(150))), "bottom")
    with open(path, "rb") as bottom:
        assert bottom.read() == b"deep"
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o750
    with pytest.raises(FormatError):
        _untar_bytes(data[:-100], os.path.join(tmp_path, "cut"))
    assert len(os.listdir("/proc/self/fd")) == before


# -- owners, permissions, attributes ---------------------------------------------------------------


def _owned_archive() -> bytes:
    out = io.BytesIO()
    writer = CatarWriter(out.write, DESYNC_TAR_FLAGS)
    writer.begin(Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=10**18))
    writer.enter(Entry(b"dir", stat.S_IFDIR | 0o2750, uid=1234, gid=4321, mtime_ns=10**18 + 1))
    writer.add(
        Entry(b"suid", stat.S_IFREG | 0o4755, uid=1234, gid=4321, size=2, mtime_ns=10**18 + 2),
        io.BytesIO(b"#!"),
    )
    writer.leave()
    writer.add(
        Entry(b"link", stat.S_IFLNK | 0o777, uid=1234, gid=4321, target=b"dir/suid", mtime_ns=10**18 + 3)
    )
    writer.finish()
    return out.getvalue()


@needs_root
def test_owners_and_setuid_restored_as_root(tmp_path) -> None:
    out = os.path.join(tmp_path, "out")
    _untar_bytes(_owned_archive(), out)
    suid = os.lstat(os.path.join(out, "dir", "suid"))
    assert (suid.st_uid, suid.st_gid, stat.S_IMODE(suid.st_mode)) == (1234, 4321, 0o4755)
    directory = os.lstat(os.path.join(out, "dir"))
    assert (directory.st_uid, stat.S_IMODE(directory.st_mode), directory.st_mtime_ns) == (
        1234,
        0o2750,
        10**18 + 1,
    )
    link = os.lstat(os.path.join(out, "link"))
    assert (link.st_uid, link.st_gid, link.st_mtime_ns) == (1234, 4321, 10**18 + 3)


def test_no_same_owner_and_no_same_permissions(tmp_path) -> None:
    out = os.path.join(tmp_path, "out")
    _untar_bytes(_owned_archive(), out, no_same_owner=True)
    suid = os.lstat(os.path.join(out, "dir", "suid"))
    assert (suid.st_uid, suid.st_gid) == (os.geteuid(), os.getegid())
    assert (
        stat.S_IMODE(suid.st_mode) == 0o4755 or not IS_ROOT
    )  # non-root may not set setgid for others' groups
    plain = os.path.join(tmp_path, "plain")
    _untar_bytes(_owned_archive(), plain, no_same_permissions=True, no_same_owner=True)
    umask = os.umask(0o22)
    os.umask(umask)
    assert stat.S_IMODE(os.lstat(os.path.join(plain, "dir", "suid")).st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.lstat(os.path.join(plain, "dir")).st_mode) == 0o777 & ~umask


def _acl(mask: int) -> bytes:
    """A raw ``system.posix_acl_*`` value: user::rwx, group:: and other:: from ``mask`` (0o0GO)."""
    entries = ((0x01, 7), (0x04, (mask >> 3) & 7), (0x20, mask & 7))
    body = b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF) for tag, perm in entries)
    return struct.pack("<I", 2) + body


@pytest.mark.parametrize("umask", [0o022, 0o077])
@pytest.mark.parametrize("default_acl", [False, True])
def test_modes_and_owners_exact_whatever_umask_and_acl(tmp_path, umask: int, default_acl: bool) -> None:
    """Files are created with their final mode only where that is sure; the result is always exact."""
    modes = (0o644, 0o600, 0o444, 0o755, 0o4755, 0o2755, 0o1644, 0o000, 0o777, 0o640)
    gid = 4321 if IS_ROOT else os.getegid()
    out = io.BytesIO()
    writer = CatarWriter(out.write, DESYNC_TAR_FLAGS)
    uid, egid = os.geteuid(), os.getegid()
    writer.begin(Entry(b"", stat.S_IFDIR | 0o755, uid=uid, gid=egid, mtime_ns=10**18))
    for dname, dmode, dgid in ((b"plain", 0o755, egid), (b"sgid", 0o2775, gid)):
        writer.enter(Entry(dname, stat.S_IFDIR | dmode, uid=uid, gid=dgid, mtime_ns=10**18))
        for i, mode in enumerate(modes):
            for j, owner in enumerate(((uid, egid), (uid, gid), (1234 if IS_ROOT else uid, dgid))):
                entry = Entry(f"f{i:02d}{j}".encode(), stat.S_IFREG | mode, uid=owner[0], gid=owner[1])
                entry.size, entry.mtime_ns = 1, 10**18 + i
                writer.add(entry, io.BytesIO(b"x"))
        writer.leave()
    writer.finish()
    target = os.path.join(tmp_path, "out")
    os.mkdir(target)
    if default_acl:
        try:
            os.setxattr(target, "system.posix_acl_default", _acl(0o000))
        except OSError as exc:
            pytest.skip(f"no default ACLs here: {exc.strerror}")
    old = os.umask(umask)
    try:
        untar(io.BytesIO(out.getvalue()), target)
    finally:
        os.umask(old)
    for dname, dgid in (("plain", egid), ("sgid", gid)):
        for i, mode in enumerate(modes):
            for j, owner in enumerate(((uid, egid), (uid, gid), (1234 if IS_ROOT else uid, dgid))):
                st_ = os.lstat(os.path.join(target, dname, f"f{i:02d}{j}"))
                assert (stat.S_IMODE(st_.st_mode), st_.st_mtime_ns) == (mode, 10**18 + i), (dname, i, j)
                if IS_ROOT:
                    assert (st_.st_uid, st_.st_gid) == owner, (dname, i, j)


def test_refused_xattrs_are_skipped(tmp_path) -> None:
    xattr = rec(CA_FORMAT_XATTR, b"user.k\0v")
    data = build(node(b"fifo", stat.S_IFIFO | 0o644, xattr), f(b"ok", b"x", meta=xattr), sl(b"sym", b"ok"))
    out = os.path.join(tmp_path, "out")
    stats = _untar_bytes(data, out)
    assert stats.xattrs_skipped == 1  # user.* is refused on a fifo by Linux
    assert os.getxattr(os.path.join(out, "ok"), "user.k") == b"v"


# -- hostile archives and hostile targets ----------------------------------------------------------


@pytest.fixture
def arena(tmp_path):  # type: ignore[no-untyped-def]
    """(parent, target, outside dir): a victim directory and file live next to the target."""
    parent = os.path.join(tmp_path, "parent")
    outside = os.path.join(parent, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "victim"), "wb") as victim:
        victim.write(b"precious")
    target = os.path.join(parent, "target")
    os.mkdir(target)
    return parent, target, outside


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archive_writes_nothing_outside(arena, case: str) -> None:
    parent, target, _ = arena
    before = _outside(parent, target)
    with pytest.raises(FormatError):
        _untar_bytes(HOSTILE[case][0](), target)
    assert _outside(parent, target) == before


@pytest.mark.parametrize(
    "archive",
    [
        lambda: build(sl(b"l", b"../outside"), d(b"l", f(b"victim", b"evil"))),
        lambda: build(sl(b"l", b"../outside/victim"), f(b"l", b"evil")),
        lambda: build(d(b"a", sl(b"b", b"../../outside")), d(b"a", d(b"b", f(b"victim", b"evil")))),
        lambda: build(f(b"..", b"evil")),
        lambda: build(d(b"a"), f(b"a/../../outside/victim", b"evil")),
        lambda: build(sl(b"l", b"/")) + build(f(b"x")),
    ],
)
def test_symlink_tricks_fail_and_nothing_escapes(arena, archive) -> None:  # type: ignore[no-untyped-def]
    parent, target, outside = arena
    before = _outside(parent, target)
    with pytest.raises(FormatError):
        _untar_bytes(archive(), target)
    assert _outside(parent, target) == before
    with open(os.path.join(outside, "victim"), "rb") as victim:
        assert victim.read() == b"precious"


def test_symlinks_already_in_the_target_are_never_followed(arena) -> None:
    parent, target, outside = arena
    os.symlink(outside, os.path.join(target, "dir"))
    os.symlink(os.path.join(outside, "victim"), os.path.join(target, "file"))
    os.symlink(os.path.join(outside, "victim"), os.path.join(target, "fifo"))
    before = _outside(parent, target)
    data = build(d(b"dir", f(b"victim", b"evil")), node(b"fifo", stat.S_IFIFO | 0o600), f(b"file", b"evil"))
    _untar_bytes(data, target)
    assert _outside(parent, target) == before
    assert not os.path.islink(os.path.join(target, "dir"))
    with open(os.path.join(target, "dir", "victim"), "rb") as replaced:
        assert replaced.read() == b"evil"
    assert stat.S_ISFIFO(os.lstat(os.path.join(target, "fifo")).st_mode)
    assert stat.S_ISREG(os.lstat(os.path.join(target, "file")).st_mode)


def test_existing_target_is_merged(tmp_path) -> None:
    target = os.path.join(tmp_path, "target")
    os.makedirs(os.path.join(target, "d"))
    os.makedirs(os.path.join(target, "y", "sub"))
    for name in ("keep", "d/old", "x", "y/sub/z"):
        with open(os.path.join(target, name), "wb") as out:
            out.write(b"old")
    data = build(d(b"d", f(b"new", b"1")), d(b"x", f(b"in", b"2")), f(b"y", b"3"))
    _untar_bytes(data, target)
    assert sorted(os.listdir(target)) == ["d", "keep", "x", "y"]
    assert sorted(os.listdir(os.path.join(target, "d"))) == ["new", "old"]
    assert os.path.isfile(os.path.join(target, "x", "in")) and os.path.isfile(os.path.join(target, "y"))


def test_truncated_file_is_removed(tmp_path) -> None:
    data = build(f(b"a", b"first"), f(b"b", b"B" * 10_000))
    out = os.path.join(tmp_path, "out")
    with pytest.raises(FormatError, match=r"truncated at byte \d+"):
        _untar_bytes(data[: len(data) - 5000], out)
    assert sorted(os.listdir(out)) == ["a"]


# -- privileges ------------------------------------------------------------------------------------


@needs_root
def test_devices_as_root(tmp_path) -> None:
    data = build(NULL_DEVICE)
    out = os.path.join(tmp_path, "out")
    assert _untar_bytes(data, out).devices == 1
    st_ = os.lstat(os.path.join(out, "null"))
    assert stat.S_ISCHR(st_.st_mode) and st_.st_rdev == os.makedev(1, 3)


_AS_NOBODY = """
import os, sys
from casync_store.ops.untar import untar
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    with open(sys.argv[1], "rb") as data:
        print(untar(data, sys.argv[2]))
except OSError as exc:
    print("OSError", exc)
"""


@needs_root
def test_as_unprivileged_user(tmp_path) -> None:
    arena = tempfile.mkdtemp(prefix="pycasync-untar-")
    try:
        os.chmod(arena, 0o755)
        owned = os.path.join(arena, "owned.catar")
        with open(owned, "wb") as out:
            out.write(_owned_archive())
        device = os.path.join(arena, "device.catar")
        with open(device, "wb") as out:
            out.write(build(NULL_DEVICE))
        work = os.path.join(arena, "work")
        os.mkdir(work)
        os.chown(work, 65534, 65534)
        env = dict(os.environ, PYTHONPATH=ROOT)
        run = [sys.executable, "-c", _AS_NOBODY]
        result = subprocess.run(
            [*run, owned, os.path.join(work, "one")], env=env, capture_output=True, text=True
        )
        assert "UntarStats(" in result.stdout, result.stderr
        suid = os.lstat(os.path.join(work, "one", "dir", "suid"))
        assert (suid.st_uid, suid.st_mtime_ns) == (65534, 10**18 + 2)
        result = subprocess.run(
            [*run, device, os.path.join(work, "two")], env=env, capture_output=True, text=True
        )
        assert "OSError" in result.stdout and os.path.join(work, "two", "null") in result.stdout, (
            result.stderr
        )
    finally:
        shutil.rmtree(arena)
