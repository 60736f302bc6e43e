"""SipHash-2-4 with a 64-bit result, as casync hashes catar file names.

casync keys the hash of each directory entry's name (its goodbye table) with
a fixed 16-byte key; this module owns only the hash function itself, in pure
Python over the standard library, and picks the C implementation of the
optional extension ``casync_format._chunker`` when :mod:`._accel` lets it (same
results; the pure-Python one stays available as :func:`siphash24_py`).
"""

from __future__ import annotations

import struct
from typing import Callable

from . import _accel

__all__ = ["siphash24", "siphash24_py", "siphash24_c"]

_M = 0xFFFFFFFFFFFFFFFF


def _rounds(v: tuple[int, int, int, int], n: int) -> tuple[int, int, int, int]:
    """``n`` SipRounds over the state ``v``."""
    v0, v1, v2, v3 = v
    for _ in range(n):
        v0 = (v0 + v1) & _M
        v1 = ((v1 << 13) | (v1 >> 51)) & _M ^ v0
        v0 = ((v0 << 32) | (v0 >> 32)) & _M
        v2 = (v2 + v3) & _M
        v3 = ((v3 << 16) | (v3 >> 48)) & _M ^ v2
        v0 = (v0 + v3) & _M
        v3 = ((v3 << 21) | (v3 >> 43)) & _M ^ v0
        v2 = (v2 + v1) & _M
        v1 = ((v1 << 17) | (v1 >> 47)) & _M ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & _M
    return v0, v1, v2, v3


def siphash24_py(data: bytes, key: bytes) -> int:
    """The SipHash-2-4 of ``data`` under the 16-byte ``key``, as an unsigned 64-bit int."""
    if len(key) != 16:
        raise ValueError("siphash24 needs a 16-byte key")
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573
    length = len(data)
    whole = length - length % 8
    words = list(struct.unpack(f"<{whole // 8}Q", data[:whole]))
    words.append(((length & 0xFF) << 56) | int.from_bytes(data[whole:], "little"))
    v = (v0, v1, v2, v3)
    for m in words:
        v = _rounds((v[0], v[1], v[2], v[3] ^ m), 2)
        v = (v[0] ^ m, v[1], v[2], v[3])
    v0, v1, v2, v3 = _rounds((v[0], v[1], v[2] ^ 0xFF, v[3]), 4)
    return v0 ^ v1 ^ v2 ^ v3


siphash24_c: Callable[[bytes, bytes], int] | None = _accel.c_function("siphash24")
"""The C SipHash-2-4 of the optional extension, or None when it is not built or not used
(``PYCASYNC_PUREPYTHON=1``; see :mod:`casync_format._accel`)."""

siphash24: Callable[[bytes, bytes], int] = siphash24_c or siphash24_py
"""The SipHash-2-4 of ``data`` under the 16-byte ``key`` (C when available, else pure Python)."""
