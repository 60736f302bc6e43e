"""The HTTP(S) store client's happy path against pycasync's own chunk server.

Runs :class:`casync_store.serve.chunkserver.ChunkServer` over HTTP and HTTPS
(certificates made by ``openssl``, :mod:`tests.support.certs`): round trips,
a read-only and an uncompressed server, make and extract through a chain of
chunk servers, parallel gets, server certificates trusted or not, mutual TLS,
bad TLS files, the server's authorization, store options from the config
file, desync's default timeout, and HTTP and CONNECT proxies from the
environment (the proxy is a :mod:`tests.support.faulty_http` server).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from casync_format import chunk as chunk_codec
from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, ParameterError, StoreError
from casync_store import CachedStore, LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.make import make
from casync_store.pipeline import ZeroChunk
from casync_store.plumbing.config import StoreOptions, load_config
from casync_store.serve.chunkserver import ChunkServer
from casync_store.serve.httpserver import TLSOptions
from casync_store.stores.base import Store
from casync_store.stores.http import HTTPStore, open_http
from casync_store.stores.indexio import open_index
from casync_store.stores.location import open_store
from tests.support import rng_bytes
from tests.support.certs import Certs
from tests.support.faulty_http import FaultyServer
from tests.support.http_store import chunk_path, make_chunk, options

SMALL = ChunkerParams.from_string("16:64:256")


# --------------------------------------------------------------------------- against the chunk server


@contextlib.contextmanager
def chunk_server(store: Store, **kw: Any) -> Iterator[str]:
    """A running ChunkServer for ``store``; yields its base URL."""
    tls = kw.get("tls")
    with ChunkServer(store, ["127.0.0.1:0"], **kw) as srv:
        port = srv.addresses[0][1]
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}/"


@pytest.fixture
def backing(tmp_path: Path) -> LocalStore:
    return LocalStore(str(tmp_path / "served"), sync=False)


def test_round_trip_through_chunk_server(backing: LocalStore) -> None:
    cid, data, blob = make_chunk(20)
    with chunk_server(backing, writable=True) as url, open_http(url, options()) as store:
        assert not store.has_chunk(cid)
        with pytest.raises(ChunkMissing):
            store.get_chunk(cid, SHA512_256)
        store.put_raw(cid, blob)
        assert backing.get_raw(cid) == blob
        assert store.has_chunk(cid) and store.get_raw(cid) == blob
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        other, odata, _ = make_chunk(21)
        store.store_chunk(other, odata)
        assert backing.get_chunk(other, SHA512_256) == odata
        with pytest.raises(StoreError, match="HTTP 400"):  # the server checks the body against the id
            store.put_raw(make_chunk(22)[0], blob)


def test_read_only_chunk_server_refuses_put(backing: LocalStore) -> None:
    cid, _, blob = make_chunk(23)
    with chunk_server(backing) as url, open_http(url, options(error_retry=3)) as store:
        with pytest.raises(StoreError) as exc:
            store.put_raw(cid, blob)
        assert url in str(exc.value) and "HTTP 4" in str(exc.value)
    assert not backing.has_chunk(cid)


def test_uncompressed_chunk_server(backing: LocalStore) -> None:
    cid, data, blob = make_chunk(24)
    with chunk_server(backing, writable=True, uncompressed=True) as url, \
            open_http(url, options(uncompressed=True)) as store:
        store.put_raw(cid, blob)
        assert backing.get_chunk(cid, SHA512_256) == data
        assert store.has_chunk(cid)
        assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert chunk_codec.decode(store.get_raw(cid), cid, SHA512_256) == data


def test_make_and_extract_through_http(backing: LocalStore, tmp_path: Path) -> None:
    """make into an HTTP store; extract through a proxy chain into a cache at the client."""
    source = tmp_path / "source"
    source.write_bytes(rng_bytes(600_000, 5) + bytes(200_000) + rng_bytes(300_000, 6))
    index_path = str(tmp_path / "blob.caibx")
    with chunk_server(backing, writable=True) as url, open_http(url, options()) as remote:
        make(index_path, str(source), remote, params=SMALL, concurrency=4)
        with open_index(index_path) as index:
            ids = {item.id for item in index}
        assert all(backing.has_chunk(cid) for cid in ids)
        # A second chunk server proxies the first: client -> proxy -> server -> directory.
        with chunk_server(remote) as proxy_url, open_http(proxy_url, options()) as proxy:
            cache = LocalStore(str(tmp_path / "cache"), sync=False)
            out = str(tmp_path / "out")
            with open_index(index_path) as index:
                extract(index, out, CachedStore(proxy, cache), concurrency=8)
            assert Path(out).read_bytes() == source.read_bytes()
            assert set(cache.iter_chunk_ids()) >= ids - {zero_chunk_id(index_path)}


def zero_chunk_id(index_path: str) -> bytes:
    with open_index(index_path) as index:
        return ZeroChunk(index).id


def test_parallel_gets(backing: LocalStore) -> None:
    chunks = [make_chunk(200 + i, 20_000) for i in range(64)]
    for cid, _, blob in chunks:
        backing.put_raw(cid, blob)
    errors: list[BaseException] = []
    with chunk_server(backing) as url, open_http(url, options(concurrency=6)) as store:

        def work(k: int) -> None:
            try:
                for cid, data, _ in chunks[k::16] * 3:
                    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors


# --------------------------------------------------------------------------- TLS


def tls_server(
    backing: LocalStore, certs: Certs, mutual: bool = False
) -> contextlib.AbstractContextManager[str]:
    tls = TLSOptions(certs.server_cert, certs.server_key, client_ca=certs.ca_cert if mutual else None,
                     mutual=mutual)
    return chunk_server(backing, tls=tls)


@pytest.fixture
def planted(backing: LocalStore) -> tuple[bytes, bytes, bytes]:
    cid, data, blob = make_chunk(30)
    backing.put_raw(cid, blob)
    return cid, data, blob


def test_https_with_ca_cert(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with tls_server(backing, certs) as url:
        assert url.startswith("https://")
        for location in (url, url.replace("127.0.0.1", "localhost")):
            with open_http(location, options(ca_cert=certs.ca_cert)) as store:
                assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)


def test_https_trust_insecure(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    with tls_server(backing, certs) as url, open_http(url, options(trust_insecure=True)) as store:
        assert store.get_chunk(planted[0], SHA512_256) == planted[1]


@pytest.mark.parametrize("ca", ["system", "other"])
def test_https_untrusted_server_refused_at_once(
    backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes], ca: str
) -> None:
    ca_cert = certs.other_ca_cert if ca == "other" else ""
    with tls_server(backing, certs) as url:
        store = open_http(url, options(ca_cert=ca_cert, error_retry=3, error_retry_base_interval=2))
        with store:
            start = time.monotonic()
            with pytest.raises(StoreError) as exc:
                store.get_raw(planted[0])
            assert time.monotonic() - start < 1.5  # a certificate problem is not retried
        assert "TLS error" in str(exc.value) and url in str(exc.value)
        assert "server certificate not trusted" in str(exc.value)


def test_mutual_tls(backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with tls_server(backing, certs, mutual=True) as url:
        good = options(ca_cert=certs.ca_cert, client_cert=certs.client_cert, client_key=certs.client_key)
        with open_http(url, good) as store:
            assert store.get_chunk(cid, SHA512_256) == data
        other = good.replace(client_cert=certs.other_client_cert, client_key=certs.other_client_key)
        for opts in (options(ca_cert=certs.ca_cert), other):
            with open_http(url, opts.replace(error_retry=2)) as store, pytest.raises(StoreError) as exc:
                store.get_raw(cid)
            assert url in str(exc.value)


def test_bad_tls_files(tmp_path: Path, certs: Certs) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(StoreError, match=r"missing\.pem"):
        HTTPStore("https://127.0.0.1/", options(ca_cert=missing))
    with pytest.raises(StoreError, match=r"missing\.pem"):
        HTTPStore("https://127.0.0.1/", options(client_cert=missing, client_key=certs.client_key))
    with pytest.raises(ParameterError, match="client-cert"):
        HTTPStore("https://127.0.0.1/", options(client_key=certs.client_key))
    HTTPStore("http://127.0.0.1/", options(ca_cert=missing)).close()  # TLS options do not apply to http


# --------------------------------------------------------------------------- authorization and config


def test_authorization(backing: LocalStore, planted: tuple[bytes, bytes, bytes]) -> None:
    cid, data, _ = planted
    with chunk_server(backing, authorization="Bearer right") as url:
        with open_http(url, options(http_auth="Bearer right")) as store:
            assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)
        for auth in ("Bearer wrong", ""):
            with open_http(url, options(http_auth=auth, error_retry=5)) as store:
                for call in (store.get_raw, store.has_chunk):
                    with pytest.raises(StoreError) as exc:
                        call(cid)
                    assert "HTTP 401" in str(exc.value) and url in str(exc.value)
                    assert "wrong" not in str(exc.value)


def test_config_store_options_reach_the_store(
    backing: LocalStore, planted: tuple[bytes, bytes, bytes], tmp_path: Path
) -> None:
    cid, data, _ = planted
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({
        "store-options": {
            "http://127.0.0.1:*/": {"http-auth": "Bearer from-config", "timeout": "7s", "error-retry": 2,
                                    "error-retry-base-interval": 1000000, "uncompressed": False},
            "/some/local/path": {"skip-verify": True},
        }
    }))
    config = load_config(str(config_path))
    with chunk_server(backing, authorization="Bearer from-config") as url:
        opts = config.store_options_for(url)
        with open_http(url, opts) as store:
            assert store.timeout == 7 and store.attempts == 2 and store.retry_interval == 0.001
            assert store.get_chunk(cid, SHA512_256) == data
        with open_store(url, options_for=config.store_options_for) as store:
            assert isinstance(store, HTTPStore) and store.get_chunk(cid, SHA512_256) == data
        with open_http(url, config.store_options_for("/some/local/path")) as store, \
                pytest.raises(StoreError, match="HTTP 401"):
            store.get_raw(cid)


def test_default_timeout_like_desync() -> None:
    for value, expected in ((None, 60.0), (0.0, 60.0), (2.5, 2.5), (-1.0, None)):
        with HTTPStore("http://127.0.0.1/", StoreOptions(timeout=value)) as store:
            assert store.timeout == expected


# --------------------------------------------------------------------------- proxies


@pytest.fixture
def proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def test_http_proxy_from_environment(server: FaultyServer, proxy_env: pytest.MonkeyPatch) -> None:
    cid, data, blob = make_chunk(40)
    proxy_env.setenv("http_proxy", f"http://pu:pp@127.0.0.1:{server.port}")
    target = "http://chunks.example:8080/base"
    server.chunks[target + chunk_path(cid, "/")] = blob
    with open_http(target, options()) as store:
        assert store.get_chunk(cid, SHA512_256) == data
    request = server.requests[0]
    assert request.path == target + chunk_path(cid, "/") and request.headers["Host"] == "chunks.example:8080"
    assert request.headers["Proxy-Authorization"] == "Basic cHU6cHA="  # pu:pp
    with FaultyServer() as direct, open_http(direct.url, options()) as store:  # loopback: never proxied
        assert not store.has_chunk(cid)
        assert direct.count() == 1 and server.count() == 1
    proxy_env.setenv("no_proxy", "chunks.example")
    assert HTTPStore(target).proxy is None
    proxy_env.setenv("http_proxy", "socks5://127.0.0.1:1080")
    with pytest.raises(ParameterError, match="http_proxy"):
        HTTPStore("http://other.example/")


def test_https_through_connect_proxy(
    backing: LocalStore, certs: Certs, planted: tuple[bytes, bytes, bytes], server: FaultyServer,
    proxy_env: pytest.MonkeyPatch,
) -> None:
    cid, data, _ = planted
    proxy_env.setenv("https_proxy", f"http://127.0.0.1:{server.port}")
    with tls_server(backing, certs) as url:
        port = int(url.rstrip("/").rpartition(":")[2])
        # The proxy connects any host to 127.0.0.1; the name is not in the certificate, hence -t.
        with open_http(f"https://chunks.example:{port}/", options(trust_insecure=True)) as store:
            assert store.get_chunk(cid, SHA512_256) == data and store.has_chunk(cid)
    assert [r.method for r in server.requests] == ["CONNECT"]
    assert server.requests[0].path == f"chunks.example:{port}"
