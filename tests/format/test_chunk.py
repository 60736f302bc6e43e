"""Tests of casync_format.chunk: encode/decode round trips and every way a chunk is invalid."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import chunk, compress
from casync_format.digest import SHA256, SHA512_256, Digest
from casync_format.errors import CasyncError, ChunkInvalid, FormatError
from casync_format.index import read_index
from tests.support import DATA_DIR

DATA = DATA_DIR
METHODS = ["xz", "gzip"] + (["zstd"] if compress.ZSTD_BACKEND else [])
needs_zstd = pytest.mark.skipif(not compress.ZSTD_BACKEND, reason="no zstd binding installed")


class FakeStore:
    """Something printable standing for a store in error messages."""

    def __str__(self) -> str:
        return "/srv/some-store"


@given(
    st.binary(min_size=1, max_size=20_000),
    st.sampled_from(METHODS),
    st.sampled_from([SHA512_256, SHA256]),
)
def test_round_trip(data: bytes, method: str, digest: Digest) -> None:
    blob = chunk.encode(data, method)
    assert compress.detect(blob) == method
    cid = digest(data)
    assert chunk.decode(blob, cid, digest, size=len(data)) == data
    assert chunk.decode(blob, cid, digest) == data
    assert chunk.decode(memoryview(blob), cid, digest, max_size=len(data)) == data
    chunk.verify(cid, data, digest)


def test_default_compression_is_zstd() -> None:
    if not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    assert compress.detect(chunk.encode(b"abc")) == "zstd"


@pytest.mark.parametrize("method", ["zstd", "xz", "gzip"])
def test_casync_chunk_files_decode_and_verify(method: str) -> None:
    if method == "zstd" and not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    with open(os.path.join(DATA, "index", "text.caibx"), "rb") as f:
        ix = read_index(f)
        items = list(ix)
    for item in items:
        name = item.id.hex()
        with open(os.path.join(DATA, "store-" + method, name[:4], name + ".cacnk"), "rb") as f:
            blob = f.read()
        data = chunk.decode(blob, item.id, ix.digest, size=item.size)
        assert len(data) == item.size
        with pytest.raises(ChunkInvalid) as exc:  # the same file under another id
            chunk.decode(blob, SHA512_256(b"other"), ix.digest, size=item.size)
        assert exc.value.actual == item.id


def _sample(method: str = "gzip") -> tuple[bytes, bytes, bytes]:
    data = os.urandom(1000) + bytes(5000)
    return data, SHA512_256(data), chunk.encode(data, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("delta", [1, -1, 1000])
def test_size_mismatch(method: str, delta: int) -> None:
    data, cid, blob = _sample(method)
    store = FakeStore()
    with pytest.raises(ChunkInvalid) as exc:
        chunk.decode(blob, cid, SHA512_256, size=len(data) + delta, store=store)
    err = exc.value
    assert err.chunk_id == cid and cid.hex() in str(err)
    assert err.store is store and "/srv/some-store" in str(err)
    assert err.cause


def test_wrong_id() -> None:
    data, cid, blob = _sample()
    wrong = SHA512_256(b"something else")
    with pytest.raises(ChunkInvalid) as exc:
        chunk.decode(blob, wrong, SHA512_256, size=len(data), store=FakeStore())
    err = exc.value
    assert err.chunk_id == wrong and err.actual == cid
    assert wrong.hex() in str(err) and cid.hex() in str(err) and "/srv/some-store" in str(err)
    assert isinstance(err, CasyncError) and not isinstance(err, FormatError)


def test_wrong_digest_is_wrong_id() -> None:
    _data, cid, blob = _sample()
    with pytest.raises(ChunkInvalid):
        chunk.decode(blob, cid, SHA256)


def test_no_digest_skips_hash_but_not_size() -> None:
    data, _cid, blob = _sample()
    wrong = bytes(32)
    assert chunk.decode(blob, wrong, None, size=len(data)) == data
    with pytest.raises(ChunkInvalid):
        chunk.decode(blob, wrong, None, size=len(data) - 1)


@pytest.mark.parametrize(
    "blob",
    [b"", b"garbage", b"\x1f\x8b\x08\x00garbage", b"\xfd7zXZ\x00garbage",
     pytest.param(b"\x28\xb5\x2f\xfd garbage", marks=needs_zstd)],
)
def test_undecodable_blob(blob: bytes) -> None:
    cid = SHA512_256(b"x")
    with pytest.raises(ChunkInvalid) as exc:
        chunk.decode(blob, cid, SHA512_256, store=FakeStore())
    err = exc.value
    assert err.actual is None and err.cause and cid.hex() in str(err) and "/srv/some-store" in str(err)


@pytest.mark.parametrize("method", METHODS)
def test_truncated_blob(method: str) -> None:
    data, cid, blob = _sample(method)
    for cut in (len(blob) - 1, len(blob) // 2):
        with pytest.raises(ChunkInvalid):
            chunk.decode(blob[:cut], cid, SHA512_256, size=len(data))
        with pytest.raises(ChunkInvalid):
            chunk.decode(blob[:cut], cid, None)


@pytest.mark.parametrize("method", METHODS)
def test_bomb_bounded_by_size_or_max(method: str) -> None:
    payload = bytes(1024 * 1024)
    blob = chunk.encode(payload, method)
    cid = SHA512_256(payload)
    with pytest.raises(ChunkInvalid):
        chunk.decode(blob, cid, SHA512_256, size=64 * 1024)
    with pytest.raises(ChunkInvalid):
        chunk.decode(blob, cid, SHA512_256, max_size=64 * 1024)
    assert chunk.decode(blob, cid, SHA512_256) == payload


def test_verify() -> None:
    chunk.verify(SHA256(b"abc"), b"abc", SHA256)
    chunk.verify(SHA256(b"abc"), memoryview(b"abc"), SHA256)
    with pytest.raises(ChunkInvalid) as exc:
        chunk.verify(SHA256(b"abc"), b"abd", SHA256, store="s1")
    assert exc.value.actual == SHA256(b"abd") and exc.value.store == "s1"
