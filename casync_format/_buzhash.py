"""Pure-Python reference of casync's content-defined chunker.

This module owns the buzhash table (the 256 values casync's ``cachunker.c``
uses) and the cut search itself, written for clarity rather than speed (it
scans about 1-2 MB/s). The C extension ``casync_format._chunker`` exports the
same functions with the same signatures, arguments checks and results;
:mod:`casync_format.chunker` picks one of the two and builds the chunking API
on top. Both functions are stateless: a chunk's end depends only on where it
starts and on the bytes after that, because casync resets the rolling hash
at every cut.
"""

from __future__ import annotations

from operator import index as _index
from typing import Union

from .constants import CA_CHUNKER_WINDOW_SIZE

__all__ = ["TABLE", "WINDOW_SIZE", "find_cut", "find_cuts"]

Buffer = Union[bytes, bytearray, memoryview]

WINDOW_SIZE = CA_CHUNKER_WINDOW_SIZE
MAX_DISCRIMINATOR = 1 << 31  # the C backend's fast modulo test is exact up to here

# casync's buzhash table (src/cachunker.c), one 32-bit value per byte value.
# fmt: off
TABLE: tuple[int, ...] = (
    0x458BE752, 0xC10748CC, 0xFBBCDBB8, 0x6DED5B68, 0xB10A82B5, 0x20D75648,
    0xDFC5665F, 0xA8428801, 0x7EBF5191, 0x841135C7, 0x65CC53B3, 0x280A597C,
    0x16F60255, 0xC78CBC3E, 0x294415F5, 0xB938D494, 0xEC85C4E6, 0xB7D33EDC,
    0xE549B544, 0xFDEDA5AA, 0x882BF287, 0x3116737C, 0x05569956, 0xE8CC1F68,
    0x0806AC5E, 0x22A14443, 0x15297E10, 0x50D090E7, 0x4BA60F6F, 0xEFD9F1A7,
    0x5C5C885C, 0x82482F93, 0x9BFD7C64, 0x0B3E7276, 0xF2688E77, 0x8FAD8ABC,
    0xB0509568, 0xF1ADA29F, 0xA53EFDFE, 0xCB2B1D00, 0xF2A9E986, 0x6463432B,
    0x95094051, 0x5A223AD2, 0x9BE8401B, 0x61E579CB, 0x1A556A14, 0x5840FDC2,
    0x9261DDF6, 0xCDE002BB, 0x52432BB0, 0xBF17373E, 0x7B7C222F, 0x2955ED16,
    0x9F10CA59, 0xE840C4C9, 0xCCABD806, 0x14543F34, 0x1462417A, 0x0D4A1F9C,
    0x087ED925, 0xD7F8F24C, 0x7338C425, 0xCF86C8F5, 0xB19165CD, 0x9891C393,
    0x325384AC, 0x0308459D, 0x86141D7E, 0xC922116A, 0xE2FFA6B6, 0x53F52AED,
    0x2CD86197, 0xF5B9F498, 0xBF319C8F, 0xE0411FAE, 0x977EB18C, 0xD8770976,
    0x9833466A, 0xC674DF7F, 0x8C297D45, 0x8CA48D26, 0xC49ED8E2, 0x7344F874,
    0x556F79C7, 0x6B25EAED, 0xA03E2B42, 0xF68F66A4, 0x8E8B09A2, 0xF2E0E62A,
    0x0D3A9806, 0x9729E493, 0x8C72B0FC, 0x160B94F6, 0x450E4D3D, 0x7A320E85,
    0xBEF8F0E1, 0x21D73653, 0x4E3D977A, 0x1E7B3929, 0x1CC6C719, 0xBE478D53,
    0x8D752809, 0xE6D8C2C6, 0x275F0892, 0xC8ACC273, 0x4CC21580, 0xECC4A617,
    0xF5F7BE70, 0xE795248A, 0x375A2FE9, 0x425570B6, 0x8898DCF8, 0xDC2D97C4,
    0x0106114B, 0x364DC22F, 0x1E0CAD1F, 0xBE63803C, 0x5F69FAC2, 0x4D5AFA6F,
    0x1BC0DFB5, 0xFB273589, 0x0EA47F7B, 0x3C1C2B50, 0x21B2A932, 0x6B1223FD,
    0x2FE706A8, 0xF9BD6CE2, 0xA268E64E, 0xE987F486, 0x3EACF563, 0x1CA2018C,
    0x65E18228, 0x2207360A, 0x57CF1715, 0x34C37D2B, 0x1F8F3CDE, 0x93B657CF,
    0x31A019FD, 0xE69EB729, 0x8BCA7B9B, 0x4C9D5BED, 0x277EBEAF, 0xE0D8F8AE,
    0xD150821C, 0x31381871, 0xAFC3F1B0, 0x927DB328, 0xE95EFFAC, 0x305A47BD,
    0x426BA35B, 0x1233AF3F, 0x686A5B83, 0x50E072E5, 0xD9D3BB2A, 0x8BEFC475,
    0x487F0DE6, 0xC88DFF89, 0xBD664D5E, 0x971B5D18, 0x63B14847, 0xD7D3C1CE,
    0x7F583CF3, 0x72CBCB09, 0xC0D0A81C, 0x7FA3429B, 0xE9158A1B, 0x225EA19A,
    0xD8CA9EA3, 0xC763B282, 0xBB0C6341, 0x020B8293, 0xD4CD299D, 0x58CFA7F8,
    0x91B4EE53, 0x37E4D140, 0x95EC764C, 0x30F76B06, 0x5EE68D24, 0x679C8661,
    0xA41979C2, 0xF2B61284, 0x4FAC1475, 0x0ADB49F9, 0x19727A23, 0x15A7E374,
    0xC43A18D5, 0x3FB1AA73, 0x342FC615, 0x924C0793, 0xBEE2D7F0, 0x8A279DE9,
    0x4AA2D70C, 0xE24DD37F, 0xBE862C0B, 0x177C22C2, 0x5388E5EE, 0xCD8A7510,
    0xF901B4FD, 0xDBC13DBC, 0x6C0BAE5B, 0x64EFE8C7, 0x48B02079, 0x80331A49,
    0xCA3D8AE6, 0xF3546190, 0xFED7108B, 0xC49B941B, 0x32BAF4A9, 0xEB833A4A,
    0x88A3F1A5, 0x3A91CE0A, 0x3CC27DA1, 0x7112E684, 0x4A3096B1, 0x3794574C,
    0xA3C8B6F3, 0x1D213941, 0x6E0A2E00, 0x233479F1, 0x0F4CD82F, 0x6093EDD2,
    0x5D7D209E, 0x464FE319, 0xD4DCAC9E, 0x0DB845CB, 0xFB5E4BC3, 0xE0256CE1,
    0x09FB4ED1, 0x0914BE1E, 0xA5BDB2C3, 0xC6EB57BB, 0x30320350, 0x3F397E91,
    0xA67791BC, 0x86BC0E2C, 0xEFA0A7E2, 0xE9FF7543, 0xE733612C, 0xD185897B,
    0x329E5388, 0x91DD236B, 0x2ECB0D93, 0xF4D82A3D, 0x35B5C03F, 0xE4E606F0,
    0x05B21843, 0x37B45964, 0x5EFF22F4, 0x6027F4CC, 0x77178B3C, 0xAE507131,
    0x7BF7CABC, 0xF9C18D66, 0x593ADE65, 0xD95DDF11,
)
# fmt: on

