"""Uncompressed local stores (desync's ``uncompressed`` store option): chunks as plain data at ``xxxx/<id>``.

The store itself (names, the Store contract: encoded bytes in and out,
verified data, listing, prune, damage), then the command line with the
option in the config file: ``chop`` and ``cache`` convert between the two
kinds both ways, ``extract`` reads either, ``chunk-server -u`` serves an
uncompressed store, and the real casync binary extracts from a compressed
store filled by ``cache`` from an uncompressed one (casync has no
uncompressed stores of its own).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid
from casync_store import LocalStore
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.layout import chunk_suffix
from casync_store.stores.location import open_store
from tests.support.cli import Server, chunk_files, ok, read, run


def _chunk(seed: int, size: int = 5000) -> tuple[bytes, bytes]:
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data


def _plain_files(store: str) -> list[str]:
    return sorted(n for _, _, names in os.walk(store) for n in names if len(n) == 64)


def test_layout_suffixes() -> None:
    assert chunk_suffix(False) == ".cacnk" and chunk_suffix(True) == ""


def test_uncompressed_store_contract(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "u")
    store = open_store(path, StoreOptions(uncompressed=True), writable=True)
    assert isinstance(store, LocalStore) and store.uncompressed
    cid, data = _chunk(1)
    store.store_chunk(cid, data)
    assert read(os.path.join(path, cid.hex()[:4], cid.hex())) == data  # the data itself, no suffix
    assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)
    assert chunk_codec.decode(store.get_raw(cid), cid, SHA512_256) == data  # raw reads are encoded
    other, other_data = _chunk(2)
    store.put_raw(other, chunk_codec.encode(other_data, "zstd"))  # an encoded blob is stored decoded
    assert read(os.path.join(path, other.hex()[:4], other.hex())) == other_data
    assert sorted(store.iter_chunk_ids()) == sorted([cid, other])
    compressed = LocalStore(path)  # the other kind sees none of them
    assert list(compressed.iter_chunk_ids()) == [] and not compressed.has_chunk(cid)
    with open(os.path.join(path, other.hex()[:4], other.hex()), "r+b") as f:
        f.truncate(100)
    with pytest.raises(ChunkInvalid, match="index says"):
        store.get_chunk(other, SHA512_256, size=len(other_data))
    with pytest.raises(ChunkInvalid):
        store.get_chunk(other, SHA512_256)
    assert store.prune({cid}) == 1 and list(store.iter_chunk_ids()) == [cid]


def _config(tmp_path: str, *stores: str) -> str:
    path = os.path.join(tmp_path, "config.json")
    with open(path, "w") as f:
        json.dump({"store-options": {s: {"uncompressed": True} for s in stores}}, f)
    return path


def test_chop_cache_and_extract_convert_both_ways(
    env: dict[str, str], made: tuple[str, str, bytes], blob: tuple[str, bytes], tmp_path: str
) -> None:
    store, index, content = made
    plain, chopped, back = (os.path.join(tmp_path, n) for n in ("plain", "chopped", "back"))
    conf = _config(tmp_path, plain, chopped)
    os.makedirs(chopped)  # chop writes into an existing store, as desync
    ok(env, "--config", conf, "cache", "-s", store, "-c", plain, index)  # compressed -> uncompressed
    names = [n[: -len(".cacnk")] for n in chunk_files(store)]
    assert _plain_files(plain) == names and chunk_files(plain) == []
    ok(env, "--config", conf, "chop", "-s", chopped, index, blob[0])  # chop writes uncompressed
    assert _plain_files(chopped) == names
    out = os.path.join(tmp_path, "out")
    ok(env, "--config", conf, "extract", "-s", plain, index, out)
    assert read(out) == content
    ok(env, "--config", conf, "cache", "-s", plain, "-c", back, index)  # uncompressed -> compressed
    assert chunk_files(back) == chunk_files(store)
    casync_out = os.path.join(tmp_path, "casync-out")
    proc = run_casync(env, "extract", f"--store={back}", index, casync_out)
    assert proc.returncode == 0, proc.stderr
    assert read(casync_out) == content
    ok(env, "--config", conf, "verify", "-s", plain)
    assert run(env, "extract", "-s", plain, index, out + "2").returncode == 1  # without the option: no chunks


def run_casync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["casync", *args], env=env, capture_output=True, timeout=120)


def test_chunk_server_u_over_an_uncompressed_store(
    env: dict[str, str], made: tuple[str, str, bytes], tmp_path: str
) -> None:
    store, index, content = made
    plain = os.path.join(tmp_path, "plain")
    conf = _config(tmp_path, plain)
    ok(env, "--config", conf, "cache", "-s", store, "-c", plain, index)
    server = Server(env, "--config", conf, "-u", "-s", plain)
    try:
        name = _plain_files(plain)[0]
        with urllib.request.urlopen(f"{server.url}{name[:4]}/{name}") as answer:
            assert answer.read() == read(os.path.join(plain, name[:4], name))
        http_conf = os.path.join(tmp_path, "http.json")
        with open(http_conf, "w") as f:
            json.dump({"store-options": {server.url: {"uncompressed": True}}}, f)
        out = os.path.join(tmp_path, "out")
        ok(env, "--config", http_conf, "extract", "-s", server.url, index, out)
        assert read(out) == content
    finally:
        server.stop()
