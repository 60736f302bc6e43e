"""Chunk encryption: desync's AEAD layer over stored chunks, byte for byte.

It lives in :mod:`casync_format` beside :mod:`.compress` because it is a
chunk codec layer, a pure function of bytes and a key with no store or I/O
in it; the stores only pick the layer and the file name suffix. The format
(desync's ``encrypt.go``): a stored chunk is ``nonce || AEAD(key, nonce,
compressed chunk, no associated data)`` (ciphertext then 16-byte tag); the
nonce is random, 24 bytes for ``xchacha20-poly1305`` (the default) and 12
for ``aes-256-gcm``; encryption comes after compression (after nothing in an
``uncompressed`` store). The key is 32 bytes, given hex-encoded and used as
is (no derivation). An encrypted chunk file is named with the suffix
``.<algorithm>-<first 4 bytes of SHA-256(key), hex>`` after ``.cacnk``, so
chunks under other keys can share a store. XChaCha20-Poly1305 is HChaCha20
(written here) for the subkey, then IETF ChaCha20-Poly1305 from
``cryptography``, the ``crypt`` extra, imported only when a cipher is made.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

from .errors import ChunkInvalid, MissingDependency, ParameterError

__all__ = [
    "ALGORITHMS", "DEFAULT_ALGORITHM", "KEY_SIZE", "MAX_OVERHEAD", "ChunkCipher", "hchacha20", "make_cipher",
]  # fmt: skip

ALGORITHMS = ("xchacha20-poly1305", "aes-256-gcm")
DEFAULT_ALGORITHM = "xchacha20-poly1305"
KEY_SIZE = 32
TAG_SIZE = 16
#: The most bytes encryption adds to a stored chunk (a 24-byte nonce and the tag).
MAX_OVERHEAD = 24 + TAG_SIZE
_NONCE_SIZE = {"xchacha20-poly1305": 24, "aes-256-gcm": 12}
_MASK = 0xFFFFFFFF
_NAMES = " or ".join(ALGORITHMS)


def _quarter(s: list[int], a: int, b: int, c: int, d: int) -> None:
    s[a] = (s[a] + s[b]) & _MASK
    s[d] ^= s[a]
    s[d] = ((s[d] << 16) | (s[d] >> 16)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    s[b] ^= s[c]
    s[b] = ((s[b] << 12) | (s[b] >> 20)) & _MASK
    s[a] = (s[a] + s[b]) & _MASK
    s[d] ^= s[a]
    s[d] = ((s[d] << 8) | (s[d] >> 24)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    s[b] ^= s[c]
    s[b] = ((s[b] << 7) | (s[b] >> 25)) & _MASK


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the 32-byte subkey for ``key`` and a 16-byte nonce."""
    if len(key) != KEY_SIZE or len(nonce16) != 16:
        raise ParameterError("hchacha20 takes a 32-byte key and a 16-byte nonce")
    s = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574, *struct.unpack("<8I", key),
         *struct.unpack("<4I", nonce16)]  # fmt: skip
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *s[0:4], *s[12:16])


def _aead_module() -> Any:
    try:
        import cryptography.hazmat.primitives.ciphers.aead as aead
    except ImportError:
        raise MissingDependency("crypt", "cryptography", purpose="chunk encryption") from None
    return aead


