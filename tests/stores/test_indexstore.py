"""Tests for index stores (stores.indexstore) and the HTTP index store (stores.http).

The name and location rules are checked with examples and hypothesis; the
local store on real directories; :class:`HTTPIndexStore` against a real
plain HTTP server that serves and stores files by path (tests/support/faulty_http.py,
a chunk-server-style web server that can also misbehave on request).
"""

from __future__ import annotations

import io
import logging
import os
import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format.errors import IndexNotFound, ParameterError, StoreError
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.http import HTTPIndexStore, open_http_index_store
from casync_store.stores.indexstore import (
    LocalIndexStore,
    copy_exactly,
    copy_stream,
    is_remote_location,
    open_index_store,
    split_index_location,
    valid_index_name,
)
from tests.support import free_port, rng_bytes
from tests.support.faulty_http import FaultyServer, Short, Status

FAST = StoreOptions(timeout=5.0, error_retry=3, error_retry_base_interval=0.001)
NAME = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(valid_index_name)


# --------------------------------------------------------------------------- names and locations


@pytest.mark.parametrize("name", ["a.caibx", "blob with space.caidx", "ünï.caibx", "..x", "x..", "-", ".h"])
def test_valid_index_names(name: str) -> None:
    assert valid_index_name(name)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\\b", "/x", "a\0b", "a\nb", "a\x7fb", "x" * 256])
def test_invalid_index_names(name: str) -> None:
    assert not valid_index_name(name)


@given(st.text(max_size=60))
def test_valid_names_never_leave_a_directory(name: str) -> None:
    if valid_index_name(name):
        assert os.path.basename(name) == name and name not in (".", "..")
        assert not any(c in name for c in "/\\\0")


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("blob.caibx", (".", "blob.caibx")),
        ("dir/sub/blob.caibx", ("dir/sub", "blob.caibx")),
        ("/abs/blob.caibx", ("/abs", "blob.caibx")),
        ("file:///srv/idx/b.caibx", ("file:///srv/idx", "b.caibx")),
        ("http://h:8080/idx/b%20c.caibx", ("http://h:8080/idx", "b c.caibx")),
        ("https://u:p@h/b.caibx", ("https://u:p@h/", "b.caibx")),
        ("s3+http://h:9/bucket/pre/x.caibx?lookup=path", ("s3+http://h:9/bucket/pre?lookup=path", "x.caibx")),
        ("sftp://user@h:2222/srv/x.caidx", ("sftp://user@h:2222/srv", "x.caidx")),
    ],
)
def test_split_index_location(location: str, expected: tuple[str, str]) -> None:
    assert split_index_location(location) == expected


@pytest.mark.parametrize("location", ["http://h/idx/", "http://h", "dir/", "http://h/a%2fb", "http://h/%2e%2e"])
def test_split_index_location_refuses_no_or_bad_names(location: str) -> None:
    with pytest.raises(ParameterError, match="index"):
        split_index_location(location)


@given(NAME)
def test_split_round_trips_quoted_names(name: str) -> None:
    base, got = split_index_location("https://host/some/dir/" + urllib.parse.quote(name, safe=""))
    assert (base, got) == ("https://host/some/dir", name)


@pytest.mark.parametrize(
    ("location", "remote"),
    [("x.caibx", False), ("-", False), ("/a/b", False), ("file:///a/b", False), ("c:x", False),
     ("http://h/x", True), ("HTTPS://h/x", True), ("sftp://h/x", True), ("s3+https://h/b/x", True)],
)
def test_is_remote_location(location: str, remote: bool) -> None:
    assert is_remote_location(location) is remote


def test_open_index_store_dispatches_by_scheme(tmp_path: str) -> None:
    with open_index_store(str(tmp_path)) as local:
        assert isinstance(local, LocalIndexStore)
    with open_index_store("http://127.0.0.1:1/idx", lambda loc: FAST) as remote:
        assert isinstance(remote, HTTPIndexStore) and str(remote) == "http://127.0.0.1:1/idx"
    with pytest.raises(StoreError, match="sftp://"):
        open_index_store("ssh://host/path")
    with pytest.raises(StoreError, match="gopher"):
        open_index_store("gopher://host/path")


def test_options_for_gets_the_store_location() -> None:
    seen: list[str] = []

    def options_for(location: str) -> StoreOptions:
        seen.append(location)
        return FAST.replace(http_auth="Bearer x")

    with open_index_store("https://127.0.0.1:1/idx", options_for) as store:
        assert isinstance(store, HTTPIndexStore) and store.options.http_auth == "Bearer x"
    assert seen == ["https://127.0.0.1:1/idx"]


# --------------------------------------------------------------------------- local index store


def temp_files(directory: str) -> list[str]:
    return [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]


