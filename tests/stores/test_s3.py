"""S3 chunk and index stores against a real S3 API server (moto, in a subprocess on 127.0.0.1).

Covers location parsing (hypothesis), the desync layout with and without a
prefix (foreign keys ignored and kept), missing chunks and buckets, an
unreachable endpoint, the three bucket lookup styles (proven from moto's
request log: virtual-host requests go through moto as an HTTP proxy, since
``bucket.localhost`` does not resolve here), streamed pagination with small
pages, batched prune, upgrade from the old flat layout, the index store
(single PUT and multipart), make/extract-through-a-cache/info/prune/verify
through the library and the command line. Credentials are proven on a second
moto server with its IAM checks on: a request signed with the wrong key fails,
so a store that works used the credentials the test expected (environment
over config, exact config key, glob key, shared credentials file and
profile, AWS chain, anonymous), and no secret appears in any message.

The fast path (chunk GET/HEAD/PUT signed by ``casync_store.stores._sigv4``) is
proven three ways: its signatures equal botocore's ``S3SigV4Auth`` ones for
awkward keys, tokens, methods, regions and times (hypothesis); on the
signature-checking server, chunk requests go through it and never through
boto3, a wrong secret is refused there, and refreshed credentials are used
at once; on a fault-injecting server, 5xx, throttling and short bodies are
retried, and answers it leaves to boto3 (redirects, 400, other statuses)
are served by boto3.
"""

from __future__ import annotations

import datetime
import functools
import io
import json
import os
import re
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pycasync
from casync_format import chunk as chunk_codec
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, IndexNotFound, MissingDependency, ParameterError, StoreError
from casync_store import CachedStore, LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.info import index_info
from casync_store.ops.maintain import prune_store, verify_store
from casync_store.ops.make import make
from casync_store.plumbing.config import StoreOptions, load_config
from casync_store.stores import _s3client
from casync_store.stores import s3 as s3mod
from casync_store.stores.indexio import open_index
from casync_store.stores.indexstore import open_index_store, split_index_location
from casync_store.stores.location import open_store
from casync_store.stores.s3 import S3IndexStore, S3Store, parse_s3_location, upgrade_s3
from tests.support import CLI
from tests.support.moto import TEST_KEY, TEST_SECRET, MotoServer, client, enable_auth, make_bucket, start_moto

SMALL = ChunkerParams(4096, 16384, 65536)
FAST = StoreOptions(error_retry=0)
_CRED_VARS = (
    "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_SESSION_TOKEN", "S3_REGION", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
)  # fmt: skip


