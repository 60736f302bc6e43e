"""The Location value (plumbing.locparse): parsed once, shown only redacted."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import SHA512_256, Digest
from casync_format.errors import ParameterError, StoreError
from casync_store.plumbing.locparse import MASK
from casync_store.serve.chunkserver import ChunkServer
from casync_store.stores.backends import BACKENDS, FAILOVER, load_factory
from casync_store.stores.indexstore import (
    LocalIndexStore,
    is_remote_location,
    open_index_store,
    split_index_location,
)
from casync_store.stores.layout import (
    CHUNK_SUFFIX,
    chunk_dir,
    chunk_file,
    chunk_path,
    is_chunk_dir,
    parse_chunk_file,
    parse_chunk_path,
)
from casync_store.stores.local import LocalStore
from casync_store.stores.location import Location, redact, split_location

SCHEMES = ["http", "https", "ssh", "sftp", "s3+http", "s3+https", "file"]


@pytest.mark.parametrize(
    ("text", "scheme", "user", "password", "host", "port", "path"),
    [
        ("/srv/store", "", None, None, "", None, "/srv/store"),
        ("C:/x", "", None, None, "", None, "C:/x"),
        ("name:x", "", None, None, "", None, "name:x"),
        ("HTTP://H:8080/a%20b", "http", None, None, "h", 8080, "/a%20b"),
        ("https://u:p@h/s", "https", "u", "p", "h", None, "/s"),
        ("sftp://bob@[::1]:2222/srv", "sftp", "bob", None, "::1", 2222, "/srv"),
        ("s3+https://host/bucket/pre?lookup=path", "s3+https", None, None, "host", None, "/bucket/pre"),
        ("file:///srv/idx", "file", None, None, "", None, "/srv/idx"),
    ],
)
def test_parse(
    text: str, scheme: str, user: str | None, password: str | None, host: str, port: int | None, path: str
) -> None:
    loc = Location.parse(text)
    assert (loc.text, loc.scheme, loc.user, loc.password, loc.host, loc.port, loc.path) == (
        text, scheme, user, password, host, port, path,
    )
    assert loc.port_valid and loc.is_url is (scheme != "") and loc.is_remote is (scheme not in ("", "file"))


def test_bad_port_is_flagged_not_raised() -> None:
    loc = Location.parse("http://h:99999/x")
    assert loc.port is None and not loc.port_valid


def test_malformed_url_is_a_parameter_error_without_the_password() -> None:
    with pytest.raises(ParameterError, match="invalid location") as exc:
        Location.parse("http://me:hunter2@[::1/x")
    assert "hunter2" not in str(exc.value) and f"me:{MASK}@" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://alice:s3cr3t@h/store", "http://alice:***@h/store"),
        ("https://TOKEN@h/x", "https://***@h/x"),  # a lone user name is the HTTP credential
        ("sftp://bob@h/x", "sftp://bob@h/x"),  # a login name
        ("ssh://bob:pw@h/x", "ssh://bob:***@h/x"),
        ("http://u:p@ss@h/x", "http://u:***@h/x"),  # an unencoded "@" in the password
        ("http://u:p?ss@h/x", "http://u:***@h/x"),  # masked generously: the "?" is no end here
        ("http://u:a@h/s|https://v:b@h2/t", "http://u:***@h/s|https://v:***@h2/t"),
        ("/srv/u:secret@x", "/srv/u:secret@x"),  # a path is shown as it is
        ("http?://u:p@h/*", "http?://u:***@h/*"),  # a glob pattern in store-options
        ("https://h/x", "https://h/x"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact(shown) == shown  # idempotent


def test_str_and_repr_are_redacted() -> None:
    loc = Location.parse("https://u:hunter2@h/x")
    assert "hunter2" not in str(loc) and "hunter2" not in repr(loc)
    assert str(loc) == loc.redacted() == "https://u:***@h/x"


def test_parse_is_shared() -> None:
    assert Location.parse("https://h/shared") is Location.parse("https://h/shared")


# --------------------------------------------------------------------------- properties

_SAFE = "abcdefghijklmnopqrstuvwxyz0123456789-._"
WORD = st.text(alphabet=_SAFE, min_size=1, max_size=12)
# Passwords use letters no other part uses, so "not in the output" means something.
PASSWORD = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ!$&'()*+,;=%@:?#", min_size=1, max_size=16).map(
    lambda s: "PW" + s
)
PATH = st.lists(WORD, max_size=4).map(lambda parts: "/" + "/".join(parts))


@given(st.sampled_from(SCHEMES), WORD, PASSWORD, WORD, st.none() | st.integers(1, 65535), PATH)
def test_redacted_never_shows_the_password(
    scheme: str, user: str, password: str, host: str, port: int | None, path: str
) -> None:
    text = f"{scheme}://{user}:{password}@{host}{'' if port is None else f':{port}'}{path}"
    shown = redact(text)
    assert "PW" not in shown and shown.startswith(f"{scheme}://{user}:{MASK}@")
    # a password that the parser sees whole (nothing in it ends the netloc) round-trips
    if not any(c in password for c in "/?#"):
        loc = Location.parse(text)
        got = (loc.scheme, loc.user, loc.password, loc.host, loc.port)
        assert got == (scheme, user, password, host, port)
        assert loc.path == path and shown == f"{scheme}://{user}:{MASK}@{loc.hostport}{path}"


@given(st.sampled_from(SCHEMES), PASSWORD, PASSWORD)
def test_redacted_groups_hide_every_password(scheme: str, first: str, second: str) -> None:
    text = f"{scheme}://a:{first.replace('/', '')}@h/x|{scheme}://b:{second.replace('/', '')}@h2/y"
    assert "PW" not in redact(text)


@given(st.text(max_size=40))
def test_parse_keeps_the_text_and_agrees_with_the_old_rules(text: str) -> None:
    try:
        loc = Location.parse(text)
    except ParameterError:
        return
    assert loc.text == text
    # The detection every module used to write for itself: urlsplit's scheme, 2+ characters, then "://".
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    old = scheme if len(scheme) > 1 and text[len(scheme) : len(scheme) + 3] == "://" else ""
    assert loc.scheme == old
    assert split_location(text) == (old, text[len(old) + 3 :] if old else text)
    assert is_remote_location(text) is (old not in ("", "file"))
    if "@" not in text:
        assert redact(text) == text


@given(st.text(max_size=40))
def test_redact_never_raises_and_is_idempotent(text: str) -> None:
    assert redact(redact(text)) == redact(text)


@given(WORD, PASSWORD.map(lambda p: "".join(c for c in p if c not in "/?#@")), WORD)
def test_index_location_split_keeps_credentials_for_the_store(user: str, password: str, name: str) -> None:
    base, got = split_index_location(f"https://{user}:{password}@h/dir/{name}.caibx")
    assert (base, got) == (f"https://{user}:{password}@h/dir", f"{name}.caibx")


# --------------------------------------------------------------------------- the one backend table


@pytest.mark.parametrize("scheme", sorted(BACKENDS))
def test_every_backend_factory_exists(scheme: str) -> None:
    backend = BACKENDS[scheme]
    for target in (backend.store, backend.index):
        if target is not None:
            try:
                assert callable(load_factory(target, scheme))
            except ImportError as exc:  # an optional dependency (paramiko, boto3) is missing
                pytest.skip(str(exc))
    assert (backend.index is None) == (scheme in ("ssh", FAILOVER))


# --------------------------------------------------------------------------- the chunk layout


@given(st.binary(min_size=32, max_size=32), st.sampled_from([CHUNK_SUFFIX, ""]))
def test_chunk_layout_round_trips(chunk_id: bytes, suffix: str) -> None:
    path = chunk_path(chunk_id, suffix)
    assert path == f"{chunk_id.hex()[:4]}/{chunk_id.hex()}{suffix}"
    assert path == f"{chunk_dir(chunk_id)}/{chunk_file(chunk_id, suffix)}"
    assert is_chunk_dir(chunk_dir(chunk_id))
    assert parse_chunk_path(path, suffix) == chunk_id
    assert parse_chunk_path("x/" + path, suffix, start=2) == chunk_id
    assert parse_chunk_file(chunk_file(chunk_id, suffix), chunk_dir(chunk_id), suffix) == chunk_id
    other = CHUNK_SUFFIX if suffix == "" else ""
    assert parse_chunk_path(path + other + "x", suffix) is None
    if path.upper() != path:
        assert parse_chunk_path(path.upper(), suffix) is None
    wrong_dir = "%04x" % ((int(chunk_dir(chunk_id), 16) + 1) % 0x10000)
    assert parse_chunk_path(wrong_dir + path[4:], suffix) is None
    assert parse_chunk_file(chunk_file(chunk_id, suffix), wrong_dir, suffix) is None
    assert parse_chunk_file(chunk_file(chunk_id, suffix) + "\n", None, suffix) is None


@pytest.mark.parametrize("name", ["README", "abc", "ABCD", "abcde", "abc\n", ""])
def test_chunk_dirs_are_four_lowercase_hex_digits(name: str) -> None:
    assert not is_chunk_dir(name)


# --------------------------------------------------------------------------- serving as the store chooses


class _ServingStore(LocalStore):
    """A store that opts in to doing more for a server (as CachedStore does)."""

    served: list[tuple[bytes, bool]]

    def serve_raw(
        self, chunk_id: bytes, digest: Digest, max_size: int = CA_CHUNK_SIZE_LIMIT_MAX, verify: bool = False
    ) -> bytes:
        self.served.append((chunk_id, verify))
        return super().serve_raw(chunk_id, digest, max_size, verify)


@pytest.mark.parametrize("verify", [False, True])
def test_chunk_server_reads_through_serve_raw(tmp_path: os.PathLike[str], verify: bool) -> None:
    store = _ServingStore(str(tmp_path))
    store.served = []
    data = b"served " * 100
    cid = SHA512_256(data)
    store.store_chunk(cid, data)
    with ChunkServer(store, verify=verify) as server:
        host, port = server.addresses[0]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        with contextlib.closing(conn):
            conn.request("GET", "/" + chunk_path(cid))
            response = conn.getresponse()
            assert response.status == 200 and chunk_codec.decode(response.read(), cid, SHA512_256) == data
    assert store.served == [(cid, verify)]


def test_open_index_store_must_exist(tmp_path: os.PathLike[str]) -> None:
    missing = os.path.join(tmp_path, "nope")
    with pytest.raises(StoreError, match=f"^index store {re.escape(missing)} is not a directory$"):
        open_index_store(missing, must_exist=True)
    with open_index_store(str(tmp_path), must_exist=True) as store, open_index_store(missing) as lazy:
        assert isinstance(store, LocalIndexStore) and isinstance(lazy, LocalIndexStore)