class ChunkCipher:
    """One algorithm and key: seals and opens stored chunks, names their files' suffix.

    The key is kept out of ``repr`` and every message; only its 4-byte key
    id (in :attr:`suffix`) is ever shown.
    """

    def __init__(self, algorithm: str, key: bytes) -> None:
        if algorithm not in ALGORITHMS:
            raise ParameterError(f"unsupported encryption algorithm {algorithm!r}: use {_NAMES}")
        if len(key) != KEY_SIZE:
            raise ParameterError(f"encryption key must be {KEY_SIZE} bytes, got {len(key)}")
        self.algorithm = algorithm
        self._key = key
        self.nonce_size = _NONCE_SIZE[algorithm]
        self.overhead = self.nonce_size + TAG_SIZE
        self.key_id = hashlib.sha256(key).digest()[:4].hex()
        #: What follows ``.cacnk`` (or the bare id, uncompressed) in an encrypted chunk's name.
        self.suffix = f".{algorithm}-{self.key_id}"
        aead = _aead_module()
        self._aes = aead.AESGCM(key) if algorithm == "aes-256-gcm" else None
        self._chacha = aead.ChaCha20Poly1305

    def __repr__(self) -> str:
        return f"ChunkCipher({self.algorithm!r}, key id {self.key_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChunkCipher) and (other.algorithm, other._key) == (self.algorithm, self._key)

    def __hash__(self) -> int:
        return hash((self.algorithm, self.key_id))

    def _seal(self, nonce: bytes, data: bytes | memoryview) -> bytes:
        if self._aes is not None:
            return bytes(self._aes.encrypt(nonce, bytes(data), None))
        sub = self._chacha(hchacha20(self._key, nonce[:16]))
        return bytes(sub.encrypt(b"\0\0\0\0" + nonce[16:], bytes(data), None))

    def _open(self, nonce: bytes, sealed: bytes) -> bytes:
        if self._aes is not None:
            return bytes(self._aes.decrypt(nonce, sealed, None))
        sub = self._chacha(hchacha20(self._key, nonce[:16]))
        return bytes(sub.decrypt(b"\0\0\0\0" + nonce[16:], sealed, None))

    def encrypt(self, data: bytes | memoryview, nonce: bytes | None = None) -> bytes:
        """``nonce || ciphertext || tag``; a fresh random nonce unless one is given (tests)."""
        if nonce is None:
            nonce = os.urandom(self.nonce_size)
        elif len(nonce) != self.nonce_size:
            raise ParameterError(f"{self.algorithm} takes a {self.nonce_size}-byte nonce")
        return nonce + self._seal(nonce, data)

    def decrypt(self, blob: bytes | memoryview, chunk_id: bytes, store: object = None) -> bytes:
        """The sealed bytes of chunk ``chunk_id``; :class:`ChunkInvalid` for a wrong key or damage."""
        blob = bytes(blob)
        if len(blob) < self.overhead:
            raise ChunkInvalid(chunk_id, None, f"too short for an {self.algorithm} encrypted chunk", store)
        try:
            return self._open(blob[: self.nonce_size], blob[self.nonce_size :])
        except Exception as exc:  # cryptography's InvalidTag
            if type(exc).__name__ != "InvalidTag":
                raise
            cause = f"cannot be decrypted with {self.algorithm} key {self.key_id} (wrong key, or damaged)"
            raise ChunkInvalid(chunk_id, None, cause, store) from None


def make_cipher(enabled: bool, key: str = "", algorithm: str = "") -> ChunkCipher | None:
    """The cipher desync's store options ask for, None when encryption is off.

    ``key`` is hex; ``algorithm`` "" means the default. A key or algorithm
    without ``enabled`` is refused, as in desync (never silent plaintext).
    """
    if not enabled:
        if key or algorithm:
            raise ParameterError(
                "encryption-key or encryption-algorithm configured without setting encryption to true")
        return None
    if not key:
        raise ParameterError("no encryption key configured (set encryption-key or DESYNC_ENCRYPTION_KEY)")
    algorithm = algorithm or DEFAULT_ALGORITHM
    if algorithm not in ALGORITHMS:
        raise ParameterError(f"unsupported encryption algorithm {algorithm!r}: use {_NAMES}")
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise ParameterError("invalid encryption key, expected hex-encoded 256-bit key") from None
    if len(raw) != KEY_SIZE:
        raise ParameterError(f"invalid encryption key, expected 256 bits, not {len(raw)} bytes")
    return ChunkCipher(algorithm, raw)
