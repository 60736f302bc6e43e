"""casync's GOODBYE record: the per-directory lookup table closing a catar directory.

Every directory's children end with a GOODBYE record holding one item per
child — ``(offset back from the GOODBYE record to the child's FILENAME
record, size of FILENAME + child's serialization, siphash24 of the name)`` —
followed by a tail ``(offset back to the directory's ENTRY record, size of
the GOODBYE record, CA_FORMAT_GOODBYE_TAIL_MARKER)``. The items are sorted by
(hash, position) and then permuted into an array-embedded binary search tree
(children of slot ``i`` at ``2i+1`` / ``2i+2``), exactly as casync's
``ca_make_bst`` lays it out, so the bytes match casync's archives.
:func:`encode_goodbye` is the C version of the optional extension
``casync_format._chunker`` when :mod:`._accel` lets it, else the pure-Python
:func:`encode_goodbye_py` (same bytes).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from typing import Callable

from . import _accel
from ._siphash import siphash24
from .constants import CA_FORMAT_GOODBYE, CA_FORMAT_GOODBYE_TAIL_MARKER

__all__ = [
    "GOODBYE_HASH_KEY",
    "GOODBYE_ITEM_SIZE",
    "goodbye_hash",
    "make_bst",
    "encode_goodbye",
    "encode_goodbye_py",
    "encode_goodbye_c",
    "goodbye_size",
]

# CA_FORMAT_GOODBYE_HASH_KEY of casync's caformat.h.
GOODBYE_HASH_KEY = bytes.fromhex("b3841d0f2b447485c12ec2d130ed3627")
GOODBYE_ITEM_SIZE = 24  # three little-endian uint64: offset, size, hash (the tail has the same size)

_ITEM = struct.Struct("<QQQ")
_HEADER = struct.Struct("<QQ")


@functools.lru_cache(maxsize=16384)  # names recur across directories (README, __init__.py, ...)
def goodbye_hash(name: bytes) -> int:
    """casync's hash of a directory entry name (no trailing NUL) for GOODBYE items."""
    return siphash24(name, GOODBYE_HASH_KEY)


def make_bst(items: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Permute ``items`` (already sorted) into casync's array-embedded search tree.

    The root goes to slot 0 and the subtrees of slot ``i`` to ``2i+1`` (smaller)
    and ``2i+2`` (larger). The split point of each subtree is chosen as casync's
    ``ca_make_bst`` chooses it, which fills the array as a complete tree.
    """
    count = len(items)
    out: list[tuple[int, int, int]] = [(0, 0, 0)] * count
    if count == 0:
        return out
    stack = [(0, count, count.bit_length(), 0)]  # (first, length, height e, slot)
    while stack:
        first, length, height, slot = stack.pop()
        if length == 0:
            continue
        half = 1 << (height - 1)  # p: the size of a full tree one level lower, plus one
        full_root = ((half << 1) - 2) // 2  # root index when the subtree is at least 3/4 full
        threshold = half - 1 + half // 2
        root = full_root if length >= threshold else full_root - (threshold - length)
        out[slot] = items[first + root]
        stack.append((first, root, height - 1, 2 * slot + 1))
        stack.append((first + root + 1, length - root - 1, height - 1, 2 * slot + 2))
    return out


def goodbye_size(count: int) -> int:
    """Size in bytes of a GOODBYE record with ``count`` items (header + items + tail)."""
    return _HEADER.size + GOODBYE_ITEM_SIZE * (count + 1)


def encode_goodbye_py(
    children: Sequence[tuple[int, int, int]], goodbye_offset: int, entry_offset: int
) -> bytes:
    """The GOODBYE record for one directory (pure Python).

    ``children`` holds ``(hash, start, end)`` per child in archive order, where
    ``start`` is the archive offset of its FILENAME record and ``end`` the
    offset just past its serialization; ``goodbye_offset`` is where this record
    starts and ``entry_offset`` where the directory's ENTRY record starts.
    """
    size = goodbye_size(len(children))
    ordered = make_bst(sorted(children))
    parts = [_HEADER.pack(size, CA_FORMAT_GOODBYE)]
    parts.extend(_ITEM.pack(goodbye_offset - start, end - start, h) for h, start, end in ordered)
    parts.append(_ITEM.pack(goodbye_offset - entry_offset, size, CA_FORMAT_GOODBYE_TAIL_MARKER))
    return b"".join(parts)


_GoodbyeFunc = Callable[[Sequence[tuple[int, int, int]], int, int], bytes]


def _load_c() -> _GoodbyeFunc | None:
    build = _accel.c_function("catar-goodbye")
    if build is None:  # not built, built before the function existed, or PYCASYNC_PUREPYTHON=1
        return None

    def encode_goodbye_c(
        children: Sequence[tuple[int, int, int]], goodbye_offset: int, entry_offset: int
    ) -> bytes:
        """The GOODBYE record for one directory (C; same bytes as :func:`encode_goodbye_py`)."""
        return build(children, goodbye_offset, entry_offset, CA_FORMAT_GOODBYE, CA_FORMAT_GOODBYE_TAIL_MARKER)

    return encode_goodbye_c


encode_goodbye_c: _GoodbyeFunc | None = _load_c()
"""The C GOODBYE encoder of the optional extension, or None when it is not built or not used."""

encode_goodbye: _GoodbyeFunc = encode_goodbye_c or encode_goodbye_py
"""The GOODBYE record for one directory (C when available, else pure Python); see
:func:`encode_goodbye_py` for the arguments."""
