"""Regenerate the chunker's golden files (tests/data/chunker) with the real casync.

For every case of :func:`cases` (an input spec and a chunk-size setting) this
builds the input with :func:`make_input`, runs ``casync make`` on it and keeps
casync's ``.caibx``, whose table holds casync's chunk end offsets. The inputs
are not stored: ``golden.json`` records each case's spec, chunk sizes and the
input's sha256, so tests/format/test_chunker_casync.py rebuilds the exact bytes casync
chunked and compares its cut points with casync's.

Run from anywhere: ``python3 tests/data/chunker/make_golden.py [/path/to/casync]``.
It deletes and rewrites every ``*.caibx`` and ``golden.json`` in this
directory. The ``exact-min`` inputs are crafted here (with pycasync's own
chunker, to find 3 bytes that make casync cut at exactly the minimum size);
the found bytes are recorded in the spec, so rebuilding needs no search.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Any, Callable

__all__ = ["PARAMS", "DATA_DIR", "cases", "make_input", "main"]

DATA_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(DATA_DIR)))

# name -> (min, avg, max) in bytes, as given to casync --chunk-size
PARAMS: dict[str, tuple[int, int, int]] = {
    "default": (16384, 65536, 262144),
    "small": (64, 256, 1024),
    "tiny": (49, 100, 400),  # the smallest minimum pycasync accepts
    "fixed": (1000, 1000, 1000),  # min == avg == max: fixed-size chunks
    "avg-eq-max": (2048, 8192, 8192),
    "min-eq-avg": (4096, 4096, 65536),
    "clamp-min": (1024, 1100, 1200),  # discriminator 825 is clamped up to min
    "huge-avg": (4096, 10_000_000, 16_000_000),  # negative denominator: d = max
}

_WORDS = (  # a word list: split at use
    "the of and to in is that it was for on are as with his they at be this from have or by one had "
    "not but what all were when we there can an your which their said if do will each about how up out "
    "them then she many some so these would other into has more her two like him see time could no make "
    "than first been its who now people my made over did down only way find use may water long little"
)


def _text(rng: random.Random, size: int) -> bytes:
    words = _WORDS.split()
    out: list[str] = []
    length = 0
    while length < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))).capitalize() + ".\n"
        out.append(line)
        length += len(line)
    return "".join(out).encode()[:size]


def make_input(spec: dict[str, Any]) -> bytes:
    """The deterministic bytes a spec describes.

    ``random``: ``Random(seed).randbytes(size)``; ``zeros``: ``size`` zero
    bytes; ``text``: English-like lines of words drawn by ``Random(seed)``;
    ``repeat``: one ``randbytes(block)`` repeated ``times`` times, copy ``i``
    with byte ``i * 7919 % block`` incremented for odd ``i``; ``exact-min``:
    for each hex string in ``suffixes``, ``randbytes(min - 3)`` plus those 3
    bytes (one chunk of exactly ``min`` bytes each), then ``randbytes(tail)``,
    all from one ``Random(seed)``.
    """
    kind = spec["kind"]
    rng = random.Random(spec.get("seed", 0))
    if kind == "random":
        return rng.randbytes(spec["size"])
    if kind == "zeros":
        return bytes(spec["size"])
    if kind == "text":
        return _text(rng, spec["size"])
    if kind == "repeat":
        block = rng.randbytes(spec["block"])
        copies = []
        for i in range(spec["times"]):
            copy = bytearray(block)
            if i % 2:
                at = i * 7919 % len(copy)
                copy[at] = (copy[at] + 1) & 0xFF
            copies.append(bytes(copy))
        return b"".join(copies)
    if kind == "exact-min":
        parts = [rng.randbytes(spec["min"] - 3) + bytes.fromhex(s) for s in spec["suffixes"]]
        return b"".join(parts) + rng.randbytes(spec["tail"])
    raise ValueError(f"unknown input kind {kind!r}")


def _find_suffixes(seed: int, params: tuple[int, int, int], count: int, tail: int) -> dict[str, Any]:
    """Search 3-byte chunk endings that make each of ``count`` chunks exactly min long."""
    sys.path.insert(0, ROOT)
    from casync_format.chunker import ChunkerParams, _backends

    backend = _backends().get("c") or _backends()["python"]
    mn, _, mx = params
    d = ChunkerParams(*params).discriminator
    rng = random.Random(seed)
    suffixes = []
    for _ in range(count):
        chunk = bytearray(rng.randbytes(mn - 3) + b"\0\0\0")
        for n in range(1 << 24):
            chunk[-3:] = n.to_bytes(3, "big")
            if backend.find_cut(chunk, 0, mn, mn, mx, d) == mn:
                suffixes.append(bytes(chunk[-3:]).hex())
                break
        else:
            raise RuntimeError("no 3-byte suffix cuts at min")
    return {"kind": "exact-min", "seed": seed, "min": mn, "suffixes": suffixes, "tail": tail}


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def cases(search: Callable[..., dict[str, Any]] = _find_suffixes) -> dict[str, tuple[str, dict[str, Any]]]:
    """case name -> (PARAMS name, input spec). ``search`` builds exact-min specs."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for seed, (pname, (mn, avg, mx)) in enumerate(PARAMS.items(), start=100):
        specs: dict[str, dict[str, Any]] = {}
        if pname in ("default", "tiny"):
            specs["empty"] = {"kind": "random", "seed": seed, "size": 0}
            specs["one-byte"] = {"kind": "random", "seed": seed, "size": 1}
        sizes = [mn - 1, mn, mn + 1] + ([mx - 1, mx, mx + 1] if mx <= 262144 else [])
        for size in sizes:
            specs[f"random-{size}"] = {"kind": "random", "seed": seed, "size": size}
        specs["random"] = {"kind": "random", "seed": seed + 1, "size": _clamp(64 * avg, 32768, 2 << 20)}
        specs["text"] = {"kind": "text", "seed": seed + 2, "size": _clamp(32 * avg, 16384, 1 << 20)}
        if mx <= 262144:
            specs["zeros"] = {"kind": "zeros", "size": 3 * mx + 100}
            specs["repeat"] = {"kind": "repeat", "seed": seed + 3, "block": 2 * mx + 123, "times": 4}
        if mn < mx and pname != "huge-avg":
            specs["exact-min"] = search(seed + 4, (mn, avg, mx), 4, 2 * mx)
        for iname, spec in specs.items():
            out[f"{pname}.{iname}"] = (pname, spec)
    return out


def _casync_ends(casync: str, data: bytes, params: tuple[int, int, int], caibx: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "input")
        with open(path, "wb") as f:
            f.write(data)
        size = "--chunk-size={}:{}:{}".format(*params)
        store = "--store=" + os.path.join(tmp, "store")
        subprocess.run([casync, "make", store, size, caibx, path], check=True, capture_output=True)


def main(argv: list[str]) -> None:
    """Rewrite golden.json and the .caibx files with the casync at argv[1]."""
    casync = argv[1] if len(argv) > 1 else "/usr/bin/casync"
    for name in os.listdir(DATA_DIR):
        if name.endswith(".caibx"):
            os.remove(os.path.join(DATA_DIR, name))
    manifest = []
    for name, (pname, spec) in cases().items():
        data = make_input(spec)
        _casync_ends(casync, data, PARAMS[pname], os.path.join(DATA_DIR, name + ".caibx"))
        sha = hashlib.sha256(data).hexdigest()
        manifest.append({"name": name, "params": list(PARAMS[pname]), "input": spec, "sha256": sha})
    version = subprocess.run([casync, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    with open(os.path.join(DATA_DIR, "golden.json"), "w") as f:
        json.dump({"casync": version, "cases": manifest}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv)
