"""Encrypted LocalStore through the Store API: layout, round trips, uncompressed, key separation, prune."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.encrypt import ALGORITHMS, make_cipher
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.location import open_store

KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"
OTHER = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"


def _opts(key: str = KEY, algorithm: str = "", **kw: object) -> StoreOptions:
    return StoreOptions(encryption=True, encryption_key=key, encryption_algorithm=algorithm, **kw)  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=5000), algorithm=st.sampled_from(ALGORITHMS), uncompressed=st.booleans())
def test_round_trip(tmp_path: Path, data: bytes, algorithm: str, uncompressed: bool) -> None:
    path = tmp_path / f"{algorithm}-{uncompressed}"
    cid = SHA512_256(data)
    store = open_store(str(path), _opts(algorithm=algorithm, uncompressed=uncompressed), writable=True)
    store.store_chunk(cid, data)
    cipher = make_cipher(True, KEY, algorithm)
    assert cipher is not None
    name = cid.hex() + ("" if uncompressed else ".cacnk") + cipher.suffix
    on_disk = (path / cid.hex()[:4] / name).read_bytes()
    inner = cipher.decrypt(on_disk, cid)
    assert (inner if uncompressed else chunk_codec.decode(inner, cid, SHA512_256)) == data
    assert store.get_chunk(cid, SHA512_256) == data
    assert chunk_codec.decode(store.get_raw(cid), cid, SHA512_256) == data
    assert cid in set(store.iter_chunk_ids())  # type: ignore[attr-defined]


def test_keys_share_a_directory(tmp_path: Path) -> None:
    a = open_store(str(tmp_path), _opts(), writable=True)
    b = open_store(str(tmp_path), _opts(OTHER), writable=True)
    plain = open_store(str(tmp_path), StoreOptions(), writable=True)
    x, y, z = b"x" * 100, b"y" * 100, b"z" * 100
    for store, data in ((a, x), (b, y), (plain, z)):
        store.store_chunk(SHA512_256(data), data)
    assert list(a.iter_chunk_ids()) == [SHA512_256(x)]  # type: ignore[attr-defined]
    assert list(b.iter_chunk_ids()) == [SHA512_256(y)]  # type: ignore[attr-defined]
    assert list(plain.iter_chunk_ids()) == [SHA512_256(z)]  # type: ignore[attr-defined]
    assert not a.has_chunk(SHA512_256(z)) and not plain.has_chunk(SHA512_256(x))
    assert a.prune(set()) == 1  # type: ignore[attr-defined]
    assert b.has_chunk(SHA512_256(y)) and plain.has_chunk(SHA512_256(z))
    assert len([n for _, _, ns in os.walk(tmp_path) for n in ns if not n.startswith(".")]) == 2
