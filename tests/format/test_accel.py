"""Tests of the one loader of the C extension (:mod:`casync_format._accel`).

Each case runs a fresh interpreter, since the loader decides at import:
``PYCASYNC_PUREPYTHON=1`` must switch every accelerated function to Python
(and ``--version`` must say so) without changing a single output byte;
``PYCASYNC_REQUIRE_C=1`` must refuse a missing or incomplete extension.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from casync_format import _accel, backends, describe_backends
from tests.support import ROOT as SUPPORT_ROOT

__all__: list[str] = []

ROOT = SUPPORT_ROOT
FUNCTIONS = ["chunker", "siphash24", "catar-goodbye", "catar-entry", "chunk-file", "chunk-fetch"]

# Exercises every accelerated function and prints the backends and a digest of the results.
WORKLOAD = r"""
import hashlib, io, json, os, random, stat, tempfile
import casync_format
from casync_store.stores import _chunkfile
from casync_format import chunker, _buzhash
from casync_format import catar
from casync_format._siphash import siphash24, siphash24_py
from casync_format._catar_goodbye import encode_goodbye, encode_goodbye_py
from casync_format.catar import CatarWriter, Entry, DESYNC_TAR_FLAGS, CA_FORMAT_DEFAULT

out = hashlib.sha256()
data = random.Random(7).randbytes(400_000)
params = chunker.ChunkerParams(64, 1024, 4096)
out.update(repr(list(chunker.iter_chunks(data, params))).encode())
out.update(repr(list(chunker.iter_chunks(data, params, workers=2, segment_size=50_000))).encode())
out.update(repr([(s, len(b)) for s, b in chunker.chunk_stream(io.BytesIO(data), params)]).encode())
for n in range(70):
    out.update(siphash24(bytes(range(n)), bytes(range(16))).to_bytes(8, "little"))
for flags in (DESYNC_TAR_FLAGS, CA_FORMAT_DEFAULT):
    parts = []
    w = CatarWriter(parts.append, flags)
    w.begin(Entry(b"", stat.S_IFDIR | 0o755, 1, 2, 3_000_000_123))
    for i in range(60):
        w.add(Entry(b"f%03d" % i, stat.S_IFREG | 0o640, 1000 + i, 100, i * 999_999_937, size=i),
              io.BytesIO(bytes([i]) * i))
    w.enter(Entry(b"sub", stat.S_IFDIR | 0o700, 5, 6, 7))
    w.add(Entry(b"link", stat.S_IFLNK | 0o777, target=b"../f001"))
    w.add(Entry(b"x", stat.S_IFREG | 0o600, 0, 0, 0, size=70_000), io.BytesIO(b"y" * 70_000))
    w.leave()
    w.finish()
    out.update(b"".join(parts))
with tempfile.TemporaryDirectory() as tmp:
    for i in range(5):
        blob = bytes([i]) * (i * 40_000)
        out.update(repr(_chunkfile.write(tmp, ".t%d" % i, "c%d" % i, blob, 0o600)).encode())
        out.update(repr(_chunkfile.read(tmp, "c%d" % i, 1 << 20)).encode())
        out.update(repr(_chunkfile.read(tmp, "c%d" % i, 50_000)).encode())
        step, mode, size = _chunkfile.refresh(tmp, "c%d" % i)
        out.update(repr((step, stat.S_IFMT(mode), size)).encode())
    out.update(repr([_chunkfile.read(tmp, "none", 9), _chunkfile.refresh(tmp, "none"),
                     _chunkfile.read(os.path.join(tmp, "c1"), "x", 9)]).encode())
