"""Tests of casync_format.compress: round trips, casync's chunks, bombs, damage, bindings."""

from __future__ import annotations

import importlib
import json
import lzma
import os
import shutil
import subprocess
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import compress
from casync_format.errors import FormatError, MissingDependency, ParameterError
from casync_format.index import read_index
from tests.support import DATA_DIR
from tests.support import ROOT as SUPPORT_ROOT

DATA = DATA_DIR
KIB, MIB = 1024, 1024 * 1024
needs_zstd = pytest.mark.skipif(not compress.ZSTD_BACKEND, reason="no zstd binding installed")
METHODS = [
    pytest.param("zstd", marks=needs_zstd),
    "xz",
    "gzip",
]


def _zstandard():
    return pytest.importorskip("zstandard")


def test_constants() -> None:
    assert compress.COMPRESSIONS == ("zstd", "xz", "gzip")
    assert compress.ZSTD_BACKEND in ("", "compression.zstd", "zstandard", "pyzstd")


AVAILABLE = ["xz", "gzip"] + (["zstd"] if compress.ZSTD_BACKEND else [])


@given(st.binary(max_size=20_000), st.sampled_from(AVAILABLE))
def test_round_trip(data: bytes, method: str) -> None:
    blob = compress.compress(data, method)
    assert compress.detect(blob) == method
    assert compress.decompress(blob, len(data)) == data
    assert compress.decompress(memoryview(blob), len(data) + 100) == data
    if data:
        with pytest.raises(FormatError):
            compress.decompress(blob, len(data) - 1)


@pytest.mark.parametrize(
    ("method", "level"), [("zstd", 1), ("zstd", 19), ("gzip", 1), ("gzip", 9), ("xz", 0)]
)
def test_levels(method: str, level: int) -> None:
    if method == "zstd" and not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    data = b"pycasync " * 5000
    for lvl in (level, None, level):  # the per-thread zstd context follows level changes
        assert compress.decompress(compress.compress(data, method, lvl), len(data)) == data


@needs_zstd
def test_zstd_from_many_threads() -> None:
    inputs = [bytes([i]) * (1000 + i) + os.urandom(100) for i in range(64)]
    with ThreadPoolExecutor(8) as pool:
        blobs = list(pool.map(compress.compress, inputs))
    assert [compress.decompress(b, 2000) for b in blobs] == inputs


def test_unknown_method() -> None:
    with pytest.raises(ParameterError):
        compress.compress(b"x", "lz4")


@pytest.mark.parametrize(
    ("blob", "name"),
    [(b"\x28\xb5\x2f\xfd\x00", "zstd"), (b"\xfd7zXZ\x00\x00", "xz"), (b"\x1f\x8b\x08", "gzip")],
)
def test_detect(blob: bytes, name: str) -> None:
    assert compress.detect(blob) == name
    assert compress.detect(memoryview(blob)) == name


@pytest.mark.parametrize("blob", [b"", b"\x28\xb5\x2f", b"\xfd7zX", b"\x1f", b"hello world", b"BZh91AY"])
def test_detect_unknown(blob: bytes) -> None:
    with pytest.raises(FormatError):
        compress.detect(blob)
    with pytest.raises(FormatError):
        compress.decompress(blob, 100)


# --- casync's own chunk files ---------------------------------------------------------------------


def _golden_chunks(method: str) -> list[tuple[str, int, int]]:
    """(path, start, size) of each chunk of text.caibx in casync's store for ``method``."""
    with open(os.path.join(DATA, "index", "text.caibx"), "rb") as f:
        items = list(read_index(f))
    root = os.path.join(DATA, "store-" + method)
    return [(os.path.join(root, c.id.hex()[:4], c.id.hex() + ".cacnk"), c.start, c.size) for c in items]


def _text_input() -> bytes:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", os.path.join(DATA, "make_golden.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(os.path.join(DATA, "golden.json")) as f:
        return module.make_input(json.load(f)["indexes"]["text.caibx"]["input"])


@pytest.mark.parametrize("method", METHODS)
def test_casync_chunk_files_decompress(method: str) -> None:
    data = _text_input()
    chunks = _golden_chunks(method)
    assert chunks
    for path, start, size in chunks:
        with open(path, "rb") as f:
            blob = f.read()
        assert compress.detect(blob) == method
        assert compress.decompress(blob, size) == data[start : start + size]
        assert compress.decompress(blob, 128 * MIB) == data[start : start + size]
        with pytest.raises(FormatError):
            compress.decompress(blob, size - 1)