@pytest.fixture(autouse=True)
def s3_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No AWS settings of the machine; any key for the plain moto server."""
    for name in _CRED_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("S3_ACCESS_KEY", TEST_KEY)
    monkeypatch.setenv("S3_SECRET_KEY", TEST_SECRET)


@pytest.fixture
def bucket(moto_server: MotoServer) -> str:
    name = f"pycasync-{uuid.uuid4().hex[:12]}"
    make_bucket(moto_server.endpoint, name)
    return name


@functools.cache  # the same bytes for a seed: the gzip header holds the time
def chunk(seed: int, size: int = 3000) -> tuple[bytes, bytes, bytes]:
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data, chunk_codec.encode(data, "gzip")


def keys(server: MotoServer, bucket: str) -> list[str]:
    pages = client(server.endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def put(server: MotoServer, bucket: str, key: str, body: bytes = b"x") -> None:
    client(server.endpoint).put_object(Bucket=bucket, Key=key, Body=body)


# --- locations ------------------------------------------------------------------------------------

_SEGMENT = st.text("abcxyz019-_.", min_size=1, max_size=8).filter(lambda s: s not in (".", ".."))


@given(bucket=st.text("abc123-", min_size=3, max_size=12), segments=st.lists(_SEGMENT, max_size=4),
       doubled=st.booleans(), trailing=st.booleans(), https=st.booleans(),
       lookup=st.sampled_from(["", "?lookup=path", "?lookup=dns", "?lookup=auto", "?lookup="]))  # fmt: skip
def test_parse_location(
    bucket: str, segments: list[str], doubled: bool, trailing: bool, https: bool, lookup: str
) -> None:
    scheme = "https" if https else "http"
    path = "/" + bucket + "".join(("//" if doubled else "/") + seg for seg in segments) + "/" * trailing
    loc = parse_s3_location(f"s3+{scheme}://host.example:9000{path}{lookup}")
    assert loc.endpoint == f"{scheme}://host.example:9000" and loc.bucket == bucket
    assert loc.prefix == "".join(seg + "/" for seg in segments)
    assert loc.addressing == {"?lookup=path": "path", "?lookup=dns": "virtual"}.get(lookup, "auto")


@pytest.mark.parametrize(("location", "fragment"), [
    ("s3+http://host", "no bucket"),
    ("s3+http://host/", "no bucket"),
    ("s3+http:///bucket", "no host"),
    ("s3+http://host:99999/bucket", "invalid port"),
    ("s3+http://host/bucket?lookup=virtual", "unknown S3 bucket lookup 'virtual'"),
    ("s3+http://host/bucket?lokup=path", "unknown parameter 'lokup'"),
    ("s3+http://user:hunter2@host/bucket", "credentials in the URL"),
    ("http://host/bucket", "not an s3+http"),
])  # fmt: skip
def test_bad_locations(location: str, fragment: str) -> None:
    with pytest.raises(ParameterError) as exc:
        S3Store(location)
    assert fragment in str(exc.value) and "hunter2" not in str(exc.value)
    assert "\n" not in str(exc.value)


# --- the chunk store ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/deep/prefix/"])
def test_layout_round_trip_and_foreign_keys(moto_server: MotoServer, bucket: str, prefix: str) -> None:
    store = open_store(f"s3+{moto_server.endpoint}/{bucket}{prefix}", FAST, writable=True)
    assert isinstance(store, S3Store) and str(store) == f"s3+{moto_server.endpoint}/{bucket}{prefix}"
    p = prefix.strip("/") + "/" if prefix.strip("/") else ""
    chunks = [chunk(i) for i in range(3)]
    for cid, _data, blob in chunks:
        assert not store.has_chunk(cid)
        store.put_raw(cid, blob)
    name = chunks[0][0].hex()
    foreign = [f"{p}README", f"{p}{name[:4]}/{name}.cacnk.tmp", f"{p}sub/{name[:4]}/{name}.cacnk",
               f"{p}{name}", f"{p}0000/{name}.cacnk", f"{p}{name[:4]}/{name.upper()}.cacnk",
               f"other{p}{name[:4]}/{name}.cacnk", "x.caibx"]  # fmt: skip
    for key in foreign:
        put(moto_server, bucket, key)
    expected = {f"{p}{c[0].hex()[:4]}/{c[0].hex()}.cacnk" for c in chunks}
    assert expected <= set(keys(moto_server, bucket))
    for cid, data, blob in chunks:
        assert store.has_chunk(cid) and store.get_raw(cid) == blob
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    assert sorted(store.iter_chunk_ids()) == sorted(c[0] for c in chunks)
    assert store.prune({chunks[1][0]}) == 2
    assert list(store.iter_chunk_ids()) == [chunks[1][0]]
    assert set(foreign) <= set(keys(moto_server, bucket)), "prune removed a foreign key"
    store.remove_chunk(chunks[1][0])
    store.remove_chunk(chunks[1][0])  # already gone: fine
    assert list(store.iter_chunk_ids()) == []
    store.close()


def test_missing_chunk_and_bucket(moto_server: MotoServer, bucket: str) -> None:
    cid, _data, blob = chunk(7)
    store = S3Store(f"s3+{moto_server.endpoint}/{bucket}/p", FAST)
    with pytest.raises(ChunkMissing) as missing:
        store.get_chunk(cid, SHA512_256)
    assert cid.hex() in str(missing.value) and str(store) in str(missing.value)
    nobucket = S3Store(f"s3+{moto_server.endpoint}/no-such-bucket-here/p", FAST)
    for call in (lambda: nobucket.get_raw(cid), lambda: list(nobucket.iter_chunk_ids()),
                 lambda: nobucket.put_raw(cid, blob), lambda: nobucket.prune(set())):  # fmt: skip
        with pytest.raises(StoreError) as exc:
            call()
        assert not isinstance(exc.value, ChunkMissing)
        assert str(exc.value) == f"store {nobucket}: bucket no-such-bucket-here does not exist"


def test_object_too_large_for_a_chunk(
    moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store(f"s3+{moto_server.endpoint}/{bucket}", FAST)
    cid, _data, blob = chunk(8)
    store.put_raw(cid, blob)
    monkeypatch.setattr(s3mod, "MAX_BLOB_SIZE", len(blob) - 1)
    with pytest.raises(StoreError, match=f"chunk {cid.hex()} is larger than {len(blob) - 1} bytes"):
        store.get_raw(cid)


def test_unreachable_endpoint() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = S3Store(f"s3+http://127.0.0.1:{port}/bucket/p", StoreOptions(error_retry=0, timeout=2))
    with pytest.raises(StoreError) as exc:
        store.get_raw(chunk(1)[0])
    assert str(store) in str(exc.value) and "\n" not in str(exc.value)


def test_missing_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # what an environment without the extra does
    for make_store in (lambda: open_store("s3+http://h/bucket"), lambda: open_index_store("s3+http://h/b")):
        with pytest.raises(MissingDependency) as exc:
            make_store()
        assert (exc.value.extra, exc.value.module) == ("s3", "boto3") and "pycasync[s3]" in str(exc.value)


def test_uncompressed_refused() -> None:
    with pytest.raises(StoreError, match="uncompressed"):
        S3Store("s3+http://127.0.0.1:1/bucket", StoreOptions(uncompressed=True))


def test_retries_throttling_5xx_and_short_bodies() -> None:
    from tests.support.faulty_http import FaultyServer, Short, Slow, Status

    cid, _data, blob = chunk(70)
    path = f"/bkt/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    slow_down = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
    with FaultyServer() as server:
        server.chunks[path] = blob
        store = S3Store(f"s3+{server.url}/bkt", StoreOptions(error_retry=2, error_retry_base_interval=0.01))
        server.plan(path, Status(503, slow_down), Short(blob[:5], len(blob)))
        assert store.get_raw(cid) == blob and server.count("GET", path) == 3
        server.plan(path, Status(500), Status(502), Status(503, slow_down))
        with pytest.raises(StoreError) as exc:
            store.get_raw(cid)
        message = str(exc.value)
        assert message.startswith(f"store {store}: GET chunk {cid.hex()}: HTTP 503 ") and "\n" not in message
        assert message.endswith("(gave up after 3 attempts)") and server.count("GET", path) == 6
        server.plan(path, Status(403))  # not retried
        with pytest.raises(StoreError, match="access denied"):
            S3Store(str(store), FAST).get_raw(cid)
        assert server.count("GET", path) == 7
        server.plan(path, Status(500))
        with pytest.raises(StoreError):  # "cannot tell" is not "missing"
            S3Store(str(store), FAST).has_chunk(cid)
        server.plan(path, Slow(5))
        with pytest.raises(StoreError, match="timed out"):
            S3Store(str(store), StoreOptions(error_retry=0, timeout=0.3)).get_raw(cid)
        chunk_requests = [r for r in server.requests if r.path == path]
        assert all(r.headers.get("User-Agent") == "pycasync" for r in chunk_requests), "not the fast path"
        server.chunks["/bkt/x.caibx"] = b"i" * 100
        server.plan("/bkt/x.caibx", Short(b"i" * 10, 100))
        with pytest.raises(StoreError) as exc, S3IndexStore(str(store), FAST).open_index("x.caibx") as f:
            f.read()
        assert "index x.caibx" in str(exc.value) and str(store) in str(exc.value)
        other = chunk(71)[0]
        with pytest.raises(ChunkMissing):  # a bare 404, as some servers answer
            store.get_raw(other)
        assert not store.has_chunk(other)


@pytest.fixture
def fast_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, headers) of every request the S3 fast path sends, and none made by boto3."""
    sent: list[tuple[str, str, dict[str, str]]] = []
    real_send = _s3client.FastPath._send

    def send(self: Any, conn: Any, method: str, path: str, body: Any) -> Any:
        conn_request = conn.request

        def request(method: str, url: str, body: Any = None, headers: Any = None, **kw: Any) -> Any:
            sent.append((method, url, dict(headers or {})))
            return conn_request(method, url, body=body, headers=headers, **kw)

        conn.request = request
        try:
            return real_send(self, conn, method, path, body)
        finally:
            conn.request = conn_request

    monkeypatch.setattr(_s3client.FastPath, "_send", send)
    return sent


