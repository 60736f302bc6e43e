"""Tests of casync_format.chunker's parameters, backend selection and find_cut contract.

Every test taking the ``backend`` fixture (``tests/format/conftest.py``) runs
once per backend, C and pure Python; the C run skips when the extension is
not built, but fails under ``PYCASYNC_REQUIRE_C=1``. Covered here: parsing
and validating ChunkerParams, choosing the backend through
``PYCASYNC_PUREPYTHON`` / ``PYCASYNC_REQUIRE_C``, casync's buzhash table, and
what ``find_cut`` / ``find_cuts`` accept and return for each buffer type. The
C/Python parity, parallel and streaming chunking are in
``test_chunker_parallel.py``; agreement with casync's own cut points in
``test_chunker_casync.py``.
"""

from __future__ import annotations

import array
import hashlib
import mmap
import os
import subprocess
import sys
from types import ModuleType

import pytest

from casync_format import _buzhash, chunker
from casync_format.chunker import DEFAULT_PARAMS, ChunkerParams
from casync_format.errors import ParameterError
from tests.support import ROOT, rng_bytes
from tests.support.chunker_helpers import MIB, c_module, ends

# --------------------------------------------------------------------------- parameters


def test_default_params_and_discriminator() -> None:
    assert (DEFAULT_PARAMS.min_size, DEFAULT_PARAMS.avg_size, DEFAULT_PARAMS.max_size) == (
        16384,
        65536,
        262144,
    )
    assert DEFAULT_PARAMS.discriminator == 49535  # casync-verified by the golden tests
    assert ChunkerParams(1024, 1100, 1200).discriminator == 1024  # 825, clamped up to min
    assert ChunkerParams(4096, 4096, 65536).discriminator == 4096
    # above ~9.3 MiB casync's denominator is negative; on x86-64 that clamps to max
    assert ChunkerParams(4096, 10_000_000, 16_000_000).discriminator == 16_000_000
    assert ChunkerParams(4096, 9_000_000, 16_000_000).discriminator == 16_000_000
    with pytest.raises(AttributeError):
        DEFAULT_PARAMS.min_size = 1  # type: ignore[misc]


