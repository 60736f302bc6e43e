"""Tests that casync_format.chunker cuts where casync does.

Cut points are checked against casync three ways: the golden ``.caibx``
files of tests/data/chunker (made by the real casync, see its README, and
checked complete against ``golden.json`` and ``make_golden.py``), a live
``casync make`` on the same inputs and on random ones (skipped without casync,
failing under ``CI=true``), and pinned sha256 hashes of cut lists that were
verified against casync once. Tests taking the ``backend`` fixture run once
per backend (C and pure Python).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import subprocess
import tempfile
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format import _buzhash, chunker
from casync_format.chunker import ChunkerParams
from casync_format.index import read_index
from tests.support import ROOT, rng_bytes
from tests.support.chunker_helpers import chunk_params, ends

GOLDEN_DIR = os.path.join(ROOT, "tests", "data", "chunker")


def _load_make_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "chunker_golden", os.path.join(GOLDEN_DIR, "make_golden.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_golden = _load_make_golden()
with open(os.path.join(GOLDEN_DIR, "golden.json")) as _f:
    GOLDEN = {case["name"]: case for case in json.load(_f)["cases"]}


def caibx_ends(path: str) -> list[int]:
    with open(path, "rb") as f:
        return [c.start + c.size for c in read_index(f)]


# --------------------------------------------------------------------------- casync golden data


@functools.cache
def golden_input(name: str) -> bytes:
    case = GOLDEN[name]
    data = make_golden.make_input(case["input"])
    assert hashlib.sha256(data).hexdigest() == case["sha256"], "input generator changed"
    return data


def test_golden_files_complete() -> None:
    """golden.json, the .caibx files and make_golden's case list agree."""
    on_disk = {n[: -len(".caibx")] for n in os.listdir(GOLDEN_DIR) if n.endswith(".caibx")}
    assert on_disk == set(GOLDEN)
    assert set(make_golden.cases(search=lambda seed, *a: {}).keys()) == set(GOLDEN)
    assert {tuple(c["params"]) for c in GOLDEN.values()} == set(make_golden.PARAMS.values())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_caibx(backend: ModuleType, name: str) -> None:
    """Our cuts equal the chunk ends casync wrote into the golden index."""
    case = GOLDEN[name]
    params = ChunkerParams(*case["params"])
    theirs = caibx_ends(os.path.join(GOLDEN_DIR, name + ".caibx"))
    assert ends(golden_input(name), params, backend) == theirs
    kind = case["input"]["kind"]
    sizes = [b - a for a, b in zip([0, *theirs], theirs)][:-1]
    if kind == "zeros":  # a constant window: every chunk is max (or min, if the constant hits)
        assert len(set(sizes)) == 1 and sizes[0] in (params.max_size, params.min_size)
    if kind == "exact-min":
        assert sizes[:4] == [params.min_size] * 4


@functools.cache
def _casync_ends(casync: str, data: bytes, sizes: tuple[int, int, int]) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        path, caibx = os.path.join(tmp, "input"), os.path.join(tmp, "out.caibx")
        with open(path, "wb") as f:
            f.write(data)
        argv = [casync, "make", "--store=" + os.path.join(tmp, "store")]
        argv += ["--chunk-size={}:{}:{}".format(*sizes), caibx, path]
        subprocess.run(argv, check=True, capture_output=True)
        return caibx_ends(caibx)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_live_casync(casync: str, name: str) -> None:
    """A fresh ``casync make`` still cuts like the golden file and like us.

    Checked with the fastest backend; test_golden_caibx holds both to the file.
    """
    case = GOLDEN[name]
    data = golden_input(name)
    theirs = _casync_ends(casync, data, tuple(case["params"]))
    assert theirs == caibx_ends(os.path.join(GOLDEN_DIR, name + ".caibx"))
    fastest = chunker._backends().get("c", _buzhash)
    assert ends(data, ChunkerParams(*case["params"]), fastest) == theirs


@settings(max_examples=12)
@given(params=chunk_params(), size=st.integers(0, 20_000), seed=st.integers(0, 1 << 32), zeros=st.booleans())
def test_live_casync_random(casync: str, params: ChunkerParams, size: int, seed: int, zeros: bool) -> None:
    data = bytes(size) if zeros else rng_bytes(size, seed)
    sizes = (params.min_size, params.avg_size, params.max_size)
    assert ends(data, params) == _casync_ends(casync, data, sizes)


# Cut lists of rng_bytes(PIN_SIZE, PIN_SEED), sha256 of "end1,end2,...", each
# computed once from casync's own output (casync 2, Debian 2+20201210-1+b1)
# and identical to ours then. A change here means pycasync cuts differently.
PIN_SEED, PIN_SIZE = 1717, 1 << 19
PINNED = {
    (49, 100, 400): "958e570ed36d460ccaf68a6f8ac26a1a5435de5949f445fa86e837899e3de575",  # 4281 chunks
    (64, 256, 1024): "0eebcb52abf21be9f969d115378c3090975c552e7e47fdde04c280ca800e1d2f",  # 2064 chunks
    (1000, 1000, 1000): "735953621b3efd1b4d096381ff8d1782f4c55b8375f5e556e878003e4d96205c",  # 525 chunks
    (1024, 1100, 1200): "867c53ce9cb0539785e8396040bd177e4621f2a074809bfaaf22862d4c6c1587",  # 444 chunks
    (1024, 4096, 16384): "a9ff0e4d6fb76f2e640590f84536f3be85fa38cbc86608feabdf131f49c3606d",  # 128 chunks
    (2048, 8192, 8192): "9d5ba211df5c856d2c6e153c1ff73ccf23d2da609cb6e4c7ee63906d126e6cfe",  # 90 chunks
    (4096, 16384, 65536): "367bd6d0924f04127089a1035fb17ea2669e69a60ad993cb7a6dcd7a408dbfd1",  # 32 chunks
    (16384, 65536, 262144): "3c523eaf4959228c24cfd4335b31fd1206f78885e6825d2f7298d9a7b167ef1e",  # 6 chunks
    (4096, 10_000_000, 16_000_000): "9c3e3e92d4ad0b3065145a5df79e77f238ccaeb2e6c840856a7d0e184d208ee4",  # 1
}


@pytest.mark.parametrize("sizes", sorted(PINNED))
def test_cut_points_unchanged(backend: ModuleType, sizes: tuple[int, int, int]) -> None:
    data = rng_bytes(PIN_SIZE, PIN_SEED)
    cuts = ends(data, ChunkerParams(*sizes), backend)
    assert hashlib.sha256(",".join(map(str, cuts)).encode()).hexdigest() == PINNED[sizes]