def test_local_store_round_trip_is_atomic(tmp_path: str) -> None:
    store = LocalIndexStore(str(tmp_path))
    assert not store.has_index("a.caibx")
    with pytest.raises(IndexNotFound, match=r"a\.caibx"):
        store.open_index("a.caibx")
    store.put_index("a.caibx", io.BytesIO(b"first" * 1000), 5000)
    store.put_index("a.caibx", io.BytesIO(b"second!"), 7)
    with store.open_index("a.caibx") as f:
        assert f.read() == b"second!"
    assert store.has_index("a.caibx") and temp_files(str(tmp_path)) == []


def test_local_store_short_source_stores_nothing(tmp_path: str) -> None:
    store = LocalIndexStore(str(tmp_path))
    with pytest.raises(StoreError, match="ended after 3 of 10 bytes"):
        store.put_index("a.caibx", io.BytesIO(b"abc"), 10)
    assert os.listdir(tmp_path) == []


def test_local_store_follows_links_and_refuses_bad_names(tmp_path: str) -> None:
    outside = os.path.join(tmp_path, "secret")
    with open(outside, "wb") as f:
        f.write(b"secret")
    root = os.path.join(tmp_path, "root")
    os.mkdir(root)
    with open(os.path.join(root, "v3.caibx"), "wb") as f:
        f.write(b"version 3")
    os.symlink("v3.caibx", os.path.join(root, "latest.caibx"))  # the owner's link, as desync follows
    os.symlink("gone.caibx", os.path.join(root, "dangling.caibx"))
    store = LocalIndexStore(root)
    with store.open_index("latest.caibx") as f:
        assert f.read() == b"version 3"
    with pytest.raises(IndexNotFound):
        store.open_index("dangling.caibx")
    store.put_index("latest.caibx", io.BytesIO(b"version 4"), 9)  # replaces the link, not its target
    assert not os.path.islink(os.path.join(root, "latest.caibx"))
    with open(os.path.join(root, "v3.caibx"), "rb") as f:
        assert f.read() == b"version 3"
    for bad in ("../secret", "..", "a/b", "a\\b", "a\0b"):
        with pytest.raises(ParameterError, match="invalid index name"):
            store.open_index(bad)
        with pytest.raises(ParameterError):
            store.put_index(bad, io.BytesIO(b"x"), 1)
    with open(outside, "rb") as f:
        assert f.read() == b"secret"


def test_local_store_refuses_directories_and_fifos(tmp_path: str) -> None:
    os.mkdir(os.path.join(tmp_path, "dir.caibx"))
    os.mkfifo(os.path.join(tmp_path, "fifo.caibx"))
    store = LocalIndexStore(str(tmp_path))
    before = len(os.listdir("/proc/self/fd"))
    for name in ("dir.caibx", "fifo.caibx"):  # a fifo must not hang the open
        with pytest.raises(StoreError, match="not a regular file"):
            store.open_index(name)
    assert len(os.listdir("/proc/self/fd")) == before  # no descriptor leaked


def test_copy_helpers() -> None:
    out = io.BytesIO()
    assert copy_stream(io.BytesIO(b"x" * 3_000_000), out) == 3_000_000
    out = io.BytesIO()
    assert copy_exactly(io.BytesIO(b"abcdef"), out, 4) == 4 and out.getvalue() == b"abcd"


# --------------------------------------------------------------------------- HTTP index store


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    with FaultyServer() as srv:
        yield srv


def http_store(server: FaultyServer, path: str = "/idx", **changes: object) -> HTTPIndexStore:
    return open_http_index_store(server.url + path, FAST.replace(**changes))


def test_http_get_streams_the_index(server: FaultyServer) -> None:
    data = rng_bytes(3 * 1024 * 1024 + 17, seed=3)
    server.chunks["/idx/big%20one.caibx"] = data
    with http_store(server) as store:
        stream = store.open_index("big one.caibx")
        assert not isinstance(stream, bytes)
        with stream:
            first = stream.read(10)
            rest = stream.read()
        assert first + rest == data
        # the connection went back to the pool and is reused
        with store.open_index("big one.caibx") as again:
            assert again.read() == data
    assert len({r.client for r in server.requests}) == 1


def test_http_missing_index_is_index_not_found(server: FaultyServer) -> None:
    with http_store(server) as store:
        with pytest.raises(IndexNotFound, match=r"x\.caibx"):
            store.open_index("x.caibx")
        assert not store.has_index("x.caibx")
    assert [r.method for r in server.requests] == ["GET", "HEAD"]


