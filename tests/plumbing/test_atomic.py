"""Tests of casync_store.plumbing.atomic: all-or-nothing replacement of files."""

from __future__ import annotations

import os
import stat

import pytest

from casync_store.plumbing.atomic import TEMP_PREFIX, atomic_write, write_file_atomic


def _leftovers(directory: str) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


@pytest.mark.parametrize("sync", [True, False])
def test_replace_on_success(tmp_path, sync: bool) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    with atomic_write(str(target), sync=sync) as f:
        f.write(b"new ")
        f.write(b"content")
        assert target.read_bytes() == b"old"  # invisible until the block ends
    assert target.read_bytes() == b"new content"
    write_file_atomic(str(target), b"x" * 100_000, sync=sync)
    assert target.read_bytes() == b"x" * 100_000
    assert _leftovers(str(tmp_path)) == []


def test_failure_keeps_old_file_and_removes_temp(tmp_path) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError), atomic_write(str(target)) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"precious"
    assert _leftovers(str(tmp_path)) == []


def test_missing_directory_is_an_error_without_leftovers(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        write_file_atomic(str(tmp_path / "nope" / "out"), b"data")
    assert _leftovers(str(tmp_path)) == []


def test_mode_goes_through_umask(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        write_file_atomic(str(tmp_path / "a"), b"1", mode=0o666)
    finally:
        os.umask(old)
    write_file_atomic(str(tmp_path / "b"), b"2", mode=0o600)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600


def test_stale_temp_name_is_skipped(tmp_path) -> None:
    # A crashed earlier process with our pid may have left temp names behind.
    from casync_store.plumbing import atomic as _atomic

    first = next(_atomic._counter) + 1
    for i in range(first, first + 50):
        (tmp_path / f"{TEMP_PREFIX}{os.getpid()}-{i}").write_bytes(b"stale")
    write_file_atomic(str(tmp_path / "out"), b"fresh")
    assert (tmp_path / "out").read_bytes() == b"fresh"
    assert len(_leftovers(str(tmp_path))) == 50  # the stale files were not touched


def test_errors_name_the_requested_path(tmp_path) -> None:
    target = str(tmp_path / "missing-dir" / "out")
    with pytest.raises(FileNotFoundError) as info:
        write_file_atomic(target, b"x")
    assert info.value.filename == target and TEMP_PREFIX not in str(info.value)
    with pytest.raises(FileNotFoundError) as info2, atomic_write(target) as f:
        f.write(b"x")
    assert info2.value.filename == target


def test_directory_target_refused_up_front(tmp_path) -> None:
    (tmp_path / "adir").mkdir()
    with pytest.raises(IsADirectoryError), atomic_write(str(tmp_path / "adir")) as f:
        f.write(b"never")
    assert _leftovers(str(tmp_path)) == []


def test_replacing_keeps_permissions(tmp_path) -> None:
    target = tmp_path / "private"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    with atomic_write(str(target)) as f:
        f.write(b"new")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600 and target.read_bytes() == b"new"