@pytest.mark.parametrize(("tool", "method"), [("zstd", "zstd"), ("xz", "xz"), ("gzip", "gzip")])
def test_reference_tools_output_decompresses(tool: str, method: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")
    if method == "zstd" and not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    data = os.urandom(3000) + bytes(200_000)
    blob = subprocess.run([tool, "-c"], input=data, capture_output=True, check=True).stdout
    assert compress.decompress(blob, len(data)) == data
    assert compress.decompress(blob, 20 * MIB) == data
    with pytest.raises(FormatError):
        compress.decompress(blob, 64 * KIB)
    # and the reference tool reads ours
    ours = compress.compress(data, method)
    assert subprocess.run([tool, "-dc"], input=ours, capture_output=True, check=True).stdout == data


# --- bombs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_bomb_is_bounded(method: str) -> None:
    blob = compress.compress(bytes(MIB), method)
    assert len(blob) < 64 * KIB
    with pytest.raises(FormatError):
        compress.decompress(blob, 64 * KIB)
    assert compress.decompress(blob, MIB) == bytes(MIB)


@pytest.mark.parametrize("content_size", [True, False])
@pytest.mark.parametrize("bound", [64 * KIB, 17 * MIB, 128 * MIB])
def test_zstd_bomb_with_and_without_declared_size(content_size: bool, bound: int) -> None:
    zstandard = _zstandard()
    if not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    size = (bound // MIB + 1) * MIB
    cobj = zstandard.ZstdCompressor(write_content_size=content_size).compressobj(size=size)
    zero = bytes(MIB)
    blob = b"".join(cobj.compress(zero) for _ in range(size // MIB)) + cobj.flush()
    declared = zstandard.get_frame_parameters(blob).content_size
    assert (declared == size) if content_size else (declared == zstandard.CONTENTSIZE_UNKNOWN)
    with pytest.raises(FormatError):
        compress.decompress(blob, bound)


@pytest.mark.parametrize("content_size", [True, False])
def test_zstd_big_bound_round_trip_and_truncation(content_size: bool) -> None:
    zstandard = _zstandard()
    if not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    data = os.urandom(64 * KIB) * 40 + os.urandom(5 * MIB)  # 7.5 MiB: the > 16 MiB bound streams
    blob = zstandard.ZstdCompressor(write_content_size=content_size).compress(data)
    assert compress.decompress(blob, 128 * MIB) == data
    for cut in (len(blob) - 1, len(blob) // 2, 20):
        with pytest.raises(FormatError):
            compress.decompress(blob[:cut], 128 * MIB)


# --- damage ---------------------------------------------------------------------------------------


@st.composite
def truncated(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    method = draw(st.sampled_from(AVAILABLE))
    data = draw(st.binary(min_size=1, max_size=5000))
    blob = compress.compress(data, method)
    cut = draw(st.integers(0, len(blob) - 1))
    return method, data, blob[:cut]


@given(truncated())
def test_truncated_is_format_error(case: tuple[str, bytes, bytes]) -> None:
    _method, data, blob = case
    for bound in (len(data), 128 * MIB):
        with pytest.raises(FormatError):
            compress.decompress(blob, bound)


@pytest.mark.parametrize("method", ["xz", "gzip"])
def test_flipped_byte_is_format_error(method: str) -> None:
    data = os.urandom(2000) * 4
    blob = bytearray(compress.compress(data, method))
    for pos in range(20, len(blob) - 8, max(1, len(blob) // 25)):
        bad = bytearray(blob)
        bad[pos] ^= 0x40
        with pytest.raises(FormatError):
            compress.decompress(bytes(bad), len(data))


@pytest.mark.parametrize(
    "prefix", [pytest.param(b"\x28\xb5\x2f\xfd", marks=needs_zstd), b"\xfd7zXZ\x00", b"\x1f\x8b"]
)
@given(tail=st.binary(max_size=200))
def test_garbage_after_magic_is_format_error(prefix: bytes, tail: bytes) -> None:
    blob = prefix + tail
    try:
        out = compress.decompress(blob, 64 * KIB)
    except FormatError:
        return
    # Accepted only if it is in fact a valid stream (a few bytes can make an empty zstd frame).
    assert _reference_decompress(blob) == out


def _reference_decompress(blob: bytes) -> bytes:
    method = compress.detect(blob)
    if method == "zstd":
        return _zstandard().ZstdDecompressor().decompressobj().decompress(blob)
    if method == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(blob)
    return zlib.decompressobj(wbits=31).decompress(blob)


# --- bindings -------------------------------------------------------------------------------------


def test_without_zstd_binding_raises_missing_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    blob = compress.compress(b"abc" * 100, "zstd") if compress.ZSTD_BACKEND else b"\x28\xb5\x2f\xfd\x00"
    for name in ("_czstd", "_zstandard", "_pyzstd"):
        monkeypatch.setattr(compress, name, None)
    with pytest.raises(MissingDependency) as exc:
        compress.compress(b"abc", "zstd")
    assert "zstd" in str(exc.value)
    with pytest.raises(MissingDependency):
        compress.decompress(blob, 1000)
    assert compress.decompress(compress.compress(b"abc", "xz"), 3) == b"abc"


def _bindings() -> dict[str, tuple[object, object]]:
    """Importable zstd bindings as name -> (compress(data), decompress(blob))."""
    found: dict[str, tuple[object, object]] = {}
    for name in ("compression.zstd", "zstandard", "pyzstd"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if name == "zstandard":
            found[name] = (
                lambda d, m=mod: m.ZstdCompressor().compress(d),
                lambda b, m=mod: m.ZstdDecompressor().decompress(b, max_output_size=10 * MIB),
            )
        else:
            found[name] = (mod.compress, mod.decompress)
    return found


def test_cross_binding_frames() -> None:
    pytest.importorskip("zstandard")
    bindings = _bindings()
    if len(bindings) < 2:
        pytest.skip("only one zstd binding importable: " + ", ".join(bindings))
    data = os.urandom(1000) + bytes(100_000)
    ours = compress.compress(data, "zstd")
    for comp, decomp in bindings.values():
        assert compress.decompress(comp(data), len(data)) == data  # type: ignore[operator]
        assert decomp(ours) == data  # type: ignore[operator]


@pytest.mark.parametrize("binding", ["zstandard", "pyzstd"])
def test_shim_with_each_binding(binding: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """compress.py's code path for each binding round-trips and stays bounded."""
    mod = pytest.importorskip(binding)
    monkeypatch.setattr(compress, "_czstd", None)
    monkeypatch.setattr(compress, "_zstandard", mod if binding == "zstandard" else None)
    monkeypatch.setattr(compress, "_pyzstd", mod if binding == "pyzstd" else None)
    monkeypatch.setattr(compress, "_local", threading.local())
    data = os.urandom(5000) + bytes(200_000)
    blob = compress.compress(data, "zstd")
    assert compress.decompress(blob, len(data)) == data
    with pytest.raises(FormatError):
        compress.decompress(blob, len(data) - 1)
    with pytest.raises(FormatError):
        compress.decompress(blob[:-7], len(data))
    for _name, (comp, _decomp) in _bindings().items():  # frames from every binding
        assert compress.decompress(comp(data), len(data)) == data  # type: ignore[operator]


_BLOCK_ZSTD = (
    "import sys\n"
    "for _name in ('compression', 'compression.zstd', 'zstandard', 'pyzstd'):\n"
    "    sys.modules[_name] = None  # import raises ImportError\n"
)


def _without_zstd(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    root = SUPPORT_ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_ZSTD + code, *args], cwd=root, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_missing_zstd_hint_is_a_real_install_command() -> None:
    import configparser

    code = (
        "from casync_format import compress\n"
        "assert compress.ZSTD_BACKEND == ''\n"
        "try:\n"
        "    compress.compress(b'abc', 'zstd')\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc, sep=': ')\n"
    )
    proc = _without_zstd(code)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("MissingDependency: zstd-compressed chunks need a zstd binding"), line
    for fix in ("python3-zstandard", "pip install zstandard", "compression.zstd", "--compression xz"):
        assert fix in line, line
    assert "pycasync[" not in line and "\n" not in line
    # The hint names what setup.cfg requires; there is no "zstd" extra to point at.
    setup = configparser.ConfigParser()
    setup.read(os.path.join(SUPPORT_ROOT, "setup.cfg"))
    assert "zstandard" in setup["options"]["install_requires"]
    assert "zstd" not in setup["options.extras_require"]


def test_missing_zstd_hint_on_the_command_line(tmp_path: os.PathLike[str]) -> None:
    blob = os.path.join(tmp_path, "blob")
    with open(blob, "wb") as f:
        f.write(os.urandom(100_000))
    code = "import sys, runpy; sys.argv[0] = 'pycasync'; runpy.run_module('pycasync', run_name='__main__')\n"
    args = ("make", "-s", os.path.join(tmp_path, "store"), os.path.join(tmp_path, "blob.caibx"), blob)
    proc = _without_zstd(code, *args)
    assert proc.returncode != 0
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [f"pycasync: error: {compress.NO_ZSTD}"], proc.stderr


def test_missing_dependency_hints() -> None:
    extra = MissingDependency("s3", "boto3")
    assert str(extra) == "this needs the Python package 'boto3': pip install 'pycasync[s3]'"
    assert (extra.extra, extra.module) == ("s3", "boto3")
    plain = MissingDependency(None, "zstandard", purpose="zstd compression")
    assert str(plain) == "zstd compression needs the Python package 'zstandard': pip install zstandard"
    assert plain.extra is None