def test_from_string() -> None:
    assert ChunkerParams.from_string("16:64:256") == DEFAULT_PARAMS
    assert ChunkerParams.from_string(" 1 : 4 : 16 ") == ChunkerParams(1024, 4096, 16384)
    assert ChunkerParams.from_string("128:128:131072").max_size == 128 * MIB


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("16:64", "'16:64'"),
        ("16:64:256:1024", "'16:64:256:1024'"),
        ("a:b:c", "'a:b:c'"),
        ("16:64:x", "'16:64:x'"),
        ("", "''"),
        ("-1:64:256", "'-1:64:256'"),
        ("16.5:64:256", "'16.5:64:256'"),
        ("0:64:256", "hash window"),
        ("64:16:256", "larger than the average"),
        ("16:512:256", "larger than the maximum"),
        ("16:64:131073", "exceeds casync's limit"),
        ("1:2:\u00b3", "'1:2:\u00b3'"),
    ],
)
def test_from_string_errors(text: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as info:
        ChunkerParams.from_string(text)
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert repr(text) in message


@pytest.mark.parametrize(
    ("sizes", "fragment"),
    [
        ((48, 64, 256), "48"),
        ((0, 64, 256), "hash window"),
        ((-5, 64, 256), "hash window"),
        ((100, 99, 256), "larger than the average"),
        ((64, 300, 256), "larger than the maximum"),
        ((64, 256, 128 * MIB + 1), "134217729"),
        ((64.0, 256, 1024), "integers"),
        (("64", 256, 1024), "integers"),
        ((True, 256, 1024), "integers"),
    ],
)
def test_params_errors(sizes: tuple[object, object, object], fragment: str) -> None:
    with pytest.raises(ParameterError, match=fragment):
        ChunkerParams(*sizes)  # type: ignore[arg-type]


def test_params_limits_accepted() -> None:
    ChunkerParams(49, 49, 49)
    ChunkerParams(49, 64, 128 * MIB)


# --------------------------------------------------------------------------- backend selection


def _import_in_child(env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = prelude + "import casync_format.chunker as c; print(c.BACKEND)"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYCASYNC_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=ROOT, capture_output=True, text=True
    )


def test_env_forces_pure_python() -> None:
    proc = _import_in_child({"PYCASYNC_PUREPYTHON": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "python"


@pytest.mark.parametrize("name", ["PYCASYNC_PUREPYTHON", "PYCASYNC_REQUIRE_C"])
def test_env_bad_value_is_an_error(name: str) -> None:
    proc = _import_in_child({name: "yes"})
    assert proc.returncode != 0
    assert "ParameterError" in proc.stderr and name in proc.stderr


def test_missing_c_module_falls_back_or_fails() -> None:
    hide = "import sys; sys.modules['casync_format._chunker'] = None; "
    proc = _import_in_child({}, hide)
    assert proc.returncode == 0 and proc.stdout.strip() == "python", proc.stderr
    proc = _import_in_child({"PYCASYNC_REQUIRE_C": "1"}, hide)
    assert proc.returncode != 0 and "PYCASYNC_REQUIRE_C=1" in proc.stderr


def test_live_backend_is_c_when_built() -> None:
    c_module()
    proc = _import_in_child({"PYCASYNC_REQUIRE_C": "1"})
    assert proc.returncode == 0 and proc.stdout.strip() == "c", proc.stderr
    if os.environ.get("PYCASYNC_PUREPYTHON") != "1":
        assert chunker.BACKEND == "c"


# --------------------------------------------------------------------------- find_cut contract


# sha256 of casync's buzhash table as 256 little-endian uint32 (src/cachunker.c)
TABLE_SHA256 = "5b52080d38287da9d2e278466e3e0db7ec98e5e8b226f50612a56fa012b1f660"


def test_table_is_casyncs() -> None:
    raw = b"".join(v.to_bytes(4, "little") for v in _buzhash.TABLE)
    assert len(_buzhash.TABLE) == 256
    assert _buzhash.TABLE[0] == 0x458BE752 and _buzhash.TABLE[255] == 0xD95DDF11
    assert hashlib.sha256(raw).hexdigest() == TABLE_SHA256


def test_find_cut_basics(backend: ModuleType) -> None:
    data = rng_bytes(50_000, 1)
    # too little data for even the minimum chunk
    assert backend.find_cut(data, 0, 99, 100, 1000, 300) == -1
    # d == 1: every position is a cut, so the earliest one wins
    assert backend.find_cut(data, 10, len(data), 100, 1000, 1) == 110
    # fixed size: min == max
    assert backend.find_cut(data, 7, 107, 100, 100, 100) == 107
    assert backend.find_cut(data, 7, 106, 100, 100, 100) == -1
    # a huge discriminator practically never hits: the cut is at max, if max fits before end
    assert backend.find_cut(data, 5, len(data), 100, 20_000, 1 << 31) == 20_005
    assert backend.find_cut(data, 5, 20_004, 100, 20_000, 1 << 31) == -1
    # the result only depends on the bytes in [start, end)
    full = backend.find_cut(data, 1000, len(data), 64, 30_000, 5000)
    assert 1064 <= full <= 31_000
    assert backend.find_cut(data[: full + 1], 1000, full + 1, 64, 30_000, 5000) == full
    assert backend.find_cut(data, 1000, full, 64, 30_000, 5000) == full
    assert backend.find_cut(data, 1000, full - 1, 64, 30_000, 5000) == -1


def test_find_cuts_chain(backend: ModuleType) -> None:
    data = rng_bytes(40_000, 2)
    args = (64, 2000, 700)
    chain, pos = [], 0
    while (pos := backend.find_cut(data, pos, len(data), *args)) >= 0:
        chain.append(pos)
    assert backend.find_cuts(data, 0, len(data), *args, len(data) + 1) == chain
    stop = chain[5] - 1
    assert backend.find_cuts(data, 0, len(data), *args, stop) == chain[:6]
    assert backend.find_cuts(data, 0, len(data), *args, chain[5]) == chain[:6]
    assert backend.find_cuts(data, 0, len(data), *args, 0) == chain[:1]
    assert backend.find_cuts(data, chain[-1], len(data), *args, 1 << 40) == []
    assert backend.find_cuts(data, 0, 10, *args, 1 << 40) == []


@pytest.mark.parametrize(
    "args",
    [
        (-1, 100, 64, 128, 10),  # start < 0
        (50, 40, 64, 128, 10),  # start > end
        (0, 1001, 64, 128, 10),  # end > len
        (0, 100, 47, 128, 10),  # min below the window
        (0, 100, 129, 128, 10),  # min > max
        (0, 100, 64, 128, 0),  # discriminator 0
        (0, 100, 64, 128, (1 << 31) + 1),  # discriminator above 2**31
    ],
)
def test_find_cut_rejects_bad_arguments(backend: ModuleType, args: tuple[int, ...]) -> None:
    data = bytes(1000)
    with pytest.raises(ValueError):
        backend.find_cut(data, *args)
    with pytest.raises(ValueError):
        backend.find_cuts(data, *args, 1000)
    with pytest.raises(TypeError):
        backend.find_cut("not bytes", 0, 1, 64, 128, 10)
    with pytest.raises(TypeError):
        backend.find_cut(data, 0.0, 100, 64, 128, 10)


def test_buffer_types(backend: ModuleType, tmp_path: os.PathLike[str]) -> None:
    data = rng_bytes(30_000, 3)
    params = ChunkerParams(64, 400, 1500)
    args = (0, len(data), 64, 1500, params.discriminator, 1 << 40)
    expect = backend.find_cuts(data, *args)
    words = array.array("I")
    words.frombytes(data)
    path = os.path.join(tmp_path, "f")
    with open(path, "wb") as out:
        out.write(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for buf in (bytearray(data), memoryview(data), array.array("B", data), words, mapped):
            assert backend.find_cuts(buf, *args) == expect
        assert ends(mapped, params, backend) == [*expect, len(data)]
        assert ends(mapped, params, backend, workers=2, segment_size=5000) == [*expect, len(data)]
    # a view that starts inside a larger buffer
    shifted = memoryview(b"xyz" + data)[3:]
    assert backend.find_cuts(shifted, *args) == expect
