"""Tests of casync_store.plumbing.fileio: positional I/O, native and the portable fallback."""

from __future__ import annotations

import os
import threading

import pytest

from casync_store.plumbing import fileio as _fileio


@pytest.fixture(params=["native", "fallback"])
def fileio(request, monkeypatch):
    """The module as it runs here, and as it runs where os.pread/pwrite are missing."""
    if request.param == "fallback":
        monkeypatch.setattr(_fileio, "_pread", _fileio._pread_fallback)
        monkeypatch.setattr(_fileio, "_pwrite", _fileio._pwrite_fallback)
    return _fileio


def test_threads_write_and_read_their_own_ranges(tmp_path, fileio) -> None:
    path = tmp_path / "f"
    blocks = [bytes([i]) * (4096 + i) for i in range(64)]
    offsets = [sum(len(b) for b in blocks[:i]) for i in range(len(blocks))]
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        def write(i: int) -> None:
            fileio.pwrite_all(fd, blocks[i], offsets[i])

        threads = [threading.Thread(target=write, args=(i,)) for i in reversed(range(len(blocks)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        fileio.fdatasync(fd)
        for i, block in enumerate(blocks):
            assert fileio.pread(fd, len(block), offsets[i]) == block
        end = offsets[-1] + len(blocks[-1])
        assert fileio.pread(fd, 100, end - 10) == blocks[-1][-10:]  # short only at EOF
        assert fileio.pread(fd, 100, end + 5) == b""
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(blocks)
