"""Regenerate the golden files of tests/data with the real casync.

The inputs are not stored: each is rebuilt from ``random.Random(seed)`` by
:func:`make_input`, and ``golden.json`` records its sha256 so a test can tell
that it rebuilt exactly the bytes casync chunked. The outputs are the
``.caibx`` files under ``index/`` and three tiny chunk stores
(``store-zstd``, ``store-xz``, ``store-gzip``) holding the chunks of
``index/text.caibx`` in each compression casync supports.

Run from anywhere: ``python3 tests/data/make_golden.py [/path/to/casync]``.
It deletes and rewrites index/, store-*/ and golden.json (never chunker/).
Tests import this module only for :func:`make_input` and :data:`GOLDEN`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

__all__ = ["GOLDEN", "STORES", "DATA_DIR", "make_input", "main"]

DATA_DIR = os.path.dirname(os.path.abspath(__file__))

# name -> (input spec, extra casync make arguments)
GOLDEN: dict[str, tuple[dict[str, int | str], list[str]]] = {
    "blob-default.caibx": ({"kind": "random", "seed": 1, "size": 1_000_000}, []),
    "blob-sha256.caibx": ({"kind": "random", "seed": 1, "size": 1_000_000}, ["--digest=sha256"]),
    "blob-chunk-size.caibx": (
        {"kind": "random", "seed": 1, "size": 1_000_000},
        ["--chunk-size=4096:16384:65536"],
    ),
    "blob-repeat.caibx": ({"kind": "repeat", "seed": 3, "size": 200_000, "times": 3}, []),
    "empty.caibx": ({"kind": "random", "seed": 0, "size": 0}, []),
    "text.caibx": ({"kind": "acgt", "seed": 2, "size": 49_152}, ["--chunk-size=2048:8192:32768"]),
}

# Chunk stores holding every chunk of index/text.caibx, one per compression.
STORES = {"store-zstd": "zstd", "store-xz": "xz", "store-gzip": "gzip"}
STORE_INDEX = "text.caibx"

_ACGT = bytes(b"acgt"[i & 3] for i in range(256))


def make_input(spec: dict[str, int | str]) -> bytes:
    """The deterministic input bytes described by a spec of :data:`GOLDEN`.

    ``random``: ``Random(seed).randbytes(size)``; ``acgt``: the same mapped to
    the letters a, c, g, t (compressible); ``repeat``: ``randbytes(size)``
    repeated ``times`` times (an index with duplicate chunk ids).
    """
    raw = random.Random(int(spec["seed"])).randbytes(int(spec["size"]))
    kind = spec["kind"]
    if kind == "random":
        return raw
    if kind == "acgt":
        return raw.translate(_ACGT)
    if kind == "repeat":
        return raw * int(spec["times"])
    raise ValueError(f"unknown input kind {kind!r}")


def _run(casync: str, args: list[str], cwd: str) -> None:
    print("+ casync " + " ".join(args), file=sys.stderr)
    subprocess.run([casync, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _write_input(tmp: str, spec: dict[str, int | str]) -> tuple[str, str]:
    data = make_input(spec)
    path = os.path.join(tmp, "input.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest()


def main(casync: str = "/usr/bin/casync") -> None:
    """Rebuild every golden file with ``casync``."""
    index_dir = os.path.join(DATA_DIR, "index")
    for name in ["index", *STORES]:
        shutil.rmtree(os.path.join(DATA_DIR, name), ignore_errors=True)
    os.makedirs(index_dir)
    version = subprocess.run([casync, "--version"], check=True, capture_output=True, text=True)
    manifest: dict[str, object] = {"casync": version.stdout.strip(), "indexes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (spec, extra) in GOLDEN.items():
            path, sha = _write_input(tmp, spec)
            out = os.path.join(index_dir, name)
            scratch = os.path.join(tmp, "store-" + name)
            _run(casync, ["make", f"--store={scratch}", *extra, out, path], tmp)
            manifest["indexes"][name] = {  # type: ignore[index]
                "input": spec,
                "input_sha256": sha,
                "args": ["make", "--store=STORE", *extra, "index/" + name, "INPUT"],
            }
        spec, extra = GOLDEN[STORE_INDEX]
        path, _ = _write_input(tmp, spec)
        for store, method in STORES.items():
            target = os.path.join(DATA_DIR, store)
            out = os.path.join(tmp, store + ".caibx")
            _run(casync, ["make", f"--store={target}", f"--compression={method}", *extra, out, path], tmp)
            with open(out, "rb") as a, open(os.path.join(index_dir, STORE_INDEX), "rb") as b:
                if a.read() != b.read():
                    raise SystemExit(f"{store}: index differs from index/{STORE_INDEX}")
    with open(os.path.join(DATA_DIR, "golden.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:2])