_MASK = 0xFFFFFFFF


def _rol32(value: int, shift: int) -> int:
    shift %= 32
    return ((value << shift) | (value >> (32 - shift))) & _MASK


# A byte leaving the window has been rotated WINDOW_SIZE times since it entered.
_LEAVE: tuple[int, ...] = tuple(_rol32(v, WINDOW_SIZE) for v in TABLE)


def _checked(
    buf: Buffer, start: int, end: int, min_size: int, max_size: int, discriminator: int
) -> tuple[memoryview, int, int, int, int, int]:
    """Validate the arguments shared by both functions (same rules as the C module)."""
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    start, end = _index(start), _index(end)
    min_size, max_size, discriminator = _index(min_size), _index(max_size), _index(discriminator)
    if not 0 <= start <= end <= view.nbytes:
        raise ValueError(f"need 0 <= start <= end <= len(buf), got {start}, {end}, {view.nbytes}")
    if not WINDOW_SIZE <= min_size <= max_size:
        raise ValueError(f"need {WINDOW_SIZE} <= min_size <= max_size, got {min_size}, {max_size}")
    if not 1 <= discriminator <= MAX_DISCRIMINATOR:
        raise ValueError(f"discriminator {discriminator} out of range 1..{MAX_DISCRIMINATOR}")
    return view, start, end, min_size, max_size, discriminator


def _scan(view: memoryview, start: int, end: int, min_size: int, max_size: int, d: int) -> int:
    first = start + min_size  # the earliest possible cut: the chunk is min_size long
    if first > end:
        return -1
    limit = start + max_size
    if first == limit:  # min == max: fixed-size chunks, no hashing needed
        return limit
    stop = min(end, limit)
    data = bytes(view[first - WINDOW_SIZE : stop])
    h = 0
    for byte in data[:WINDOW_SIZE]:  # hash the window that ends at `first`
        h = (((h << 1) | (h >> 31)) & _MASK) ^ TABLE[byte]
    target = d - 1
    if h % d == target:
        return first
    pos = first
    for leave, enter in zip(data, data[WINDOW_SIZE:]):
        h = (((h << 1) | (h >> 31)) & _MASK) ^ _LEAVE[leave] ^ TABLE[enter]
        pos += 1
        if h % d == target:
            return pos
    return limit if stop == limit else -1


def find_cut(buf: Buffer, start: int, end: int, min_size: int, max_size: int, discriminator: int) -> int:
    """Return the end offset of the chunk that starts at ``start``.

    Only ``buf[start:end]`` is looked at. The result is absolute (an offset
    into ``buf``), between ``start + min_size`` and ``start + max_size``; it
    is -1 when the chunk does not end before ``end``: then either the rest is
    the last chunk (at the end of the input) or more data is needed.
    Raises ValueError for offsets outside ``buf``, ``min_size`` below the
    48-byte window or above ``max_size``, or a discriminator outside
    1..2**31.
    """
    return _scan(*_checked(buf, start, end, min_size, max_size, discriminator))


def find_cuts(
    buf: Buffer,
    start: int,
    end: int,
    min_size: int,
    max_size: int,
    discriminator: int,
    limit: int,
) -> list[int]:
    """Return the successive cuts of the chunk chain beginning at ``start``.

    Equivalent to calling :func:`find_cut` from ``start``, then from each cut
    it returns, collecting the results; the list stops after the first cut
    ``>= limit``, or before the first -1 (no further cut before ``end``).
    """
    view, start, end, min_size, max_size, d = _checked(buf, start, end, min_size, max_size, discriminator)
    limit = _index(limit)
    cuts: list[int] = []
    pos = start
    while True:
        pos = _scan(view, pos, end, min_size, max_size, d)
        if pos < 0:
            return cuts
        cuts.append(pos)
        if pos >= limit:
            return cuts
