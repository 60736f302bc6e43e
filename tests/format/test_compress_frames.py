"""A chunk is exactly one complete frame: junk, padding or a second frame after it is refused.

casync decodes a chunk file in one call and answers "Bad message" when input
is left after the end of the zstd frame, xz stream or gzip member
(src/compressor.c); pycasync must judge the same chunks invalid, with every
zstd binding and code path (zstandard one-shot, zstandard streaming for big
bounds and for old zstandard, pyzstd, compression.zstd).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import compress
from casync_format.errors import FormatError
from tests.support import CLI, ROOT

MIB = 1024 * 1024


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# (binding, force the streaming path): every way compress.py can decode zstd here.
ZSTD_PATHS = [
    pytest.param((b, stream), id=f"{b}{'-stream' if stream else ''}",
                 marks=pytest.mark.skipif(not _importable(b), reason=f"{b} not installed"))
    for b, stream in [("zstandard", False), ("zstandard", True), ("pyzstd", False),
                      ("compression.zstd", False)]
]


@pytest.fixture
def zstd_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Force compress.py onto one binding; ``-stream`` also takes the old-zstandard fallback."""
    binding, stream = request.param
    mod = importlib.import_module(binding)
    monkeypatch.setattr(compress, "_czstd", mod if binding == "compression.zstd" else None)
    monkeypatch.setattr(compress, "_zstandard", mod if binding == "zstandard" else None)
    monkeypatch.setattr(compress, "_pyzstd", mod if binding == "pyzstd" else None)
    monkeypatch.setattr(compress, "_local", threading.local())
    monkeypatch.setattr(compress, "_zstandard_strict", not stream)
    yield binding


def _junks(blob: bytes) -> dict[str, bytes]:
    return {"one byte": b"x", "second frame": blob, "zero padding": bytes(4), "zero byte": b"\0"}


def _check_refused(blob: bytes, size: int) -> None:
    for bound in (size, size + 100, 64 * MIB):
        assert compress.decompress(blob, bound) is not None  # the frame alone is fine
    for name, junk in _junks(blob).items():
        for bound in (size, size + 100, 64 * MIB):
            with pytest.raises(FormatError):
                compress.decompress(blob + junk, bound)
                pytest.fail(f"{name} after the frame accepted (bound {bound})")


@pytest.mark.parametrize("zstd_path", ZSTD_PATHS, indirect=True)
@given(data=st.binary(max_size=3000), tail=st.binary(min_size=1, max_size=40))
def test_zstd_junk_after_frame_refused_by_every_binding(zstd_path: str, data: bytes, tail: bytes) -> None:
    blob = compress.compress(data, "zstd")
    assert compress.decompress(blob, len(data)) == data
    _check_refused(blob, len(data))
    with pytest.raises(FormatError):
        compress.decompress(blob + tail, len(data) + 100)


@pytest.mark.parametrize("zstd_path", ZSTD_PATHS, indirect=True)
def test_zstd_frames_of_every_binding_with_junk(zstd_path: str) -> None:
    data = os.urandom(3000) + bytes(100_000)
    for name in ("zstandard", "pyzstd"):
        if not _importable(name):
            continue
        mod = importlib.import_module(name)
        blob = mod.ZstdCompressor().compress(data) if name == "zstandard" else mod.compress(data)
        assert compress.decompress(blob, len(data)) == data
        _check_refused(blob, len(data))


@pytest.mark.parametrize("method", ["xz", "gzip"])
@given(data=st.binary(max_size=3000), tail=st.binary(min_size=1, max_size=40))
def test_xz_gzip_junk_after_stream_refused(method: str, data: bytes, tail: bytes) -> None:
    blob = compress.compress(data, method)
    assert compress.decompress(blob, len(data)) == data
    _check_refused(blob, len(data))
    with pytest.raises(FormatError):
        compress.decompress(blob + tail, len(data) + 100)


# --- interop: casync refuses the same chunk we refuse -----------------------------------------------


def _cli(*args: str, home: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "HOME": home}
    return subprocess.run([sys.executable, CLI, *args], capture_output=True, env=env, cwd=ROOT,
                          stdin=subprocess.DEVNULL, timeout=120)


@pytest.mark.parametrize("method", ["zstd", "xz", "gzip"])
@pytest.mark.parametrize("junk", ["one byte", "second frame", "zero padding"])
def test_casync_and_pycasync_refuse_the_same_junk_chunk(
    tmp_path: os.PathLike[str], casync: str, method: str, junk: str
) -> None:
    home, store, index = (os.path.join(tmp_path, n) for n in ("home", "store", "blob.caibx"))
    os.mkdir(home)
    src = os.path.join(tmp_path, "blob.bin")
    content = os.urandom(40_000) + bytes(30_000) + os.urandom(40_000)
    with open(src, "wb") as f:
        f.write(content)
    made = _cli("make", "-s", store, "-m", "4:16:64", "--compression", method, index, src, home=home)
    assert made.returncode == 0, made.stderr
    good = os.path.join(tmp_path, "good")
    subprocess.run([casync, "extract", f"--store={store}", index, good], check=True, capture_output=True)
    with open(good, "rb") as f:
        assert f.read() == content  # casync reads our chunks of this compression

    victim = sorted(os.path.join(d, n) for d, _, names in os.walk(store) for n in names)[0]
    with open(victim, "rb") as f:
        blob = f.read()
    with open(victim, "ab") as f:
        f.write(_junks(blob)[junk])
    chunk = os.path.basename(victim)[:64]

    out = os.path.join(tmp_path, "casync-out")
    ref = subprocess.run([casync, "extract", f"--store={store}", index, out], capture_output=True, timeout=60)
    assert ref.returncode != 0, "casync accepted the chunk"
    ours = _cli("extract", "-s", store, index, os.path.join(tmp_path, "out"), home=home)
    assert ours.returncode == 1, ours.stderr
    assert chunk in ours.stderr.decode() and "junk after the end" in ours.stderr.decode()
    verify = _cli("verify", "-s", store, home=home)
    assert verify.returncode == 1 and chunk in verify.stderr.decode()
