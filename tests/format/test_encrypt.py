"""Tests of casync_format.encrypt: desync's chunk encryption, against published and independent vectors."""

from __future__ import annotations

import hashlib
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from casync_format.encrypt import ALGORITHMS, ChunkCipher, hchacha20, make_cipher
from casync_format.errors import ChunkInvalid, ParameterError

# desync's encrypt_test.go keys (hex).
KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
OTHER = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"
CHUNK_ID = hashlib.sha256(b"id").digest()


def test_hchacha20_draft_vector() -> None:
    # draft-irtf-cfrg-xchacha-03 section 2.2.1
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    expected = "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
    assert hchacha20(key, nonce).hex() == expected


def test_xchacha20_matches_libsodium() -> None:
    # PyNaCl wraps libsodium's crypto_aead_xchacha20poly1305_ietf: an independent implementation.
    bindings = pytest.importorskip("nacl.bindings")
    key = bytes.fromhex(KEY)
    nonce = bytes(range(24))
    for data in (b"", b"x", bytes(range(256)) * 9):
        sealed = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, nonce, key)
        assert ChunkCipher("xchacha20-poly1305", key).encrypt(data, nonce) == nonce + sealed


def test_aes256gcm_nist_vector() -> None:
    # The GCM specification's test case 14 (256-bit zero key, zero IV, one zero block).
    cipher = ChunkCipher("aes-256-gcm", bytes(32))
    sealed = cipher.encrypt(bytes(16), bytes(12))
    assert sealed.hex() == "00" * 12 + "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"


def test_suffix_is_desyncs() -> None:
    # encrypt_test.go TestAES256GCMExtension
    assert make_cipher(True, KEY, "aes-256-gcm").suffix == ".aes-256-gcm-50d64035"  # type: ignore[union-attr]
    key_id = hashlib.sha256(bytes.fromhex(KEY)).hexdigest()[:8]
    assert make_cipher(True, KEY).suffix == f".xchacha20-poly1305-{key_id}"  # type: ignore[union-attr]


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=4096), algorithm=st.sampled_from(ALGORITHMS))
def test_round_trip(data: bytes, algorithm: str) -> None:
    cipher = make_cipher(True, KEY, algorithm)
    assert cipher is not None
    sealed = cipher.encrypt(data)
    assert len(sealed) == len(data) + cipher.overhead and sealed[cipher.nonce_size:] != data
    assert make_cipher(True, KEY, algorithm).decrypt(sealed, CHUNK_ID) == data  # type: ignore[union-attr]
    with pytest.raises(ChunkInvalid, match="wrong key") as err:
        make_cipher(True, OTHER, algorithm).decrypt(sealed, CHUNK_ID)  # type: ignore[union-attr]
    assert CHUNK_ID.hex() in str(err.value) and KEY not in str(err.value) and OTHER not in str(err.value)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_damage_and_short_data(algorithm: str) -> None:
    cipher = make_cipher(True, KEY, algorithm)
    assert cipher is not None
    sealed = bytearray(cipher.encrypt(b"hello"))
    sealed[-1] ^= 1
    with pytest.raises(ChunkInvalid):
        cipher.decrypt(bytes(sealed), CHUNK_ID)
    with pytest.raises(ChunkInvalid, match="too short"):
        cipher.decrypt(b"abc", CHUNK_ID)


@pytest.mark.parametrize(("args", "message"), [
    ((False, KEY, ""), "without setting encryption to true"),
    ((False, "", "aes-256-gcm"), "without setting encryption to true"),
    ((True, "", ""), "no encryption key configured"),
    ((True, "not-hex", ""), "invalid encryption key"),
    ((True, "abcd", ""), "invalid encryption key"),
    ((True, KEY, "rot13"), "unsupported encryption algorithm"),
])  # fmt: skip
def test_option_validation(args: tuple[bool, str, str], message: str) -> None:
    # encrypt_test.go TestStorageConvertersValidation
    with pytest.raises(ParameterError, match=message) as err:
        make_cipher(*args)
    assert KEY not in str(err.value)


def test_equality_and_repr() -> None:
    a, b = make_cipher(True, KEY, "aes-256-gcm"), make_cipher(True, KEY, "aes-256-gcm")
    assert a == b and a != make_cipher(True, OTHER, "aes-256-gcm") and a != make_cipher(True, KEY)
    assert KEY not in repr(a) and make_cipher(False) is None


def test_missing_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    from casync_format.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(MissingDependency) as exc:
        make_cipher(True, KEY)
    assert exc.value.extra == "crypt" and "pip install 'pycasync[crypt]'" in str(exc.value)
    assert "\n" not in str(exc.value) and KEY not in str(exc.value)
