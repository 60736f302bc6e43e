"""Tests of casync_format.digest: ids equal hashlib's, lookup by flags and name, parse_id."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.constants import CA_FORMAT_BLOB_INDEX_FLAGS, CA_FORMAT_SHA512_256
from casync_format.digest import SHA256, SHA512_256, digest_by_name, digest_from_flags, parse_id
from casync_format.errors import FormatError, ParameterError


@given(st.binary(max_size=5000))
def test_ids_match_hashlib(data: bytes) -> None:
    assert SHA512_256(data) == hashlib.new("sha512_256", data).digest()
    assert SHA256(data) == hashlib.sha256(data).digest()
    assert SHA512_256(memoryview(data)) == SHA512_256(data)
    assert len(SHA512_256(data)) == len(SHA256(data)) == 32


def test_known_vectors() -> None:
    # FIPS 180-4 examples: SHA-512/256 is its own IV, not a truncated SHA-512.
    assert SHA512_256(b"abc").hex() == "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
    assert SHA256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_names_and_flags() -> None:
    assert (SHA512_256.name, SHA512_256.flag) == ("sha512-256", CA_FORMAT_SHA512_256)
    assert (SHA256.name, SHA256.flag) == ("sha256", 0)
    assert "sha256" in repr(SHA256)


def test_digest_from_flags() -> None:
    assert digest_from_flags(CA_FORMAT_BLOB_INDEX_FLAGS | CA_FORMAT_SHA512_256) is SHA512_256
    assert digest_from_flags(CA_FORMAT_BLOB_INDEX_FLAGS) is SHA256
    assert digest_from_flags(0) is SHA256
    assert digest_from_flags(0xFFFFFFFFFFFFFFFF) is SHA512_256


@pytest.mark.parametrize(
    ("name", "digest"),
    [("sha512-256", SHA512_256), ("SHA512-256", SHA512_256), ("sha512/256", SHA512_256), ("sha256", SHA256)],
)
def test_digest_by_name(name: str, digest: object) -> None:
    assert digest_by_name(name) is digest


@pytest.mark.parametrize("name", ["", "md5", "sha512", "sha-256", "sha512_256 "])
def test_digest_by_unknown_name(name: str) -> None:
    with pytest.raises(ParameterError) as exc:
        digest_by_name(name)
    assert isinstance(exc.value, ValueError)


@given(st.binary(min_size=32, max_size=32))
def test_parse_id_round_trip(raw: bytes) -> None:
    assert parse_id(raw.hex()) == raw
    assert parse_id(raw.hex().upper()) == raw


@pytest.mark.parametrize(
    "text",
    [
        "",
        "00" * 31,
        "00" * 33,
        "0" * 63,
        "0" * 65,
        "zz" * 32,
        "0x" + "00" * 31,
        " ".join(["00"] * 32),
        "00" * 31 + " 0",
        "00" * 32 + "\n",
        "ab" * 31 + "ag",
    ],
)
def test_parse_id_errors(text: str) -> None:
    with pytest.raises(FormatError) as exc:
        parse_id(text)
    assert isinstance(exc.value, ValueError)