def boto_object_calls(store: S3Store | S3IndexStore) -> list[str]:
    """The single-object operations boto3 makes from now on (the fast path's fallbacks)."""
    calls: list[str] = []
    for op in ("GetObject", "HeadObject", "PutObject"):
        store._s3.client.meta.events.register(f"before-call.s3.{op}", lambda op=op, **kw: calls.append(op))
    return calls


@pytest.mark.parametrize(("lookup", "virtual"), [("?lookup=dns", True), ("?lookup=path", False), ("", False)])
def test_lookup_styles(
    moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch, lookup: str, virtual: bool,
    fast_sends: list[tuple[str, str, dict[str, str]]],
) -> None:  # fmt: skip
    # bucket.localhost does not resolve here: moto itself is the HTTP proxy, and its log shows the URL.
    # (The fast path, like the HTTP store, reaches the loopback host localhost directly, not by proxy.)
    monkeypatch.setenv("HTTP_PROXY", moto_server.endpoint)
    store = S3Store(f"s3+http://localhost:{moto_server.port}/{bucket}/look{lookup}")
    boto = boto_object_calls(store)
    cid, _data, blob = chunk(9)
    store.put_raw(cid, blob)
    assert store.get_raw(cid) == blob and store.has_chunk(cid) and list(store.iter_chunk_ids()) == [cid]
    assert [m for m, _url, _h in fast_sends] == ["PUT", "GET", "HEAD"] and boto == []
    with open(moto_server.log, errors="replace") as f:
        log = f.read()
    tail = f"/look/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    host = f"http://{bucket}.localhost:{moto_server.port}{tail}"
    path = f" /{bucket}{tail} "  # a request line to localhost itself
    assert (host in log, path in log) == (virtual, not virtual)
    assert {h["Host"] for _m, _url, h in fast_sends} == {
        f"{bucket}.localhost:{moto_server.port}" if virtual else f"localhost:{moto_server.port}"
    }


