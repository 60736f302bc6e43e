"""Deterministic test chunks for the store tests (no tests here).

:data:`METHOD` is the compression a test chunk gets by default (zstd when a
zstd binding is present, else gzip); :func:`make_chunk` builds a small,
compressible chunk from a seed and :func:`random_chunk` an incompressible one
of a given size. Both return ``(id, data, blob)``: the SHA512/256 chunk id,
the uncompressed data and the compressed blob as a store holds it. Used by
``tests/stores/test_store_contract.py``, ``test_store_local.py`` and
``test_store_router_cache.py``.
"""

from __future__ import annotations

import random

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format.digest import SHA512_256

__all__ = ["METHOD", "make_chunk", "random_chunk"]

METHOD = "zstd" if compress.ZSTD_BACKEND else "gzip"


def make_chunk(seed: int, size: int = 3000, method: str = METHOD) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob) of a deterministic chunk."""
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data, chunk_codec.encode(data, method)


def random_chunk(seed: int, size: int) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob) of an incompressible chunk (a big blob is slow to write)."""
    data = random.Random(seed).randbytes(size)
    return SHA512_256(data), data, compress.compress(data, "gzip", level=1)
