"""casync's formats as codecs over bytes and file objects.

This package knows bytes only: chunk ids (:mod:`.digest`), chunk compression
(:mod:`.compress`, :mod:`.chunk`), the chunker (:mod:`.chunker`), index files
(:mod:`.index`) and their constants (:mod:`.constants`), and the error tree
(:mod:`.errors`). It never opens sockets or imports a store, so everything in
it can be tested with :class:`io.BytesIO`. It imports only the standard
library and one zstd binding.
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
]

__version__ = "0.1.0"
