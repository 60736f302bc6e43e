"""Encrypted stores end to end: make, extract, verify, cache and chunk-server with desync's encryption."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from casync_format import compress
from casync_format.encrypt import ChunkCipher
from tests.support.cli import Server, data, ok, one_error, run

KEY = "6368616e676520746869732070617373776f726420746f206120736563726574"  # desync's encrypt_test.go
OTHER = "746f74616c6c7920646966666572656e74206b65792075736564206865726521"
BLOB = data(300_000, 14)


def _config(tmp_path: Path, store: str, **options: object) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"store-options": {store: options}}))
    return str(path)


def _files(store: Path) -> list[Path]:
    return sorted(p for p in store.glob("*/*") if p.is_file())


@pytest.mark.parametrize("algorithm", ["", "xchacha20-poly1305", "aes-256-gcm"])
def test_make_extract_verify_encrypted_local(env: dict[str, str], tmp_path: Path, algorithm: str) -> None:
    store, blob = tmp_path / "store", tmp_path / "blob"
    blob.write_bytes(BLOB)
    options: dict[str, object] = {"encryption": True, "encryption-key": KEY}
    if algorithm:
        options["encryption-algorithm"] = algorithm
    config = _config(tmp_path, str(store), **options)
    ok(env, "--config", config, "make", "-s", str(store), str(tmp_path / "i.caibx"), str(blob))
    cipher = ChunkCipher(algorithm or "xchacha20-poly1305", bytes.fromhex(KEY))
    files = _files(store)
    assert files and all(p.name.endswith(".cacnk" + cipher.suffix) for p in files)
    for p in files:  # each file is nonce || AEAD(zstd frame): decrypt, decompress, hash to its name
        plain = compress.decompress(cipher.decrypt(p.read_bytes(), b""), 1 << 24)
        assert hashlib.new("sha512_256", plain).hexdigest() == p.name[:64]
    out = tmp_path / "out"
    ok(env, "--config", config, "extract", "-s", str(store), str(tmp_path / "i.caibx"), str(out))
    assert out.read_bytes() == BLOB
    ok(env, "--config", config, "verify", "-s", str(store))
    # Without the encryption options the store holds no chunk at all (other suffix).
    one_error(run(env, "extract", "-s", str(store), str(tmp_path / "i.caibx"), str(tmp_path / "x")), 1)


def test_wrong_key_is_one_line_naming_the_chunk(env: dict[str, str], tmp_path: Path) -> None:
    store, blob = tmp_path / "store", tmp_path / "blob"
    blob.write_bytes(BLOB)
    ok(env, "--config", _config(tmp_path, str(store), encryption=True, **{"encryption-key": KEY}),
       "make", "-s", str(store), str(tmp_path / "i.caibx"), str(blob))
    # Same key id needed to find the files: rename them to the other key's suffix.
    other = ChunkCipher("xchacha20-poly1305", bytes.fromhex(OTHER))
    for p in _files(store):
        p.rename(p.with_name(p.name[:70] + other.suffix))
    config = _config(tmp_path, str(store), encryption=True, **{"encryption-key": OTHER})
    out = tmp_path / "out"
    line = one_error(run(env, "--config", config, "extract", "-s", str(store), str(tmp_path / "i.caibx"),
                         str(out)), 1, "wrong key")
    assert KEY not in line and OTHER not in line and not out.exists()
    assert any(p.name[:64] in line for p in _files(store)), line


def test_key_from_environment_and_option_errors(env: dict[str, str], tmp_path: Path) -> None:
    store, blob = tmp_path / "store", tmp_path / "blob"
    blob.write_bytes(BLOB)
    config = _config(tmp_path, str(store), encryption=True)
    index = str(tmp_path / "i.caibx")
    one_error(run(env, "--config", config, "make", "-s", str(store), index, str(blob)), 1,
              "no encryption key configured")
    assert not store.exists()
    ok(dict(env, DESYNC_ENCRYPTION_KEY=KEY), "--config", config, "make", "-s", str(store), index, str(blob))
    key_id = hashlib.sha256(bytes.fromhex(KEY)).hexdigest()[:8]
    assert _files(store)[0].name.endswith(".cacnk.xchacha20-poly1305-" + key_id)
    bad = _config(tmp_path, str(store), **{"encryption-key": KEY})
    line = one_error(run(env, "--config", bad, "extract", "-s", str(store), index, str(tmp_path / "o")), 1,
                     "without setting encryption to true")
    assert KEY not in line
    ssh = _config(tmp_path, "ssh://host/store", encryption=True, **{"encryption-key": KEY})
    one_error(run(env, "--config", ssh, "extract", "-s", "ssh://host/store", index, str(tmp_path / "o")), 1,
              "not supported by casync protocol")


def test_cache_converts_between_plain_and_encrypted(env: dict[str, str], tmp_path: Path) -> None:
    plain, enc, blob = tmp_path / "plain", tmp_path / "enc", tmp_path / "blob"
    blob.write_bytes(BLOB)
    index = str(tmp_path / "i.caibx")
    ok(env, "make", "-s", str(plain), index, str(blob))
    config = _config(tmp_path, str(enc), encryption=True, **{"encryption-key": KEY, "encryption-algorithm":
                                                              "aes-256-gcm"})
    ok(env, "--config", config, "cache", "-s", str(plain), "-c", str(enc), index)
    assert len(_files(enc)) == len(_files(plain))
    assert all(p.name.endswith(".cacnk.aes-256-gcm-50d64035") for p in _files(enc))
    out = tmp_path / "out"
    ok(env, "--config", config, "extract", "-s", str(enc), index, str(out))
    assert out.read_bytes() == BLOB


def test_encrypting_chunk_server_over_an_encrypted_store(env: dict[str, str], tmp_path: Path) -> None:
    # Store under one key and algorithm, wire under another: the server converts between them.
    store, blob = tmp_path / "store", tmp_path / "blob"
    blob.write_bytes(BLOB)
    index = str(tmp_path / "i.caibx")
    store_config = _config(tmp_path, str(store), encryption=True, **{"encryption-key": KEY})
    ok(env, "--config", store_config, "make", "-s", str(store), index, str(blob))
    server = Server(dict(env, DESYNC_ENCRYPTION_KEY=KEY), "--config", store_config, "-s", str(store),
                    "--encryption-algorithm", "aes-256-gcm", "--encryption-key", OTHER)
    try:
        client = tmp_path / "client.json"
        client.write_text(json.dumps({"store-options": {server.url: {
            "encryption": True, "encryption-key": OTHER, "encryption-algorithm": "aes-256-gcm"}}}))
        out = tmp_path / "out"
        ok(env, "--config", str(client), "extract", "-s", server.url, index, str(out))
        assert out.read_bytes() == BLOB
        wrong = _config(tmp_path, server.url, encryption=True, **{"encryption-key": KEY,
                                                                  "encryption-algorithm": "aes-256-gcm"})
        one_error(run(env, "--config", wrong, "extract", "-s", server.url, index, str(tmp_path / "x")), 1)
    finally:
        server.stop()
    assert os.path.exists(out)