def test_pagination_streams_and_prune_batches(
    moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3mod, "LIST_PAGE_SIZE", 7)
    monkeypatch.setattr(s3mod, "DELETE_BATCH", 4)
    store = S3Store(f"s3+{moto_server.endpoint}/{bucket}/pages")
    ids = [SHA512_256(i.to_bytes(4, "little")) for i in range(40)]
    for cid in ids:
        store.put_raw(cid, b"tiny")  # listing does not read bodies
    calls: list[str] = []
    events = store._s3.client.meta.events
    events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    events.register("before-call.s3.DeleteObjects", lambda **kw: calls.append("delete"))
    listing = store.iter_chunk_ids()
    first = next(listing)
    assert calls == ["list"], "the listing must be fetched page by page"
    assert sorted([first, *listing]) == sorted(ids) and calls.count("list") == 6
    calls.clear()
    keep = set(ids[::3])
    assert store.prune(keep) == 40 - len(keep)
    assert calls.count("delete") == 7 and sorted(store.iter_chunk_ids()) == sorted(keep)
    removed = 0
    for cid in store.iter_chunk_ids():  # removing what was just listed is safe
        store.remove_chunk(cid)
        removed += 1
    assert removed == len(keep) and list(store.iter_chunk_ids()) == []


def test_upgrade_from_flat_layout(moto_server: MotoServer, bucket: str) -> None:
    store = S3Store(f"s3+{moto_server.endpoint}/{bucket}/old")
    chunks = [chunk(20 + i) for i in range(5)]
    for cid, _data, blob in chunks:
        put(moto_server, bucket, f"old/{cid.hex()}", blob)
    put(moto_server, bucket, "old/README")
    put(moto_server, bucket, chunks[0][0].hex())  # outside the prefix: not this store's
    assert list(store.iter_chunk_ids()) == []
    assert upgrade_s3(store) == 5
    assert sorted(store.iter_chunk_ids()) == sorted(c[0] for c in chunks)
    for cid, data, _blob in chunks:
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    left = keys(moto_server, bucket)
    assert "old/README" in left and chunks[0][0].hex() in left
    assert not any(re.fullmatch(r"old/[0-9a-f]{64}", k) for k in left)
    assert upgrade_s3(store) == 0  # idempotent


# --- the index store ------------------------------------------------------------------------------


