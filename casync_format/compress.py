"""Chunk compression: the zstd shim, plus casync's xz and gzip.

Only this module imports a zstd binding: ``compression.zstd`` (Python 3.14+),
``zstandard`` or ``pyzstd``, whichever imports first. All of them read each
other's frames, since a frame is a frame. casync can also store chunks xz- or
gzip-compressed under the same ``.cacnk`` name; :func:`decompress` recognises
the three by their magic bytes. Decompression is always bounded by a maximum
size, so a hostile chunk cannot inflate without limit. A chunk is exactly one
complete frame (zstd), stream (xz) or member (gzip): like casync, which
answers "Bad message" for it, :func:`decompress` refuses anything after the
end of it, be it junk, zero padding or a second frame.
"""

from __future__ import annotations

import gzip
import lzma
import threading
import zlib
from typing import Any

from .errors import FormatError, MissingDependency, ParameterError

__all__ = ["COMPRESSIONS", "ZSTD_BACKEND", "compress", "decompress", "detect"]

COMPRESSIONS = ("zstd", "xz", "gzip")
ZSTD_LEVEL = 3  # casync's and desync's level

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"
_STREAM_ABOVE = 16 * 1024 * 1024  # bigger bounds are decoded incrementally

_local = threading.local()

# The binding found, as a module (typed Any: at most one of the three is importable).
_czstd: Any = None
_zstandard: Any = None
_pyzstd: Any = None
_zstandard_strict = True  # whether zstandard's one-shot decompress takes allow_extra_data
ZSTD_BACKEND = ""
try:  # Python 3.14+
    from compression import zstd as _czstd  # type: ignore[import-not-found,no-redef]  # 3.14+ only

    ZSTD_BACKEND = "compression.zstd"
except ImportError:
    try:
        import zstandard as _zstandard

        ZSTD_BACKEND = "zstandard"
    except ImportError:
        try:
            import pyzstd as _pyzstd  # type: ignore[import-not-found]

            ZSTD_BACKEND = "pyzstd"
        except ImportError:
            pass


#: What a user without any zstd binding is told (one line; every real way out).
NO_ZSTD = (
    "zstd-compressed chunks need a zstd binding and this Python has none: install the Debian/Ubuntu"
    " package python3-zstandard, or pip install zstandard, or use Python 3.14+ (compression.zstd);"
    " or store new chunks with --compression xz"
)


def _no_zstd() -> MissingDependency:
    # zstandard is a requirement of pycasync itself (setup.cfg), not an extra: there is no pycasync[zstd].
    return MissingDependency(None, "zstandard", message=NO_ZSTD)


def _zstd_compress(data: bytes | memoryview, level: int) -> bytes:
    if _czstd is not None:
        return _czstd.compress(data, level)
    if _zstandard is not None:
        cctx = getattr(_local, "cctx", None)
        if cctx is None or _local.level != level:
            # A compressor context is not thread-safe: one per thread, reused.
            cctx = _local.cctx = _zstandard.ZstdCompressor(level=level)
            _local.level = level
        return cctx.compress(data)
    if _pyzstd is not None:
        return _pyzstd.compress(data, level)
    raise _no_zstd()


def _trailing(n: int) -> FormatError:
    return FormatError(f"junk after the end of the compressed data ({n} bytes)")


def _bounded(decomp: object, data: bytes | memoryview, max_size: int) -> bytes:
    """Feed ``data`` to a decompressor with ``decompress(data, max_length)``, ``eof``
    and ``unused_data`` (the zstd, lzma and zlib decompressor objects all have them)."""
    out = decomp.decompress(data, max_size + 1)  # type: ignore[attr-defined]
    if len(out) > max_size:
        raise FormatError(f"chunk decompresses to more than {max_size} bytes")
    if not decomp.eof:  # type: ignore[attr-defined]
        raise FormatError("truncated compressed chunk")
    # Each object stops at the end of its one frame/stream/member and keeps the rest.
    unused = len(decomp.unused_data)  # type: ignore[attr-defined]
    if unused:
        raise _trailing(unused)
    return out


