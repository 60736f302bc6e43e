"""The archive commands end to end through the real command line.

``tar``/``untar``/``mtree`` as users type them: a catar and a caidx equal to
casync's for the same tree and feature set, untar of both back into an equal
tree, GNU tar streams in (stdin) and out (stdout) with the real GNU tar on the
other side, mtree of a directory, a catar and a caidx agreeing, and misuse as
one-line usage errors that leave nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from typing import Callable

import pytest

from tests.support.cli import ok, one_error, read, run

DESYNC_WITH = [f"--with={w}" for w in (
    "32bit-uids", "nsec-time", "permissions", "symlinks", "device-nodes", "fifos", "sockets", "xattrs",
)]


def build_tree(root: str) -> str:
    """A small tree with every common file type, odd names and nanosecond times."""
    os.makedirs(os.path.join(root, "sub", "deeper"))
    files = {
        "a.txt": b"hello\n",
        "empty": b"",
        "sub/big.bin": os.urandom(300_000),
        "sub/deeper/name with spaces\nand newline": b"x" * 1000,
        b"sub/\xff\xfe-not-utf8".decode("utf-8", "surrogateescape"): b"odd",
    }
    for name, content in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    os.symlink("a.txt", os.path.join(root, "link"))
    os.mkfifo(os.path.join(root, "fifo"))
    os.chmod(os.path.join(root, "a.txt"), 0o4755)
    for i, (dirpath, dirnames, filenames) in enumerate(os.walk(root, topdown=False)):
        for name in filenames + dirnames:
            path = os.path.join(dirpath, name)
            os.utime(path, ns=(0, 1_600_000_000_123_456_789 + i), follow_symlinks=False)
    os.utime(root, ns=(0, 1_500_000_000_000_000_001))
    return root


def tree_state(root: str) -> dict[str, tuple[int, int, int, int, str]]:
    """path -> (mode, uid, mtime_ns, size, content or link digest) for a whole tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""] if dirpath == root else [*dirnames, *filenames]:
            path = os.path.join(dirpath, name) if name else root
            st = os.lstat(path)
            if os.path.islink(path):
                digest = os.readlink(path)
            elif os.path.isfile(path):
                digest = hashlib.sha256(read(path)).hexdigest()
            else:
                digest = ""
            size = st.st_size if os.path.isfile(path) and not os.path.islink(path) else 0
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_mtime_ns, size, digest)
    return out


@pytest.fixture
def tree(tmp_path: os.PathLike[str]) -> str:
    return build_tree(os.path.join(tmp_path, "tree"))


