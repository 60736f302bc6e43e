"""Blob interoperability with the real casync, through pycasync's command line.

For many inputs (empty, tiny, around the 48-byte window and the chunk size
limits, random, zeros, text, repeated blocks, a few MB) under several chunk
sizes and both digests: ``pycasync make`` writes the very bytes ``casync make``
writes, casync extracts the blob from pycasync's store, and pycasync extracts
it from casync's. casync's xz- and gzip-compressed stores are readable too.
The ``casync`` fixture skips these tests without casync, or fails them under
``CI=true``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from typing import Callable

import pytest

from tests.support import CLI, ROOT


def rng_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


KIB = 1024

# -m settings (KiB) exercised against casync, passed to casync in bytes.
PARAMS = ["16:64:256", "1:4:16", "4:8:32"]
DIGESTS = ["sha512-256", "sha256"]


def pycasync(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    stdin = subprocess.DEVNULL if input is None else None
    proc = subprocess.run(
        [sys.executable, CLI, *args], input=input, stdin=stdin, capture_output=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def casync_size(params: str) -> str:
    return ":".join(str(int(x) * KIB) for x in params.split(":"))


def _repeated(n: int) -> bytes:
    blocks = [rng_bytes(5000, s) for s in range(4)]
    out = b"".join(blocks[i % 3] + blocks[3][: i * 37 % 5000] for i in range(n // 8000 + 1))
    return out[:n]


def _text(n: int) -> bytes:
    words = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()
    out, i = bytearray(), 0
    while len(out) < n:
        out += words[(i * 7 + i // 13) % len(words)] + (b"\n" if i % 11 == 10 else b" ")
        i += 1
    return bytes(out[:n])


def inputs_for(params: str) -> dict[str, bytes]:
    """Named inputs; the size-limit ones are relative to this -m setting."""
    lo, _, hi = (int(x) * KIB for x in params.split(":"))
    cases = {
        "empty": b"",
        "one-byte": b"\x01",
        "window-1": rng_bytes(47, 1),
        "window": rng_bytes(48, 2),
        "window+1": rng_bytes(49, 3),
        "min-1": rng_bytes(lo - 1, 4),
        "min": rng_bytes(lo, 5),
        "min+1": rng_bytes(lo + 1, 6),
        "max-1": rng_bytes(hi - 1, 7),
        "max": rng_bytes(hi, 8),
        "max+1": rng_bytes(hi + 1, 9),
        "zeros": bytes(700 * KIB),
        "text": _text(300 * KIB),
        "repeated": _repeated(600 * KIB),
    }
    if params == PARAMS[0]:
        cases["random-3M"] = rng_bytes(3 * 1024 * KIB, 10)
    return cases


CASES = [(p, d, name) for p in PARAMS for d in DIGESTS for name in inputs_for(p)]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("interop"))


@pytest.mark.parametrize("params, digest, name", CASES, ids=[f"{p}-{d}-{n}" for p, d, n in CASES])
def test_make_matches_casync_and_stores_interoperate(
    params: str,
    digest: str,
    name: str,
    workdir: str,
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    data = inputs_for(params)[name]
    case = os.path.join(workdir, f"{params.replace(':', '_')}-{digest}-{name}")
    os.mkdir(case)
    blob = os.path.join(case, "blob")
    with open(blob, "wb") as f:
        f.write(data)
    ours, theirs = os.path.join(case, "ours.caibx"), os.path.join(case, "casync.caibx")
    our_store, their_store = os.path.join(case, "ours.store"), os.path.join(case, "casync.store")

    run_casync(
        "make",
        f"--store={their_store}",
        f"--chunk-size={casync_size(params)}",
        f"--digest={digest}",
        theirs,
        blob,
    )
    pycasync("make", "-s", our_store, "-m", params, "--digest", digest, ours, blob)
    with open(ours, "rb") as a, open(theirs, "rb") as b:
        assert a.read() == b.read(), "index differs from casync's"

    # casync reads our store; we read casync's.
    out1, out2 = os.path.join(case, "out-casync"), os.path.join(case, "out-ours")
    run_casync("extract", f"--store={our_store}", ours, out1)
    pycasync("extract", "-s", their_store, theirs, out2)
    for out in (out1, out2):
        with open(out, "rb") as f:
            assert f.read() == data


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd"])
def test_read_casync_compressed_store(
    compression: str,
    tmp_path: os.PathLike[str],
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    data = _repeated(400 * KIB) + rng_bytes(300 * KIB, 11)
    blob, index = os.path.join(tmp_path, "blob"), os.path.join(tmp_path, "x.caibx")
    store = os.path.join(tmp_path, "store")
    with open(blob, "wb") as f:
        f.write(data)
    run_casync("make", f"--compression={compression}", f"--store={store}", index, blob)
    out = os.path.join(tmp_path, "out")
    pycasync("extract", "-s", store, index, out)
    with open(out, "rb") as f:
        assert f.read() == data
    pycasync("verify", "-s", store)
    listed = pycasync("list-chunks", index).stdout.decode().split()
    assert listed and all(len(x) == 64 for x in listed)


@pytest.mark.parametrize("compression", ["xz", "gzip"])
def test_casync_reads_our_compressed_store(
    compression: str,
    tmp_path: os.PathLike[str],
    run_casync: Callable[..., subprocess.CompletedProcess[bytes]],
) -> None:
    data = rng_bytes(400 * KIB, 13) + _repeated(200 * KIB)
    blob, index = os.path.join(tmp_path, "blob"), os.path.join(tmp_path, "x.caibx")
    store = os.path.join(tmp_path, "store")
    with open(blob, "wb") as f:
        f.write(data)
    pycasync("make", "--compression", compression, "-s", store, index, blob)
    first = sorted(n for n in os.listdir(store) if not n.startswith("."))[0]  # not .pycasync-writers
    chunk_file = os.path.join(store, first, os.listdir(os.path.join(store, first))[0])
    with open(chunk_file, "rb") as f:
        magic = f.read(6)
    assert magic.startswith(b"\xfd7zXZ" if compression == "xz" else b"\x1f\x8b")
    out = os.path.join(tmp_path, "out")
    run_casync("extract", f"--store={store}", index, out)
    with open(out, "rb") as f:
        assert f.read() == data


def test_casync_reads_index_from_our_stdout(
    tmp_path: os.PathLike[str], run_casync: Callable[..., subprocess.CompletedProcess[bytes]]
) -> None:
    data = rng_bytes(500 * KIB, 12)
    blob, store = os.path.join(tmp_path, "blob"), os.path.join(tmp_path, "store")
    with open(blob, "wb") as f:
        f.write(data)
    index_bytes = pycasync("make", "-s", store, "-", blob).stdout
    index = os.path.join(tmp_path, "x.caibx")
    with open(index, "wb") as f:
        f.write(index_bytes)
    out = os.path.join(tmp_path, "out")
    run_casync("extract", f"--store={store}", index, out)
    with open(out, "rb") as f:
        assert f.read() == data
