"""A chunk's life between its data and its ``.cacnk`` file.

Stores move opaque bytes; this module gives them meaning: :func:`encode`
compresses chunk data the way casync stores it, :func:`decode` turns a stored
blob back into data and checks it, bounded by the size the index declares (or
a maximum), against the id it is filed under. Every read path of pycasync
goes through :func:`decode`, so a damaged or swapped chunk is caught wherever
it comes from.
"""

from __future__ import annotations

from . import compress as _compress
from .constants import CA_CHUNK_SIZE_LIMIT_MAX
from .digest import Digest
from .errors import ChunkInvalid, FormatError

__all__ = ["encode", "decode", "verify", "max_encoded_size"]


def max_encoded_size(max_chunk_size: int = CA_CHUNK_SIZE_LIMIT_MAX) -> int:
    """The largest ``.cacnk`` a chunk of at most ``max_chunk_size`` bytes can have.

    Above the compress bound of zstd, xz and gzip (incompressible data grows
    by well under 1/128, plus headers), with room to spare: anything bigger is
    not a chunk, and readers refuse it before reading it.
    """
    return max_chunk_size + max_chunk_size // 128 + 65536


def encode(data: bytes | memoryview, compression: str = "zstd") -> bytes:
    """Compress chunk data into the bytes of a ``.cacnk`` file."""
    return _compress.compress(data, compression)


def verify(chunk_id: bytes, data: bytes | memoryview, digest: Digest, store: object = None) -> None:
    """Raise :class:`ChunkInvalid` unless ``data`` hashes to ``chunk_id``."""
    actual = digest(data)
    if actual != chunk_id:
        raise ChunkInvalid(chunk_id, actual, f"content hashes to {actual.hex()}", store)


def decode(
    blob: bytes | memoryview,
    chunk_id: bytes,
    digest: Digest | None,
    *,
    size: int | None = None,
    max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    store: object = None,
) -> bytes:
    """Decompress a stored chunk and check it.

    ``size`` is the length the index declares (checked exactly, and the bound
    for decompression); without it ``max_size`` bounds the output. With a
    ``digest`` the data must hash to ``chunk_id``; ``None`` skips that check
    (for stores configured with skip-verify). Raises :class:`ChunkInvalid`.
    """
    bound = size if size is not None else max_size
    try:
        data = _compress.decompress(blob, bound)
    except FormatError as exc:
        raise ChunkInvalid(chunk_id, None, str(exc), store) from None
    if size is not None and len(data) != size:
        raise ChunkInvalid(
            chunk_id, None, f"decompresses to {len(data)} bytes, index says {size}", store
        )
    if digest is not None:
        verify(chunk_id, data, digest, store)
    return data