def test_index_store_round_trip(
    moto_server: MotoServer, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base, name = split_index_location(f"s3+{moto_server.endpoint}/{bucket}/idx/blob.caibx?lookup=path")
    store = open_index_store(base)
    assert isinstance(store, S3IndexStore) and name == "blob.caibx"
    assert not store.has_index(name)
    with pytest.raises(IndexNotFound) as missing:
        store.open_index(name)
    assert name in str(missing.value) and str(store) in str(missing.value)
    data = os.urandom(100_000)
    store.put_index(name, io.BytesIO(data), len(data))
    assert store.has_index(name) and keys(moto_server, bucket) == ["idx/blob.caibx"]
    with store.open_index(name) as f:
        assert f.read(10) == data[:10] and f.read() == data[10:]
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(ParameterError):
            store.open_index(bad)
    with pytest.raises(StoreError, match="ended"):  # a short source stores nothing
        store.put_index("short.caibx", io.BytesIO(data[:10]), len(data))
    monkeypatch.setattr(s3mod, "INDEX_PART_SIZE", 5 << 20)  # S3's smallest part
    big = os.urandom(11 << 20)
    store.put_index("big.caibx", io.BytesIO(big), len(big))
    with store.open_index("big.caibx") as f:
        assert f.read() == big
    with pytest.raises(StoreError, match="ended"):
        store.put_index("bigshort.caibx", io.BytesIO(big[: 6 << 20]), len(big))
    assert keys(moto_server, bucket) == ["idx/big.caibx", "idx/blob.caibx"]
    uploads = client(moto_server.endpoint).list_multipart_uploads(Bucket=bucket)
    assert not uploads.get("Uploads"), "a failed multipart upload was not aborted"
    store.close()


# --- operations through the library and the command line ------------------------------------------


@pytest.fixture
def blob_file(tmp_path: Any) -> str:
    import random

    data = random.Random(5).randbytes(600_000) + bytes(200_000) + random.Random(6).randbytes(300_000)
    path = str(tmp_path / "blob")
    with open(path, "wb") as f:
        f.write(data)
    return path


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_library_operations(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    location = f"s3+{moto_server.endpoint}/{bucket}/ops"
    store = S3Store(location, StoreOptions(concurrency=4))
    index_loc = f"s3+{moto_server.endpoint}/{bucket}/indexes/blob.caibx"
    stats = make(index_loc, blob_file, store, params=SMALL)
    assert stats.chunks_total > 10
    with open_index(index_loc) as index:
        cache = LocalStore(str(tmp_path / "cache"), sync=False)
        out = str(tmp_path / "out")
        extract(index, out, CachedStore(store, cache), concurrency=4)
        assert _read(out) == _read(blob_file)
        cached = set(cache.iter_chunk_ids())  # all but the all-zero chunk (a hole, never fetched)
        assert cached <= set(store.iter_chunk_ids()) and len(cached) >= info_unique(index) - 1
        info = index_info(index, [store])
        assert info.in_store == info.unique and info.size == os.path.getsize(blob_file)
        assert verify_store(store, SHA512_256).invalid == []
        extra = chunk(50)
        store.put_raw(extra[0], extra[2])
        damaged = next(iter(index)).id
        store.put_raw(damaged, b"garbage")
        result = verify_store(store, SHA512_256, repair=True)
        assert result.invalid == [damaged] and not store.has_chunk(damaged)
        assert prune_store(store, [index]) == 1 and not store.has_chunk(extra[0])
        with pytest.raises(ChunkMissing) as exc:  # the damaged chunk was removed
            extract(index, str(tmp_path / "out2"), store)
        assert exc.value.chunk_id == damaged


def info_unique(index: Any) -> int:
    return len({item.id for item in index})


def _cli(*args: str) -> int:
    return pycasync.main(list(args))


def test_cli_commands(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    store = f"s3+{moto_server.endpoint}/{bucket}/cli?lookup=path"
    index = f"s3+{moto_server.endpoint}/{bucket}/cli-indexes/blob.caibx?lookup=path"
    local_index = str(tmp_path / "blob.caibx")
    assert _cli("make", "-s", store, "-m", "4096:16384:65536", local_index, blob_file) == 0
    assert _cli("make", "-s", store, "-m", "4096:16384:65536", index, blob_file) == 0
    assert _cli("extract", "-s", store, "-c", str(tmp_path / "cache"), index, str(tmp_path / "out")) == 0
    assert _read(str(tmp_path / "out")) == _read(blob_file)
    assert _cli("info", "-s", store, index) == 0
    assert _cli("verify", "-s", store) == 0
    extra = chunk(60)
    S3Store(store).put_raw(extra[0], extra[2])
    assert _cli("prune", "-y", "-s", store, index) == 0
    assert not S3Store(store).has_chunk(extra[0])
    for cid, _data, blob in (chunk(61), chunk(62)):
        put(moto_server, bucket, f"cli/{cid.hex()}", blob)
    assert _cli("upgrade-s3", "-s", store) == 0
    assert S3Store(store).has_chunk(chunk(61)[0]) and not any(
        re.fullmatch(r"cli/[0-9a-f]{64}", k) for k in keys(moto_server, bucket)
    )
    nobucket = f"s3+{moto_server.endpoint}/no-such-bucket-x"
    assert _cli("extract", "-e", "0", "-s", nobucket, index, str(tmp_path / "o2")) != 0


def test_s3_as_cache(moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any) -> None:
    """An S3 store as the cache (-c): filled on the first extract, the only source on the second."""
    import shutil

    remote_dir = str(tmp_path / "remote")
    index = str(tmp_path / "c.caibx")
    make(index, blob_file, LocalStore(remote_dir, sync=False), params=SMALL)
    cache = S3Store(f"s3+{moto_server.endpoint}/{bucket}/as-cache-{uuid.uuid4().hex[:6]}")
    with open_index(index) as idx:
        extract(idx, str(tmp_path / "out1"), CachedStore(LocalStore(remote_dir), cache), concurrency=4)
        cached, held = set(cache.iter_chunk_ids()), set(LocalStore(remote_dir).iter_chunk_ids())
        assert cached <= held and len(cached) >= len(held) - 1  # all but the all-zero chunk (a hole)
        shutil.rmtree(remote_dir)
        extract(idx, str(tmp_path / "out2"), CachedStore(LocalStore(remote_dir), cache), concurrency=4)
    assert _read(str(tmp_path / "out1")) == _read(str(tmp_path / "out2")) == _read(blob_file)


def test_check_names_a_missing_bucket(
    moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any
) -> None:
    S3Store(f"s3+{moto_server.endpoint}/{bucket}/any/prefix").check()  # the bucket exists: no error
    missing = f"s3+{moto_server.endpoint}/no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match=r"bucket no-such-bucket-\w+ does not exist"):
        S3Store(missing).check()
    index = str(tmp_path / "c.caibx")
    assert _cli("make", index, blob_file) == 0
    assert _cli("info", "-s", missing, index) == 1  # a report on a missing bucket is an error, not "0 chunks"


def test_verbose_cli_logs_no_secrets(
    moto_server: MotoServer, bucket: str, blob_file: str, tmp_path: Any
) -> None:
    """--verbose shows pycasync's debug lines, never the key, secret or session token of a request."""
    import subprocess

    store = f"s3+{moto_server.endpoint}/{bucket}/verbose"
    secret, token = "Sec" + uuid.uuid4().hex, "Tok" + uuid.uuid4().hex
    env = dict(os.environ, S3_ACCESS_KEY="AKIAVERBOSETEST", S3_SECRET_KEY=secret, S3_SESSION_TOKEN=token,
               HOME=str(tmp_path))
    cli = CLI
    for args in (["make", "-s", store, str(tmp_path / "v.caibx"), blob_file],
                 ["info", "-s", store, str(tmp_path / "v.caibx")]):
        proc = subprocess.run([sys.executable, cli, "-v", *args], env=env, capture_output=True, timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert b"DEBUG" in proc.stderr or b"INFO" in proc.stderr  # verbose is on
        for leak in (secret, token, "AKIAVERBOSETEST", "Signature="):
            assert leak.encode() not in proc.stderr, leak


# --- credentials ----------------------------------------------------------------------------------


class AuthServer:
    """A moto server that checks signatures, two IAM users' keys and a bucket."""

    def __init__(self, server: MotoServer) -> None:
        self.server = server
        self.bucket = "pycasync-auth"
        make_bucket(server.endpoint, self.bucket)
        (self.key_a, self.secret_a), (self.key_b, self.secret_b) = enable_auth(server, 2)
        # moto's signature check fails on a "/" in the list prefix: use the bucket root.
        self.location = f"s3+{server.endpoint}/{self.bucket}"
        self.host = server.endpoint  # the s3-credentials key: scheme://host:port


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    server = start_moto(str(tmp_path_factory.mktemp("moto-auth")))
    try:
        yield AuthServer(server)
    finally:
        server.stop()


def _config(tmp_path: Any, creds: dict[str, dict[str, str]]) -> Any:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"s3-credentials": creds}))
    return load_config(str(path))


def _profile(name: str, key: str, secret: str) -> str:
    return f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n\n"


def _works(store: S3Store) -> bool:
    cid, _data, blob = chunk(99)
    try:
        store.put_raw(cid, blob)
        return store.get_raw(cid) == blob and cid in set(store.iter_chunk_ids())
    except StoreError as exc:
        assert "access denied" in str(exc) and str(store) in str(exc)
        return False


def _store(auth: AuthServer, config: Any = None) -> S3Store:
    options = config.store_options_for(auth.location).replace(error_retry=0) if config else FAST
    return S3Store(auth.location, options)


def test_credentials_environment_over_config(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _config(tmp_path, {auth.host: {"access-key": auth.key_b, "secret-key": auth.secret_b}})
    bad = _config(tmp_path, {auth.host: {"access-key": auth.key_b, "secret-key": "wrong"}})
    monkeypatch.setenv("S3_ACCESS_KEY", auth.key_a)
    monkeypatch.setenv("S3_SECRET_KEY", auth.secret_a)
    store = _store(auth, bad)
    assert _works(store) and store.credentials_source == "environment S3_ACCESS_KEY"
    monkeypatch.setenv("S3_SECRET_KEY", "wrong")
    assert not _works(_store(auth, good)), "the environment must win over the config"
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", auth.key_a)  # desync also takes AWS_* before the config
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", auth.secret_a)
    store = _store(auth, bad)
    assert _works(store) and store.credentials_source == "environment AWS_ACCESS_KEY_ID"


def test_credentials_session_token_and_region(auth: AuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3_SESSION_TOKEN", "the-token")
    monkeypatch.setenv("S3_REGION", "eu-west-3")
    store = _store(auth)
    resolved = store._s3.client._request_signer._credentials.get_frozen_credentials()
    assert (resolved.access_key, resolved.token) == (TEST_KEY, "the-token")
    assert store._s3.client.meta.region_name == "eu-west-3"


@pytest.mark.parametrize("key", ["exact", "http://127.0.0.1:*", "http://*"])
def test_credentials_from_config(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    entry_key = auth.host if key == "exact" else key
    others = {"https://127.0.0.1:1": {"access-key": "other", "secret-key": "other"}}
    config = _config(tmp_path, {entry_key: {"access-key": auth.key_b, "secret-key": auth.secret_b,
                                            "aws-region": "ap-south-1"}, **others})  # fmt: skip
    store = _store(auth, config)
    assert _works(store) and store.credentials_source == "config access-key"
    assert store._s3.client.meta.region_name == "ap-south-1"
    wrong = _config(tmp_path, {entry_key: {"access-key": auth.key_b, "secret-key": "s3cr3t-wrong"}})
    with pytest.raises(StoreError) as exc:
        _store(auth, wrong).put_raw(*chunk(98)[::2])
    assert "access denied" in str(exc.value) and "s3cr3t-wrong" not in str(exc.value)
    options = wrong.store_options_for(auth.location)
    assert "s3cr3t-wrong" not in repr(options) and "s3cr3t-wrong" not in repr(options.s3_credentials)


def test_credentials_file_and_profile(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    creds = tmp_path / "aws-credentials"
    creds.write_text(_profile("default", auth.key_a, "wrong") + _profile("second", auth.key_b, auth.secret_b))
    entry = {"aws-credentials-file": str(creds), "aws-profile": "second"}
    store = _store(auth, _config(tmp_path, {auth.host: entry}))
    assert _works(store) and store.credentials_source == "config aws-credentials-file, profile second"
    assert not _works(_store(auth, _config(tmp_path, {auth.host: {"aws-credentials-file": str(creds)}})))
    with pytest.raises(StoreError, match="has no profile 'third'") as exc:
        _store(auth, _config(tmp_path, {auth.host: {**entry, "aws-profile": "third"}}))
    assert auth.secret_b not in str(exc.value)
    with pytest.raises(StoreError, match="cannot read AWS credentials file"):
        _store(auth, _config(tmp_path, {auth.host: {"aws-credentials-file": str(tmp_path / "nope")}}))


def test_credentials_aws_chain_and_anonymous(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    creds = tmp_path / "chain-credentials"
    creds.write_text(_profile("default", auth.key_a, auth.secret_a))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    config = _config(tmp_path, {"http://elsewhere:1": {"access-key": "x", "secret-key": "y"}})
    store = _store(auth, config)
    assert _works(store) and store.credentials_source == "AWS default credential chain"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = _store(auth, config)
    assert store.credentials_source.startswith("none found") and not _works(store)


def test_credentials_cli(
    auth: AuthServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, blob_file: str
) -> None:
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    conf = tmp_path / "conf.json"
    conf.write_text(json.dumps({"s3-credentials": {"http://127.0.0.1:*": {
        "access-key": auth.key_a, "secret-key": auth.secret_a}}}))  # fmt: skip
    index = str(tmp_path / "b.caibx")
    assert _cli("--config", str(conf), "make", "-s", auth.location, index, blob_file) == 0
    out = str(tmp_path / "out")
    assert _cli("--config", str(conf), "extract", "-s", auth.location, index, out) == 0
    assert _read(out) == _read(blob_file)
    conf.write_text(json.dumps({"s3-credentials": {"http://127.0.0.1:*": {
        "access-key": auth.key_a, "secret-key": "nope"}}}))  # fmt: skip
    assert _cli("--config", str(conf), "extract", "-e", "0", "-s", auth.location, index, out + "2") != 0



# --- the fast path: SigV4 signing, fallback to boto3 ------------------------------------------------

_KEY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_AWKWARD = st.one_of(_KEY_TEXT, st.lists(st.sampled_from(
    [*" +%~!*'()&=:@,$;[]^`{}|\\\"<>#?/.ä€\t", "a/../b", "//", "%41", "%2F", "../"]), min_size=1,
    max_size=12).map("".join))  # fmt: skip


@given(key=_AWKWARD, method=st.sampled_from(["GET", "HEAD", "PUT"]), body=st.binary(max_size=64),
       token=st.sampled_from([None, "", "FwoGZXIvYXdzE+/tok=="]),
       region=st.sampled_from(["us-east-1", "eu-west-3", "ap-southeast-2"]),
       host=st.sampled_from(["127.0.0.1:9000", "bucket.s3.example.com", "[::1]:8080"]),
       when=st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2099, 12, 31)))  # fmt: skip
def test_sigv4_matches_botocore(
    key: str, method: str, body: bytes, token: str | None, region: str, host: str, when: datetime.datetime
) -> None:
    """Our signature of a request is botocore's S3SigV4Auth signature of the same request, to the byte."""
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.config import Config
    from botocore.credentials import Credentials

    from casync_store.stores import _sigv4

    when = when.replace(microsecond=0)
    path = "/bucket/" + _sigv4.quote_key("pre fix/" + key)
    put = method == "PUT"
    headers = {"Content-Type": "application/octet-stream"} if put else {}
    payload = _sigv4.payload_hash(body) if put else _sigv4.UNSIGNED_PAYLOAD
    ours = _sigv4.sign(method, host, path, headers, payload, ("AKIDEXAMPLE", "se/cr+et", token), region,
                       now=when)  # fmt: skip
    request = AWSRequest(method=method, url=f"https://{host}{path}", data=body if put else None,
                         headers=dict(headers))  # fmt: skip
    request.context["client_config"] = Config(s3={"payload_signing_enabled": put})
    signer = botocore.auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "se/cr+et", token), "s3", region)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    assert ours["Authorization"] == request.headers["Authorization"]
    for name in ("X-Amz-Date", "X-Amz-Content-SHA256", "X-Amz-Security-Token"):
        assert ours.get(name) == request.headers.get(name)


def test_fast_path_signs_for_real(
    auth: AuthServer, monkeypatch: pytest.MonkeyPatch, fast_sends: list[tuple[str, str, dict[str, str]]]
) -> None:
    """Against a server that checks signatures, chunks go through the fast path only, with awkward
    prefixes too; a wrong secret is refused there; refreshed credentials are used at once."""
    from botocore.credentials import RefreshableCredentials

    monkeypatch.setenv("S3_ACCESS_KEY", auth.key_a)
    monkeypatch.setenv("S3_SECRET_KEY", auth.secret_a)
    # moto's own check refuses botocore's signatures too for most other reserved characters and non-ASCII
    # (test_sigv4_matches_botocore covers those): spaces, "~" and an empty segment pass it.
    prefix = urllib.parse.quote("we ird~pre fix/sub dir//x")
    for location in (auth.location, f"{auth.location}/{prefix}?lookup=path"):
        store = S3Store(location, FAST)
        boto, before = boto_object_calls(store), len(fast_sends)
        cid, _data, blob = chunk(101)
        assert not store.has_chunk(cid)
        store.put_raw(cid, blob)
        assert store.has_chunk(cid) and store.get_raw(cid) == blob
        with pytest.raises(ChunkMissing):
            store.get_raw(chunk(102)[0])
        assert len(fast_sends) - before == 5 and boto == []
    assert all(h["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=") for _m, _u, h in fast_sends)
    monkeypatch.setenv("S3_SECRET_KEY", "wrong-secret")
    store = S3Store(auth.location, FAST)
    boto = boto_object_calls(store)
    for call in (lambda: store.get_raw(cid), lambda: store.has_chunk(cid), lambda: store.put_raw(cid, blob)):
        with pytest.raises(StoreError) as exc:
            call()
        assert "access denied" in str(exc.value) and "wrong-secret" not in str(exc.value)
    assert boto == []
    keys = {"secret": "wrong-secret"}  # refreshable credentials, asked again for every request

    def refresh() -> dict[str, Any]:  # expiring within botocore's mandatory refresh time: asked every time
        soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
        return {"access_key": auth.key_a, "secret_key": keys["secret"], "token": None,
                "expiry_time": soon.isoformat()}  # fmt: skip

    store._s3.fast._credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    with pytest.raises(StoreError, match="access denied"):
        store.get_raw(cid)
    keys["secret"] = auth.secret_a
    assert store.get_raw(cid) == blob and boto == []


def test_fast_path_falls_back_to_boto3(
    monkeypatch: pytest.MonkeyPatch, fast_sends: list[tuple[str, str, dict[str, str]]]
) -> None:
    """Answers the fast path does not handle go to boto3: a redirect or 400 (wrong region or endpoint)
    for good, any other status for that request only; anonymous requests carry no signature."""
    from tests.support.faulty_http import FaultyServer, Status

    cid, _data, blob = chunk(110)
    path = f"/bkt/p/{cid.hex()[:4]}/{cid.hex()}.cacnk"
    moved = b"<Error><Code>PermanentRedirect</Code><Endpoint>elsewhere</Endpoint></Error>"
    region = b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-3</Region></Error>"

    def by_boto(server: FaultyServer) -> int:
        return sum("Botocore/" in r.headers.get("User-Agent", "") for r in server.requests if r.path == path)

    with FaultyServer() as server:
        server.chunks[path] = blob
        for status in (Status(409, b"<Error><Code>OperationAborted</Code></Error>"), Status(307)):
            store = S3Store(f"s3+{server.url}/bkt/p", FAST)
            server.plan(path, status)
            assert store.get_raw(cid) == blob and store._s3.fast is not None
            assert store.get_raw(cid) == blob
        assert by_boto(server) == 2 and len(fast_sends) == 4
        for status in (Status(301, moved), Status(400, region)):
            store = S3Store(f"s3+{server.url}/bkt/p", FAST)
            server.plan(path, status)
            assert store.get_raw(cid) == blob and store._s3.fast is None
            assert store.has_chunk(cid) and store.get_raw(cid) == blob
        assert by_boto(server) == 2 + 6 and len(fast_sends) == 6
        store = S3Store(f"s3+{server.url}/bkt/p", FAST)
        server.plan(path, Status(400, region))
        store.put_raw(cid, blob[::-1])  # PUT falls back too
        assert server.chunks[path] == blob[::-1] and store._s3.fast is None and by_boto(server) == 9
        monkeypatch.delenv("S3_ACCESS_KEY")
        monkeypatch.delenv("S3_SECRET_KEY")
        store = S3Store(f"s3+{server.url}/bkt/p", FAST)
        assert store.credentials_source.startswith("none found") and store.get_raw(cid) == blob[::-1]
        assert "Authorization" not in server.requests[-1].headers and by_boto(server) == 9


# --- "no such object" is a typed signal -------------------------------------------------------------


def test_missing_object_is_no_such_object_and_stray_key_errors_stay(
    moto_server: MotoServer, bucket: str
) -> None:
    store = S3Store(f"s3+{moto_server.endpoint}/{bucket}", FAST)
    cid, _data, blob = chunk(31)
    key = store.chunk_key(cid)
    for fast in (True, False):  # the fast path's 404 and boto3's NoSuchKey alike
        if not fast:
            store._s3.fast = None
        with pytest.raises(_s3client.NoSuchObject) as exc:
            store._s3.read(key, 1 << 20, "chunk")
        assert exc.value.key == key and not isinstance(exc.value, KeyError)
        with pytest.raises(ChunkMissing):
            store.get_raw(cid)
        assert not store.has_chunk(cid)
    store.put_raw(cid, blob)
    # A KeyError that is not S3's "no such object" (here: an answer without a body) is not a missing chunk.
    answer = {"ContentLength": 1}
    with mock.patch.object(store._s3.client, "get_object", return_value=answer), pytest.raises(KeyError):
        store.get_raw(cid)
    stray = KeyError("stray")
    with mock.patch.object(store._s3.client, "head_object", side_effect=stray), pytest.raises(KeyError):
        store.has_chunk(cid)
    index_store = S3IndexStore(f"s3+{moto_server.endpoint}/{bucket}", FAST)
    with mock.patch.object(index_store._s3.client, "get_object", side_effect=stray), pytest.raises(KeyError):
        index_store.open_index("a.caibx")
    with pytest.raises(IndexNotFound):
        index_store.open_index("a.caibx")
    store.close()
    index_store.close()


def test_s3client_does_not_import_s3() -> None:
    import ast

    assert _s3client.__file__ is not None
    with open(_s3client.__file__) as f:
        tree = ast.parse(f.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.add("." * node.level + (node.module or ""))
            imported.update("." * node.level + alias.name for alias in node.names if not node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert not imported & {".s3", "casync_store.stores.s3", "casync_store.s3"}, imported