def test_http_head_and_put_streamed(server: FaultyServer) -> None:
    data = rng_bytes(2 * 1024 * 1024, seed=4)
    with http_store(server) as store:
        store.put_index("ü.caibx", io.BytesIO(data), len(data))
        assert store.has_index("ü.caibx")
    put = server.requests[0]
    assert put.method == "PUT" and put.path == "/idx/%C3%BC.caibx"
    assert put.headers["Content-Length"] == str(len(data)) and put.body == data
    assert "Transfer-Encoding" not in put.headers


def test_http_put_sends_exactly_size_bytes_and_refuses_short_sources(server: FaultyServer) -> None:
    with http_store(server) as store:
        store.put_index("a.caibx", io.BytesIO(b"0123456789"), 4)
        with pytest.raises(StoreError, match="ended after 3 of 8 bytes"):
            store.put_index("b.caibx", io.BytesIO(b"abc"), 8)
    assert server.chunks["/idx/a.caibx"] == b"0123"
    # The connection was closed mid-body: a server checking Content-Length stores nothing
    # (test_indexserver checks ours); this lenient test server keeps what it got.


def test_http_retries_5xx_and_rewinds_the_upload(server: FaultyServer) -> None:
    server.chunks["/idx/a.caibx"] = b"content"
    server.plan(None, Status(500), Status(503))
    with http_store(server) as store, store.open_index("a.caibx") as f:
        assert f.read() == b"content"
    source = io.BytesIO(b"xxPAYLOAD")
    source.seek(2)
    server.plan(None, Status(502))
    with http_store(server) as store:
        store.put_index("b.caibx", source, 7)
    assert server.chunks["/idx/b.caibx"] == b"PAYLOAD"
    assert server.count("PUT") == 2


class _Pipe(io.RawIOBase):
    """A stream that cannot seek back (like stdin)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


def test_http_non_seekable_upload_is_not_resent(server: FaultyServer) -> None:
    server.plan(None, Status(503))
    with http_store(server) as store, pytest.raises(StoreError, match="cannot be read again"):
        store.put_index("b.caibx", _Pipe(b"payload"), 7)  # type: ignore[arg-type]
    assert server.count("PUT") == 1


def test_http_gives_up_after_error_retry_attempts(server: FaultyServer) -> None:
    server.plan(None, Status(500, b"backend down"), Status(500), Status(500))
    with http_store(server) as store, pytest.raises(StoreError) as err:
        store.open_index("a.caibx")
    message = str(err.value)
    assert "index store" in message and "GET index a.caibx" in message and "gave up after 3" in message
    assert "\n" not in message


def test_http_short_body_is_an_error_not_an_index(server: FaultyServer) -> None:
    server.plan(None, Short(b"abc", 100))
    with http_store(server) as store, store.open_index("a.caibx") as f, pytest.raises(StoreError) as err:
        f.read()
    assert "3 of 100 bytes" in str(err.value)


@pytest.mark.parametrize("code", [401, 403])
def test_http_access_denied_is_one_line_without_secrets(
    server: FaultyServer, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="casync_store.stores.http")
    server.plan(None, Status(code), Status(code), Status(code))
    location = f"http://us%40er:pa55w0rd@127.0.0.1:{server.port}/idx"
    with open_http_index_store(location, FAST.replace(http_cookie="c=C00KIE")) as store:
        assert "pa55w0rd" not in str(store) and "pa55w0rd" not in repr(store)
        for call in (store.open_index, store.has_index):
            with pytest.raises(StoreError, match="access denied") as err:
                call("a.caibx")
            assert "pa55w0rd" not in str(err.value) and "C00KIE" not in str(err.value)
        with pytest.raises(StoreError, match="access denied"):
            store.put_index("a.caibx", io.BytesIO(b"x"), 1)
    assert server.requests[0].headers["Authorization"] == "Basic dXNAZXI6cGE1NXcwcmQ="
    assert "pa55w0rd" not in caplog.text and "C00KIE" not in caplog.text


def test_http_unreachable_and_bad_locations() -> None:
    with open_http_index_store(f"http://127.0.0.1:{free_port()}/idx", FAST) as store, \
            pytest.raises(StoreError, match="refused"):
        store.open_index("a.caibx")
    with pytest.raises(ParameterError):
        open_http_index_store("http:///nohost", FAST)
    with open_http_index_store("http://127.0.0.1:1/idx", FAST) as store, \
            pytest.raises(ParameterError, match="invalid index name"):
        store.open_index("../a.caibx")


def test_http_stream_closed_early_releases_its_connection(server: FaultyServer) -> None:
    server.chunks["/idx/a.caibx"] = rng_bytes(1 << 20, seed=1)
    with http_store(server, concurrency=1) as store:
        for _ in range(3):  # one connection slot: a leaked connection would block here
            with store.open_index("a.caibx") as f:
                f.read(100)
        assert store.has_index("a.caibx")
