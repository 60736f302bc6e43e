"""casync's chunk layout, written once: chunk ``<id>`` lives at ``xxxx/<id>.cacnk``.

``xxxx`` is the first four of the id's 64 lowercase hex digits; the suffix is
``.cacnk`` for stored (compressed) chunks and ``""`` for an uncompressed store
(local or HTTP, as desync names them: :func:`chunk_suffix`). Local
directories, HTTP stores and the chunk server, SFTP and S3 (under
the store's prefix) all use these names; the parsers accept exactly what the
builders make (lowercase hex, a matching prefix directory, the given suffix)
and nothing else, so a foreign file (``README``, a temporary file, an upper-case
name) is never taken for a chunk.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "CHUNK_SUFFIX",
    "UNCOMPRESSED_SUFFIX",
    "chunk_suffix",
    "chunk_dir",
    "chunk_file",
    "chunk_path",
    "is_chunk_dir",
    "parse_chunk_file",
    "parse_chunk_path",
]

#: The file name suffix of a stored chunk.
CHUNK_SUFFIX = ".cacnk"
#: The file name suffix of a chunk in an uncompressed store (none: ``xxxx/<id>``).
UNCOMPRESSED_SUFFIX = ""

_DIR = re.compile(r"[0-9a-f]{4}")


def chunk_dir(chunk_id: bytes) -> str:
    """The chunk's directory: the first four hex digits of its id."""
    return chunk_id[:2].hex()


def chunk_suffix(uncompressed: bool) -> str:
    """The suffix of the chunk files of a compressed or an ``uncompressed`` store."""
    return UNCOMPRESSED_SUFFIX if uncompressed else CHUNK_SUFFIX


def chunk_file(chunk_id: bytes, suffix: str = CHUNK_SUFFIX) -> str:
    """The chunk's file name within its directory: ``<id><suffix>``."""
    return chunk_id.hex() + suffix


def chunk_path(chunk_id: bytes, suffix: str = CHUNK_SUFFIX) -> str:
    """The chunk's path relative to the store: ``xxxx/<id><suffix>``."""
    name = chunk_id.hex()
    return f"{name[:4]}/{name}{suffix}"


def is_chunk_dir(name: str) -> bool:
    """Whether ``name`` can be a chunk directory (four lowercase hex digits)."""
    return _DIR.fullmatch(name) is not None


@functools.cache
def _file_pattern(suffix: str) -> re.Pattern[str]:
    return re.compile(r"([0-9a-f]{64})" + re.escape(suffix))


@functools.cache
def _path_pattern(suffix: str) -> re.Pattern[str]:
    return re.compile(r"([0-9a-f]{4})/(\1[0-9a-f]{60})" + re.escape(suffix))


def parse_chunk_file(name: str, directory: str | None = None, suffix: str = CHUNK_SUFFIX) -> bytes | None:
    """The id a chunk file name stands for (None if it is no chunk's name).

    With ``directory`` the id must also belong in that directory.
    """
    m = _file_pattern(suffix).fullmatch(name)
    if m is None or (directory is not None and not m.group(1).startswith(directory)):
        return None
    return bytes.fromhex(m.group(1))


def parse_chunk_path(path: str, suffix: str = CHUNK_SUFFIX, start: int = 0) -> bytes | None:
    """The id ``path[start:]`` (``xxxx/<id><suffix>``) names, or None unless it is exactly that."""
    m = _path_pattern(suffix).fullmatch(path, start)
    return None if m is None else bytes.fromhex(m.group(2))
