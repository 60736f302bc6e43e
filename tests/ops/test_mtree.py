"""Tests of the mtree listing (casync_store.ops.mtree).

The listing of a directory, of its catar and of its caidx agree, whether the
archive was made by us or by the real casync (with desync's feature set, and
casync's default ``best`` set for the catar); lines follow the rules read
from desync's MtreeFS (keywords and their order, ``Mode.Perm()``, the digest
keyword, the escaping of names), checked against values computed here from
``lstat`` and hashlib, never against hard-coded output.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest

from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import FormatError, ParameterError
from casync_store import LocalStore
from casync_store.ops.mtree import (
    MTREE_HEADER,
    mtree_archive,
    mtree_dir,
    mtree_escape,
    mtree_index,
    mtree_line,
    mtree_lines,
)
from casync_store.ops.tar import tar, tar_index
from casync_store.stores.indexio import open_index
from tests.support import DESYNC_WITH, IS_ROOT
from tests.support.tar_trees import build_tree


@pytest.fixture
def tree(tmp_path) -> str:
    root = str(tmp_path / "tree")
    build_tree(root, socket=True)
    return root


def _archive_lines(path: str, **kw: object) -> list[str]:
    with open(path, "rb") as f:
        return list(mtree_archive(f, **kw))  # type: ignore[arg-type]


def _index_lines(index_path: str, store_dir: str, **kw: object) -> list[str]:
    with open_index(index_path) as index:
        return list(mtree_index(index, LocalStore(store_dir), **kw))  # type: ignore[arg-type]


def test_dir_catar_and_caidx_agree(tree: str, tmp_path, store_dir: str, local_store) -> None:
    want = list(mtree_dir(tree))
    assert want[0] == MTREE_HEADER and want[1].startswith(". type=dir ")
    assert len(want) == 2 + sum(len(d) + len(f) for _, d, f in os.walk(tree))
    ours = str(tmp_path / "ours.catar")
    tar(tree, ours)
    assert _archive_lines(ours) == want
    index = str(tmp_path / "ours.caidx")
    tar_index(tree, index, local_store)
    assert _index_lines(index, store_dir) == want


def test_casync_archives_list_the_same(tree: str, tmp_path, run_casync) -> None:
    want = list(mtree_dir(tree))
    made = str(tmp_path / "casync.catar")
    run_casync("make", *DESYNC_WITH, made, tree)
    assert _archive_lines(made) == want
    best = str(tmp_path / "best.catar")  # casync's default feature set carries more, lists the same
    run_casync("make", best, tree)
    assert _archive_lines(best) == want
    store = str(tmp_path / "casync-store")
    index = str(tmp_path / "casync.caidx")
    run_casync("make", *DESYNC_WITH, f"--store={store}", index, tree)
    assert _index_lines(index, store) == want


def test_sha256_index_uses_its_digest(tree: str, tmp_path, run_casync) -> None:
    store = str(tmp_path / "casync-store")
    index = str(tmp_path / "sha256.caidx")
    run_casync("make", *DESYNC_WITH, "--digest=sha256", f"--store={store}", index, tree)
    lines = _index_lines(index, store)
    assert lines == list(mtree_dir(tree, digest=SHA256))
    assert any(" sha256digest=" in line for line in lines)
    assert not any("sha512256digest" in line for line in lines)


def _time(ns: int) -> str:
    return f"time={ns // 10**9}.{ns % 10**9:09d}"


def _by_name(lines: list[str]) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line for line in lines[1:]}


def _perm(st: os.stat_result) -> str:
    return f"mode={st.st_mode & 0o777:04o}"  # Go's Mode.Perm(): no setuid/setgid/sticky bits


def _ids(st: os.stat_result) -> str:
    return f"uid={st.st_uid} gid={st.st_gid}"


@pytest.mark.parametrize("digest, keyword, algo", [(SHA512_256, "sha512256digest", "sha512_256"),
                                                   (SHA256, "sha256digest", "sha256")])
def test_lines_follow_desyncs_rules(tree: str, digest, keyword: str, algo: str) -> None:
    lines = _by_name(list(mtree_dir(tree, digest=digest)))
    for rel in ("sub/big", "suid", "empty"):
        path = os.path.join(tree, rel)
        st = os.lstat(path)
        with open(path, "rb") as f:
            hexdigest = hashlib.new(algo, f.read()).hexdigest()
        tail = f"size={st.st_size} {_time(st.st_mtime_ns)} {keyword}={hexdigest}"
        assert lines[rel] == f"{rel} type=file {_perm(st)} {_ids(st)} {tail}"
    for name, kind in (("sticky", "dir"), ("fifo", "fifo"), ("socket", "socket")):
        st = os.lstat(os.path.join(tree, name))
        assert lines[name] == f"{name} type={kind} {_perm(st)} {_ids(st)} {_time(st.st_mtime_ns)}"
    st = os.lstat(os.path.join(tree, "link"))
    assert lines["link"] == f"link type=link mode=0777 target=a {_ids(st)} {_time(st.st_mtime_ns)}"
    st = os.lstat(tree)
    assert lines["."] == f". type=dir {_perm(st)} {_ids(st)} {_time(st.st_mtime_ns)}"


@pytest.mark.skipif(not IS_ROOT, reason="device nodes need root")
def test_device_lines(tree: str) -> None:
    lines = _by_name(list(mtree_dir(tree)))
    for name, kind in (("null", "char"), ("loop", "block")):
        st = os.lstat(os.path.join(tree, name))
        assert lines[name] == f"{name} type={kind} {_perm(st)} {_ids(st)} {_time(st.st_mtime_ns)}"


@pytest.mark.parametrize(
    "name, escaped",  # desync's mtreeFilename cases (mtree(5): backslash + 3 octal digits)
    [
        (b"abc", "abc"),
        (b"name with space", r"name\040with\040space"),
        (b"a\\b", r"a\134b"),
        (b"a#b", r"a\043b"),
        (b"a\tb", r"a\011b"),
        (b"a\nb", r"a\012b"),
        (b"a\x7fb", r"a\177b"),
        ("é".encode(), r"\303\251"),
        (b"\xff\xfe", r"\377\376"),
        (b"~!$%&'()*+,-./:;<=>?@[]^_`{|}", "~!$%&'()*+,-./:;<=>?@[]^_`{|}"),
    ],
)
def test_escape(name: bytes, escaped: str) -> None:
    assert mtree_escape(name) == escaped


def test_odd_names_stay_one_field(tree: str) -> None:
    lines = list(mtree_dir(tree))
    for line in lines[1:]:
        fields = line.split(" ")
        assert all("=" in f for f in fields[1:]), line
        assert fields[0].isascii() and fields[0].isprintable()
    names = {line.split(" ", 1)[0] for line in lines[1:]}
    assert r"sp\040ace" in names and r"new\012line" in names and r"\377\376" in names
    assert r"\043hash" in names and r"back\134slash" in names and "x" * 255 in names


def test_keyword_injection_is_escaped() -> None:
    from casync_format.catar import Entry

    line = mtree_line(b"usr ignore", Entry(b"usr ignore", stat.S_IFDIR | 0o755))
    fields = line.split(" ")
    assert fields[0] == r"usr\040ignore" and "ignore" not in fields[1:]


def test_nanoseconds_are_zero_padded(tmp_path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "f").write_bytes(b"")
    os.utime(root / "f", ns=(0, 7 * 10**9 + 5))
    os.utime(root, ns=(0, 9 * 10**9 + 50))
    lines = _by_name(list(mtree_dir(str(root))))
    assert " time=7.000000005 " in lines["f"]
    assert lines["."].endswith(" time=9.000000050")
    assert lines["f"].endswith("sha512256digest=" + hashlib.new("sha512_256", b"").hexdigest())


def test_items_api_and_errors(tree: str, tmp_path) -> None:
    catar = str(tmp_path / "t.catar")
    tar(tree, catar)
    from casync_format.catar_read import iter_catar

    with open(catar, "rb") as f:
        assert list(mtree_lines(iter_catar(f))) == list(mtree_dir(tree))
    with open(catar, "rb") as f:
        assert list(mtree_archive(f.read)) == list(mtree_dir(tree))  # a read(n) callable works too
    with pytest.raises(ParameterError):
        list(mtree_dir(os.path.join(tree, "a")))

    class Other:
        name = "md5"

    with pytest.raises(ParameterError):
        list(mtree_lines([], digest=Other()))  # type: ignore[arg-type]
    lines = mtree_lines(iter_catar(io.BytesIO(b"")))
    assert next(lines) == MTREE_HEADER
    with pytest.raises(FormatError):
        next(lines)