def test_tar_untar_equal_to_casync(
    env: dict[str, str], tree: str, tmp_path: os.PathLike[str],
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    ours, theirs = os.path.join(tmp_path, "ours.catar"), os.path.join(tmp_path, "theirs.catar")
    ok(env, "tar", ours, tree)
    run_casync(*DESYNC_WITH, "make", theirs, tree)
    assert read(ours) == read(theirs)
    out = os.path.join(tmp_path, "out")
    ok(env, "untar", ours, out)
    assert tree_state(out) == tree_state(tree)


def test_tar_index_untar_index_equal_to_casync(
    env: dict[str, str], tree: str, tmp_path: os.PathLike[str],
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    store, cstore = os.path.join(tmp_path, "store"), os.path.join(tmp_path, "cstore")
    ours, theirs = os.path.join(tmp_path, "ours.caidx"), os.path.join(tmp_path, "theirs.caidx")
    ok(env, "tar", "-i", "-s", store, "-m", "4:16:64", ours, tree)
    run_casync(*DESYNC_WITH, f"--store={cstore}", "--chunk-size=4K:16K:64K", "make", theirs, tree)
    assert read(ours) == read(theirs)
    out = os.path.join(tmp_path, "out")
    ok(env, "untar", "-i", "-s", store, ours, out)
    assert tree_state(out) == tree_state(tree)
    # casync extracts our caidx from our store
    cout = os.path.join(tmp_path, "cout")
    run_casync(*DESYNC_WITH, f"--store={store}", "extract", ours, cout)
    assert tree_state(cout) == tree_state(tree)


_MAGIC = {"zstd": b"\x28\xb5\x2f\xfd", "xz": b"\xfd7zXZ\x00", "gzip": b"\x1f\x8b"}


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd"])
@pytest.mark.parametrize("input_format", ["disk", "tar"])
def test_tar_index_honours_compression(
    env: dict[str, str], tree: str, tmp_path: os.PathLike[str], compression: str, input_format: str,
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    """``tar -i --compression`` writes chunks of that kind (it always wrote zstd), and casync reads them."""
    store, index = os.path.join(tmp_path, "store"), os.path.join(tmp_path, "t.caidx")
    if input_format == "disk":
        ok(env, "tar", "-i", "-s", store, "-m", "4:16:64", "--compression", compression, index, tree)
    else:
        stream = subprocess.run(["tar", "--format=pax", "-C", tree, "-cf", "-", "."], check=True,
                                capture_output=True).stdout
        ok(env, "tar", "-i", "--input-format", "tar", "-s", store, "-m", "4:16:64",
           "--compression", compression, index, "-", input=stream)
    names = [os.path.join(d, n) for d, _, ns in os.walk(store) for n in ns if n.endswith(".cacnk")]
    assert len(names) > 3
    for name in names:
        assert read(name).startswith(_MAGIC[compression]), name
    # casync detects the kind by the magic bytes and extracts the tree from our store
    cout = os.path.join(tmp_path, "cout")
    run_casync(*DESYNC_WITH, f"--store={store}", "extract", index, cout)
    if input_format == "disk":
        assert tree_state(cout) == tree_state(tree)
    out = os.path.join(tmp_path, "out")
    ok(env, "untar", "-i", "-s", store, index, out)
    assert tree_state(out) == tree_state(cout)


def test_gnu_tar_in_and_out(env: dict[str, str], tree: str, tmp_path: os.PathLike[str]) -> None:
    stream = subprocess.run(["tar", "--format=pax", "-C", tree, "-cf", "-", "."], check=True,
                            capture_output=True).stdout
    from_tar, direct = os.path.join(tmp_path, "from-tar.catar"), os.path.join(tmp_path, "direct.catar")
    ok(env, "tar", "--input-format", "tar", from_tar, "-", input=stream)
    ok(env, "tar", direct, tree)
    assert read(from_tar) == read(direct)
    gnu = ok(env, "untar", "--output-format", "gnu-tar", direct, "-").stdout
    out = os.path.join(tmp_path, "out")
    os.mkdir(out)
    subprocess.run(["tar", "-xpf", "-", "-C", out], input=gnu, check=True, capture_output=True)
    want = {k: (m, u, t // 10**9, s, d) for k, (m, u, t, s, d) in tree_state(tree).items()}
    got = {k: (m, u, t // 10**9, s, d) for k, (m, u, t, s, d) in tree_state(out).items()}
    assert got == want


def test_mtree_agrees(env: dict[str, str], tree: str, tmp_path: os.PathLike[str]) -> None:
    catar, caidx, store = (os.path.join(tmp_path, n) for n in ("t.catar", "t.caidx", "store"))
    ok(env, "tar", catar, tree)
    ok(env, "tar", "-i", "-s", store, caidx, tree)
    listings = [
        ok(env, "mtree", tree).stdout,
        ok(env, "mtree", catar).stdout,
        ok(env, "mtree", "-i", "-s", store, caidx).stdout,
    ]
    assert listings[0].startswith(b"#mtree")
    assert listings[0] == listings[1] == listings[2]
    assert len(listings[0].splitlines()) == len(tree_state(tree)) + 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["tar", "-s", "/x", "o.catar", "."], "only used with -i"),
        (["tar", "-m", "1:2:4", "o.catar", "."], "only used with -i"),
        (["tar", "--compression", "xz", "o.catar", "."], "only used with -i"),
        (["tar", "-i", "o.caidx", "."], "needs a store"),
        (["tar", "o.catar", "-"], "--input-format tar"),
        (["tar", "--tar-add-root", "o.catar", "."], "--input-format tar only"),
        (["untar", "-i", "x.caidx", "out"], "needs a store"),
        (["untar", "x.catar", "-"], "gnu-tar"),
        (["mtree", "-s", "/x", "x.catar"], "only used with -i"),
        (["untar", "x.caidx", "out"], "x.caidx is an index, not a catar archive: use -i"),
        (["mtree", "x.caidx"], "use -i"),
    ],
)
def test_archive_usage_errors(
    env: dict[str, str], tmp_path: os.PathLike[str], args: list[str], fragment: str
) -> None:
    one_error(run(env, *args), 2, fragment)
    assert not os.path.exists("o.catar") and not os.path.exists("o.caidx")


def test_untar_damaged_archive_is_one_line(
    env: dict[str, str], tree: str, tmp_path: os.PathLike[str]
) -> None:
    catar = os.path.join(tmp_path, "t.catar")
    ok(env, "tar", catar, tree)
    data = read(catar)
    with open(catar, "wb") as f:
        f.write(data[: len(data) // 2])
    one_error(run(env, "untar", catar, os.path.join(tmp_path, "out")), 1, "truncated")
    one_error(run(env, "tar", os.path.join(tmp_path, "x.catar"), os.path.join(tmp_path, "nope")), 1, "nope")
    assert not os.path.exists(os.path.join(tmp_path, "x.catar"))