print(json.dumps({
    "backends": casync_format.backends(),
    "live": {
        "chunker": "python" if chunker._LIVE is _buzhash else "c",
        "siphash24": "python" if siphash24 is siphash24_py else "c",
        "catar-goodbye": "python" if encode_goodbye is encode_goodbye_py else "c",
        "catar-entry": "python" if catar._ENCODE_CHILD_C is None else "c",
        "chunk-file": "python" if _chunkfile.read is _chunkfile.read_py else "c",
        "chunk-fetch": "python" if _chunkfile.fetch is None else "c",
    },
    "digest": out.hexdigest(),
}))
"""


def _run(env: dict[str, str], code: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", prelude + code], env=full_env, cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )


def _workload(env: dict[str, str], prelude: str = "") -> dict[str, object]:
    proc = _run(env, WORKLOAD, prelude)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _require_c() -> None:
    if _accel.c_module("chunker") is None and not _accel.FORCE_PYTHON:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but casync_format._chunker is not built")
        pytest.skip("the C extension casync_format._chunker is not built")
    if _accel.c_module("chunk-fetch") is None and not _accel.FORCE_PYTHON:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but casync_format._chunker lacks fetch_chunk_file")
        pytest.skip("casync_format._chunker was built without libzstd's and OpenSSL's headers")


def test_backends_name_every_accelerated_function() -> None:
    found = backends()
    assert list(found) == [*FUNCTIONS, "zstd"]
    assert all(found[name] in ("c", "python") for name in FUNCTIONS)
    assert describe_backends().startswith(f"chunker: {found['chunker']}, ")
    assert describe_backends().endswith(f"zstd: {found['zstd']}")


def test_pure_python_everywhere_same_bytes() -> None:
    _require_c()
    fast = _workload({})
    assert fast["backends"] == {**dict.fromkeys(FUNCTIONS, "c"), "zstd": fast["backends"]["zstd"]}  # type: ignore[index]
    assert fast["live"] == dict.fromkeys(FUNCTIONS, "c")
    slow = _workload({"PYCASYNC_PUREPYTHON": "1"})
    assert slow["backends"] == {**dict.fromkeys(FUNCTIONS, "python"), "zstd": fast["backends"]["zstd"]}  # type: ignore[index]
    assert slow["live"] == dict.fromkeys(FUNCTIONS, "python")
    assert slow["digest"] == fast["digest"]


def test_hidden_extension_is_pure_python_and_required_fails() -> None:
    hide = "import sys; sys.modules['casync_format._chunker'] = None\n"
    result = _workload({}, hide)
    assert result["live"] == dict.fromkeys(FUNCTIONS, "python")
    proc = _run({"PYCASYNC_REQUIRE_C": "1"}, "import casync_format.catar", hide)
    assert proc.returncode != 0
    assert "PYCASYNC_REQUIRE_C=1" in proc.stderr and "does not import" in proc.stderr


def test_incomplete_extension() -> None:
    # An old build exporting only the chunker: that one runs in "C", the rest in Python.
    fake = (
        "import sys, types\n"
        "from casync_format import _buzhash\n"
        "m = types.ModuleType('casync_format._chunker')\n"
        "m.find_cut, m.find_cuts = _buzhash.find_cut, _buzhash.find_cuts\n"
        "sys.modules['casync_format._chunker'] = m\n"
    )
    proc = _run({}, "import casync_format, json; print(json.dumps(casync_format.backends()))", fake)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["chunker"] == "c"
    assert [found[name] for name in FUNCTIONS[1:]] == ["python"] * (len(FUNCTIONS) - 1)
    proc = _run({"PYCASYNC_REQUIRE_C": "1"}, "import casync_format.chunker", fake)
    assert proc.returncode != 0
    lacking = ("siphash24, encode_goodbye, encode_child, read_chunk_file, write_chunk_file, "
               "refresh_chunk_file, fetch_chunk_file")
    assert f"lacks {lacking} (rebuild it; fetch_chunk_file needs libzstd-dev and libssl-dev)" in proc.stderr


@pytest.mark.parametrize("value", ["yes", "true", "2", " 1"])
def test_bad_value_is_an_error(value: str) -> None:
    proc = _run({"PYCASYNC_PUREPYTHON": value}, "import casync_format._siphash")
    assert proc.returncode != 0
    assert "ParameterError" in proc.stderr and "PYCASYNC_PUREPYTHON" in proc.stderr


@pytest.mark.parametrize("name", ["PYCASYNC_PUREPYTHON", "PYCASYNC_REQUIRE_C"])
@pytest.mark.parametrize("value", ["0", ""])
def test_zero_and_empty_mean_off(name: str, value: str) -> None:
    """``=0`` (and empty) is the normal behaviour: the C functions where built, nothing required."""
    code = "import json, casync_format._accel as a; print(json.dumps([a.FORCE_PYTHON, a.REQUIRE_C, a.backends()]))"  # noqa: E501
    off = _run({name: value}, code)
    assert off.returncode == 0, off.stderr
    unset = _run({}, code)
    assert json.loads(off.stdout) == json.loads(unset.stdout)
    assert json.loads(off.stdout)[:2] == [False, False]


def test_pure_python_one_forces_python() -> None:
    code = "import json, casync_format._accel as a; print(json.dumps(a.backends()))"
    proc = _run({"PYCASYNC_PUREPYTHON": "1"}, code)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout).values()) == {"python"}


def test_bad_value_is_one_line_from_the_cli() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    env["PYCASYNC_PUREPYTHON"] = "yes"
    proc = subprocess.run(
        [sys.executable, "pycasync.py", "--version"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "pycasync: error: environment variable PYCASYNC_PUREPYTHON='yes': use 1 (on) or 0 (off), or unset it"
    ]


def test_version_reports_every_backend() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    env["PYCASYNC_PUREPYTHON"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pycasync", "--version"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert line.startswith("pycasync ")
    for name in FUNCTIONS:
        assert f"{name}: python" in line
    assert "zstd: " in line
    _require_c()
    del env["PYCASYNC_PUREPYTHON"]
    proc = subprocess.run(
        [sys.executable, "-m", "pycasync", "--version"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    every = "chunker: c, siphash24: c, catar-goodbye: c, catar-entry: c, chunk-file: c, chunk-fetch: c"
    assert f"({every}, zstd: " in proc.stdout
