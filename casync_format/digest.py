"""Chunk ids: which hash makes them, and their printable form.

A chunk id is the 32-byte digest of the chunk's uncompressed data, SHA512/256
by default and SHA256 when the index's feature flags lack
``CA_FORMAT_SHA512_256``. The digest is always passed explicitly (there is no
global setting): an index says which one it used, a command line may pick one
for new indexes. hashlib releases the GIL while hashing, so worker threads
hash chunks in parallel.
"""

from __future__ import annotations

import hashlib

from .constants import CA_CHUNK_ID_SIZE, CA_FORMAT_SHA512_256
from .errors import FormatError, ParameterError

__all__ = ["Digest", "SHA512_256", "SHA256", "digest_from_flags", "digest_by_name", "parse_id"]


class Digest:
    """A named hash function producing 32-byte chunk ids."""

    def __init__(self, name: str, hashlib_name: str, flag: int) -> None:
        self.name = name
        # Copying a prepared hash object skips hashlib.new's lookup by name.
        self._proto = hashlib.new(hashlib_name)
        self.flag = flag  # the bit this digest contributes to an index's feature flags

    def __call__(self, data: bytes | memoryview) -> bytes:
        """Return the 32-byte id of ``data`` (hashlib releases the GIL meanwhile)."""
        h = self._proto.copy()
        h.update(data)
        return h.digest()

    def __repr__(self) -> str:
        return f"Digest({self.name!r})"


SHA512_256 = Digest("sha512-256", "sha512_256", CA_FORMAT_SHA512_256)
SHA256 = Digest("sha256", "sha256", 0)

_BY_NAME = {"sha512-256": SHA512_256, "sha512/256": SHA512_256, "sha256": SHA256}


def digest_from_flags(feature_flags: int) -> Digest:
    """The digest an index with these feature flags uses."""
    return SHA512_256 if feature_flags & CA_FORMAT_SHA512_256 else SHA256


def digest_by_name(name: str) -> Digest:
    """Look up a digest by its command-line name (``sha512-256`` or ``sha256``)."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise ParameterError(
            f"unknown digest {name!r}: use sha512-256 or sha256"
        ) from None


def parse_id(text: str) -> bytes:
    """Parse a chunk id from its 64-character hex form."""
    try:
        # fromhex skips whitespace between bytes; an id is exactly 64 digits.
        raw = bytes.fromhex(text) if len(text) == 2 * CA_CHUNK_ID_SIZE else b""
    except ValueError:
        raw = b""
    if len(raw) != CA_CHUNK_ID_SIZE:
        raise FormatError(f"invalid chunk id {text!r}: expected 64 hex digits")
    return raw
