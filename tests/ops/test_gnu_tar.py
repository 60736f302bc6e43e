"""``untar --output-format gnu-tar`` writes desync's bytes, and never drops an xattr silently.

desync's own ``TestGnuTarWrite`` (``tarfs_test.go``): ``complex.catar``
(from desync's testdata, in ``tests/data/desync`` with its licence) must
become exactly ``complex.gnu-tar``, through the library and through the
command line to stdout. Entries with xattrs get PAX ``SCHILY.xattr.*``
records that Python's tarfile and GNU tar read back; long names and link
targets, set-id bits, devices and FIFOs come out right in GNU tar's reading.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
from typing import Any

import pytest

from casync_format.catar import Entry
from casync_format.catar_read import Item
from casync_store.ops._gnutar import go_file_mode
from casync_store.ops.tarstream import catar_to_tarstream, write_tarstream
from tests.support import ROOT
from tests.support.cli import ok, read
from tests.support.tar_trees import GNU_TAR, gnu_tar

DATA = os.path.join(ROOT, "tests", "data", "desync")
T = 1_564_848_000 * 10**9 + 123


def test_complex_catar_is_desyncs_gnu_tar() -> None:
    out = io.BytesIO()
    with open(os.path.join(DATA, "complex.catar"), "rb") as f:
        stats = catar_to_tarstream(f, out, format="gnu")
    assert out.getvalue() == read(os.path.join(DATA, "complex.gnu-tar"))
    assert (stats.entries, stats.files, stats.skipped) == (14, 6, 0)


def test_cli_untar_gnu_tar_to_stdout_and_file(env: dict[str, str], tmp_path: Any) -> None:
    catar = os.path.join(DATA, "complex.catar")
    expected = read(os.path.join(DATA, "complex.gnu-tar"))
    assert ok(env, "untar", "--output-format", "gnu-tar", catar, "-").stdout == expected
    target = str(tmp_path / "out.tar")
    ok(env, "untar", "--output-format=gnu-tar", catar, target)
    assert read(target) == expected


class _Payload:
    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)


def _items(*members: tuple[bytes, Entry, bytes | None]) -> list[Item]:
    out = [Item("enter", b"", Entry(b"", stat.S_IFDIR | 0o755, mtime_ns=T), None)]
    for path, entry, data in members:
        out.append(Item("file", path, entry, _Payload(data) if data is not None else None))  # type: ignore[arg-type]
    out.append(Item("leave", b"", None, None))
    return out


def _write(items: list[Item]) -> bytes:
    out = io.BytesIO()
    write_tarstream(items, out, format="gnu")
    return out.getvalue()


def test_xattrs_become_pax_records(tmp_path: Any) -> None:
    xattrs = [(b"user.comment", b"hello"), (b"user.bin", b"\x00\xff=\n"), (b"security.selinux", b"ctx")]
    data = b"payload" * 100
    f_entry = Entry(b"f", stat.S_IFREG | 0o640, uid=7, gid=8, mtime_ns=T, size=len(data), xattrs=xattrs)
    blob = _write(_items(
        (b"f", f_entry, data),
        (b"d", Entry(b"d", stat.S_IFDIR | 0o700, mtime_ns=T, xattrs=xattrs[:1]), None),
    ))  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(blob), encoding="utf-8", errors="surrogateescape") as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {".", "f", "d"}
        f = members["f"]
        assert f.pax_headers["SCHILY.xattr.user.comment"] == "hello"
        assert f.pax_headers["SCHILY.xattr.security.selinux"] == "ctx"
        raw = f.pax_headers["SCHILY.xattr.user.bin"].encode("utf-8", "surrogateescape")
        assert raw == b"\x00\xff=\n"
        assert members["d"].pax_headers == {"SCHILY.xattr.user.comment": "hello"}
        assert (f.uid, f.gid, f.mtime, f.mode & 0o7777) == (7, 8, T // 10**9, 0o640)
        assert tf.extractfile(f).read() == data  # type: ignore[union-attr]
    if GNU_TAR is not None:
        listing = gnu_tar("--xattrs", "-tvf", "-", input=blob).decode()
        assert " f\n" in listing and " d\n" in listing


def test_long_names_special_modes_devices_fifos() -> None:
    long_name = b"dir" + b"/x" * 80 + b"/file"
    long_target = b"../" * 40 + b"target"
    blob = _write(_items(
        (long_name, Entry(b"file", stat.S_IFREG | stat.S_ISUID | 0o755, mtime_ns=T, size=3), b"abc"),
        (b"link", Entry(b"link", stat.S_IFLNK | 0o777, mtime_ns=T, target=long_target), None),
        (b"tty", Entry(b"tty", stat.S_IFCHR | 0o620, mtime_ns=T, rdev=os.makedev(4, 1)), None),
        (b"sda", Entry(b"sda", stat.S_IFBLK | 0o660, mtime_ns=T, rdev=os.makedev(8, 0)), None),
        (b"fifo", Entry(b"fifo", stat.S_IFIFO | 0o644, mtime_ns=T), None),
        (b"sock", Entry(b"sock", stat.S_IFSOCK | 0o644, mtime_ns=T), None),
    ))  # fmt: skip
    assert len(blob) % 512 == 0 and blob.endswith(bytes(1024))
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        m = {x.name.encode(): x for x in tf.getmembers()}
        assert set(m) == {b".", long_name, b"link", b"tty", b"sda", b"fifo"}  # the socket is left out
        assert m[b"link"].linkname.encode() == long_target
        assert m[long_name].mode & 0o7777 == stat.S_ISUID | 0o755
        assert (m[b"tty"].type, m[b"tty"].devmajor, m[b"tty"].devminor) == (tarfile.CHRTYPE, 4, 1)
        assert (m[b"sda"].type, m[b"sda"].devmajor) == (tarfile.BLKTYPE, 8)
        assert m[b"fifo"].type == tarfile.FIFOTYPE
    if GNU_TAR is not None:
        listing = gnu_tar("-tvf", "-", "--numeric-owner", input=blob).decode().splitlines()
        assert any(line.startswith("-rwsr-xr-x") and line.endswith(long_name.decode()) for line in listing)
        assert any(line.startswith("crw--w----") for line in listing)
        assert any(line.endswith("link -> " + long_target.decode()) for line in listing)


@pytest.mark.parametrize("mode, expected", [
    (stat.S_IFDIR | 0o775, (1 << 31) | 0o775),
    (stat.S_IFREG | 0o644, 0o644),
    (stat.S_IFLNK | 0o777, (1 << 27) | 0o777),
    (stat.S_IFCHR | 0o600, (1 << 26) | (1 << 21) | 0o600),
    (stat.S_IFREG | stat.S_ISGID | 0o755, (1 << 22) | stat.S_ISGID | 0o755),
])  # fmt: skip
def test_modes_are_gos_file_modes(mode: int, expected: int) -> None:
    assert go_file_mode(mode) == expected