def _zstd_decompress(data: bytes | memoryview, max_size: int) -> bytes:
    if _czstd is not None:
        return _bounded(_czstd.ZstdDecompressor(), data, max_size)
    if _pyzstd is not None:
        return _bounded(_pyzstd.ZstdDecompressor(), data, max_size)
    if _zstandard is None:
        raise _no_zstd()
    declared = _zstandard.get_frame_parameters(data).content_size
    if declared != _zstandard.CONTENTSIZE_UNKNOWN and declared > max_size:
        raise FormatError(f"chunk declares {declared} bytes, more than {max_size}")
    dctx = getattr(_local, "dctx", None)
    if dctx is None:  # like compressor contexts: one per thread, reused
        dctx = _local.dctx = _zstandard.ZstdDecompressor()
    global _zstandard_strict
    # An empty frame is answered at once, without a look at what follows it.
    if max_size <= _STREAM_ABOVE and _zstandard_strict and declared != 0:
        try:
            # The one-shot call ignores what follows the frame unless told not to.
            return dctx.decompress(data, max_output_size=max_size, allow_extra_data=False)
        except TypeError:  # an old zstandard without allow_extra_data: stream instead
            _zstandard_strict = False
        except _zstandard.ZstdError:
            pass  # decoded again below, step by step, for a precise reason
    return _zstandard_stream(dctx, data, max_size)


def _zstandard_stream(dctx: object, data: bytes | memoryview, max_size: int) -> bytes:
    """Decode one frame in small input steps, so a bomb stops near ``max_size``."""
    dobj = dctx.decompressobj()  # type: ignore[attr-defined]
    view = memoryview(data)
    parts: list[bytes] = []
    produced = pos = 0
    while not dobj.eof and pos < len(view):
        # A zstd block inflates at most ~32768 times its input (an RLE block).
        step = max(64, (max_size - produced) // 32768)
        part = dobj.decompress(view[pos : pos + step])
        pos = min(pos + step, len(view))
        produced += len(part)
        if produced > max_size:
            raise FormatError(f"chunk decompresses to more than {max_size} bytes")
        parts.append(part)
    if not dobj.eof:  # stream_reader would return a truncated frame's data silently
        raise FormatError("truncated compressed chunk")
    unused = len(view) - pos + len(dobj.unused_data)  # never fed, and fed after the frame
    if unused:
        raise _trailing(unused)
    return b"".join(parts)


def detect(blob: bytes | memoryview) -> str:
    """Name the compression of an encoded chunk by its magic bytes."""
    head = bytes(blob[:6])
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    raise FormatError("unknown chunk compression (not zstd, xz or gzip)")


def compress(data: bytes | memoryview, method: str = "zstd", level: int | None = None) -> bytes:
    """Compress chunk data as casync does (zstd level 3, xz preset 6, gzip level 6)."""
    if method == "zstd":
        return _zstd_compress(data, ZSTD_LEVEL if level is None else level)
    if method == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    if method == "gzip":
        return gzip.compress(data, compresslevel=6 if level is None else level)
    raise ParameterError(f"unknown compression {method!r}: use zstd, xz or gzip")


def decompress(blob: bytes | memoryview, max_size: int) -> bytes:
    """Decompress an encoded chunk of any supported kind, at most ``max_size`` bytes.

    Raises :class:`FormatError` when the data is damaged, truncated, of an
    unknown kind, or would inflate past ``max_size``.
    """
    method = detect(blob)
    try:
        if method == "zstd":
            return _zstd_decompress(blob, max_size)
        if method == "xz":
            return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), blob, max_size)
        return _bounded(zlib.decompressobj(wbits=31), blob, max_size)
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        raise FormatError(f"damaged {method} chunk: {exc}") from None
    except FormatError:
        raise
    except Exception as exc:  # the zstd bindings raise their own error classes
        if type(exc).__module__.split(".")[0] in {"zstandard", "pyzstd", "compression", "_zstd"}:
            raise FormatError(f"damaged zstd chunk: {exc}") from None
        raise
