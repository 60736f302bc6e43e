"""S3 chunk and index stores against a real S3 API server (moto, in a subprocess on 127.0.0.1).

Covers location parsing (hypothesis), the desync layout with and without a
prefix (foreign keys ignored and kept), missing chunks and buckets, oversized
objects, an unreachable endpoint, a missing boto3, retries of throttling,
5xx and short bodies (on a fault-injecting server), the three bucket lookup
styles (proven from moto's request log: virtual-host requests go through moto
as an HTTP proxy, since ``bucket.localhost`` does not resolve here), streamed
pagination with small pages, batched prune, upgrade from the old flat layout,
the index store (single PUT and multipart), and "no such object" as a typed
signal. Operations through the library and the command line are in
``test_s3_operations.py``; credentials and the SigV4 fast path in
``test_s3_credentials.py``.
"""

from __future__ import annotations

import io
import os
import re
import sys
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, IndexNotFound, MissingDependency, ParameterError, StoreError
from casync_store.plumbing.config import StoreOptions
from casync_store.stores import _s3client
from casync_store.stores import s3 as s3mod
from casync_store.stores.indexstore import open_index_store, split_index_location
from casync_store.stores.location import open_store
from casync_store.stores.s3 import S3IndexStore, S3Store, parse_s3_location, upgrade_s3
from tests.support.moto import MotoServer, client
from tests.support.s3_helpers import FAST, boto_object_calls, chunk, keys, put

pytestmark = pytest.mark.usefixtures("s3_env")  # no AWS settings of the machine (tests/stores/conftest.py)


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


def test_encrypted_store(moto_server: MotoServer, bucket: str) -> None:
    key = "6368616e676520746869732070617373776f726420746f206120736563726574"
    options = FAST.replace(encryption=True, encryption_key=key)
    store = open_store(f"s3+{moto_server.endpoint}/{bucket}/enc", options, writable=True)
    plain = open_store(f"s3+{moto_server.endpoint}/{bucket}/enc", FAST, writable=True)
    assert isinstance(store, S3Store) and store.cipher is not None
    chunks = [chunk(i) for i in range(3)]
    for cid, _data, blob in chunks:
        store.put_raw(cid, blob)
    names = {f"enc/{c[0].hex()[:4]}/{c[0].hex()}.cacnk{store.cipher.suffix}" for c in chunks}
    assert names <= set(keys(moto_server, bucket)) and list(plain.iter_chunk_ids()) == []
    for cid, data, blob in chunks:
        assert store.get_raw(cid) == blob and store.get_chunk(cid, SHA512_256, size=len(data)) == data
    obj = client(moto_server.endpoint).get_object(Bucket=bucket, Key=sorted(names)[0])["Body"].read()
    assert store.cipher.decrypt(obj, b"") in {c[2] for c in chunks}
    assert sorted(store.iter_chunk_ids()) == sorted(c[0] for c in chunks)
    with pytest.raises(StoreError, match="encrypted"):
        upgrade_s3(store)
    assert store.prune({chunks[0][0]}) == 2 and list(store.iter_chunk_ids()) == [chunks[0][0]]
    store.close()
    plain.close()
