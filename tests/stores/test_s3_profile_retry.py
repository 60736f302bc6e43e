"""S3: ``aws-credentials-file`` with ``$AWS_PROFILE``, and chunk bodies that arrive whole but short.

desync reads the profile ``$AWS_PROFILE`` names from the config's
``aws-credentials-file`` (when the entry has no ``aws-profile``), even
though ``~/.aws`` knows no such profile; on the real moto server the keys
of that profile are the ones signed with and a chunk goes in and out. A
chunk whose body is complete as HTTP (its Content-Length matches) but cut
short, so it does not decode, is fetched again like any other transient
error: once with ``-e 1`` (the library's ``error_retry=1`` and the command
line's), never with ``-e 0``.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, StoreError
from casync_store import LocalStore, combine
from casync_store.plumbing.config import StoreOptions, load_config
from casync_store.stores.s3 import S3Store
from tests.support.faulty_http import FaultyServer, Short, Status
from tests.support.moto import MotoServer, make_bucket

_VARS = ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN", "S3_REGION", "AWS_ACCESS_KEY_ID",
         "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
         "HTTP_PROXY", "http_proxy")  # fmt: skip


@pytest.fixture(autouse=True)
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("HOME", str(tmp_path))


def _chunk(seed: int) -> tuple[bytes, bytes, bytes]:
    data = seed.to_bytes(4, "little") * 1000
    return SHA512_256(data), data, chunk_codec.encode(data, "zstd")


def test_aws_profile_names_a_profile_of_the_credentials_file(
    moto_server: MotoServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"pycasync-{uuid.uuid4().hex[:12]}"
    make_bucket(moto_server.endpoint, bucket)
    creds = tmp_path / "aws-credentials"
    creds.write_text("[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n"
                     "[ci-profile]\naws_access_key_id = AKPROFILE\naws_secret_access_key = s2\n")  # fmt: skip
    conf = tmp_path / "config.json"
    entry = {"aws-credentials-file": str(creds)}  # no aws-profile: $AWS_PROFILE, else "default"
    conf.write_text(json.dumps({"s3-credentials": {moto_server.endpoint: entry}}))
    location = f"s3+{moto_server.endpoint}/{bucket}"
    monkeypatch.setenv("AWS_PROFILE", "ci-profile")  # in the file only, not in ~/.aws
    options = load_config(str(conf)).store_options_for(location).replace(error_retry=0)
    store = S3Store(location, options)
    assert store.credentials_source == "config aws-credentials-file, profile ci-profile"
    frozen = store._s3.client._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == ("AKPROFILE", "s2")
    cid, data, blob = _chunk(1)
    store.put_raw(cid, blob)
    assert store.get_chunk(cid, SHA512_256) == data
    monkeypatch.setenv("AWS_PROFILE", "nowhere")
    with pytest.raises(StoreError, match="has no profile 'nowhere'"):
        S3Store(location, options)


@pytest.mark.parametrize("retries", [1, 2])
def test_a_whole_but_short_body_is_fetched_again(retries: int) -> None:
    cid, data, blob = _chunk(2)
    path = f"/bkt/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    with FaultyServer() as server:
        server.chunks[path] = blob
        options = StoreOptions(error_retry=retries, error_retry_base_interval=0.01)
        store = S3Store(f"s3+{server.url}/bkt", options)
        server.plan(path, Status(200, blob[:7]))  # well-formed HTTP, a truncated chunk
        assert store.get_chunk(cid, SHA512_256) == data and server.count("GET", path) == 2
        server.plan(path, Short(blob[:7], len(blob)))  # cut off mid-body
        before = server.count("GET", path)
        assert store.get_chunk(cid, SHA512_256) == data and server.count("GET", path) - before == 2
        server.plan(path, *[Status(200, blob[:7])] * (retries + 1))  # every attempt short: reported
        before = server.count("GET", path)
        with pytest.raises(ChunkInvalid):
            store.get_chunk(cid, SHA512_256)
        assert server.count("GET", path) - before == retries + 1


def test_behind_a_cache_too(tmp_path: Any) -> None:
    cid, data, blob = _chunk(4)
    path = f"/bkt/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    with FaultyServer() as server:
        server.chunks[path] = blob
        remote = S3Store(f"s3+{server.url}/bkt", StoreOptions(error_retry=1, error_retry_base_interval=0.01))
        cache = LocalStore(str(tmp_path / "cache"))
        server.plan(path, Status(200, blob[:7]))
        assert combine([remote], cache).get_chunk(cid, SHA512_256) == data
        assert server.count("GET", path) == 2 and cache.get_raw(cid) == blob  # the whole body cached


def test_no_retry_with_e_0() -> None:
    cid, _data, blob = _chunk(3)
    path = f"/bkt/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    with FaultyServer() as server:
        server.chunks[path] = blob
        store = S3Store(f"s3+{server.url}/bkt", StoreOptions(error_retry=0))
        server.plan(path, Status(200, blob[:7]))
        with pytest.raises(ChunkInvalid):
            store.get_chunk(cid, SHA512_256)
        assert server.count("GET", path) == 1


def test_cli_extract_e_1_gets_past_a_short_body(
    env: dict[str, str], tmp_path: Any, blob: tuple[str, bytes]
) -> None:
    from tests.support.cli import ok, read

    index, store = str(tmp_path / "b.caibx"), str(tmp_path / "store")
    ok(env, "make", "-s", store, "-m", "16:32:64", index, blob[0])
    with FaultyServer() as server:
        for directory, _, names in os.walk(store):
            for name in names:
                if name.endswith(".cacnk"):
                    with open(os.path.join(directory, name), "rb") as f:
                        server.chunks[f"/bkt/{name[:4]}/{name}"] = f.read()
        victim = sorted(server.chunks)[0]
        server.plan(victim, Status(200, server.chunks[victim][:9]))
        env = {**env, "S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s"}
        out = str(tmp_path / "out")
        ok(env, "extract", "-e", "1", "-b", "10ms", "-s", f"s3+{server.url}/bkt", index, out)
        assert read(out) == blob[1] and server.count("GET", victim) == 2
