"""casync's formats as codecs over bytes and file objects.

This package knows bytes only: chunk ids (:mod:`.digest`), chunk compression
(:mod:`.compress`, :mod:`.chunk`), the chunker (:mod:`.chunker`), index files
(:mod:`.index`) and their constants (:mod:`.constants`), and the error tree
(:mod:`.errors`). It never opens sockets or imports a store, so everything in
it can be tested with :class:`io.BytesIO`. It imports only the standard
library and one zstd binding.

:func:`backends` names the implementation behind each accelerated function
(the optional C extension or pure Python, see :mod:`._accel`) and the zstd
binding; :func:`describe_backends` is that as the one line ``pycasync
--version`` prints.
"""

from __future__ import annotations

from .errors import (
    CasyncError,
    ChunkInvalid,
    ChunkMissing,
    FormatError,
    IndexNotFound,
    MissingDependency,
    ParameterError,
    StoreError,
)

__all__ = [
    "CasyncError",
    "ChunkInvalid",
    "ChunkMissing",
    "FormatError",
    "IndexNotFound",
    "MissingDependency",
    "ParameterError",
    "StoreError",
    "backends",
    "describe_backends",
]

__version__ = "0.1.0"


def backends() -> dict[str, str]:
    """``{function: implementation}`` for every accelerated function, then ``"zstd"``.

    The accelerated functions (``chunker``, ``siphash24``, ``catar-goodbye``,
    ``catar-entry``, ``chunk-file``) are ``"c"`` or ``"python"``; ``zstd`` is the binding's module
    name, or ``"none"`` when no binding imports.
    """
    from . import _accel, compress

    found = _accel.backends()
    found["zstd"] = compress.ZSTD_BACKEND or "none"
    return found


def describe_backends() -> str:
    """:func:`backends` as one line: ``"chunker: c, siphash24: c, ..., zstd: zstandard"``."""
    return ", ".join(f"{name}: {value}" for name, value in backends().items())
