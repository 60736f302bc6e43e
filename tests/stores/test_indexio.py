"""Tests for index locations in operations (stores.indexio): local, stdin/stdout, file:// and remote.

Remote indexes go through a real index server on 127.0.0.1 (writable, over a
local index store) and the HTTP index store client: ``make`` writes its
index there, ``extract`` reads it back, ``tar -i`` (directory and tar stream)
writes caidx files there, and failures leave nothing behind. SFTP and S3
index locations are covered by tests/stores/test_sftp.py and tests/stores/test_s3.py
through the same functions.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
import urllib.parse
from collections.abc import Iterator

import pytest

from casync_format.chunker import ChunkerParams
from casync_format.digest import SHA512_256
from casync_format.errors import FormatError, IndexNotFound, ParameterError, StoreError
from casync_format.index import IndexHeader
from casync_store import LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.make import blob_index_header, make
from casync_store.ops.tar import tar_index
from casync_store.ops.tarstream import tar_index_from_tarstream
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.plumbing.config import StoreOptions
from casync_store.serve.indexserver import IndexServer
from casync_store.stores import backends, indexio
from casync_store.stores.indexio import display_location, index_writer, open_index, write_index_file
from casync_store.stores.indexstore import IndexStore, LocalIndexStore
from tests.support import rng_bytes

PARAMS = ChunkerParams.from_string("4:16:64")
FAST = StoreOptions(timeout=10.0, error_retry=2, error_retry_base_interval=0.001)
HEADER = blob_index_header(PARAMS, SHA512_256)


def options_for(location: str) -> StoreOptions:
    return FAST


class Remote:
    """A writable index server over a local directory."""

    def __init__(self, root: str, authorization: str | None = None) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.server = IndexServer(LocalIndexStore(root), writable=True, authorization=authorization)
        host, port = self.server.start()[0]
        self.base = f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base}/{urllib.parse.quote(name)}"

    def files(self) -> list[str]:
        return sorted(os.listdir(self.root))


@pytest.fixture
def remote(tmp_path: str) -> Iterator[Remote]:
    r = Remote(os.path.join(tmp_path, "served"))
    yield r
    r.server.shutdown(grace=5)


@pytest.fixture
def blob(tmp_path: str) -> str:
    path = os.path.join(tmp_path, "blob")
    with open(path, "wb") as f:
        f.write(rng_bytes(700_000, seed=21))
    return path


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------- make/extract via a remote index


def test_make_to_remote_index_and_extract_from_it(remote: Remote, blob: str, tmp_path: str) -> None:
    store = LocalStore(os.path.join(tmp_path, "store"), sync=False)
    location = remote.url("blob x.caibx")
    stats = make(location, blob, store, params=PARAMS, options_for=options_for)
    local_index = os.path.join(tmp_path, "local.caibx")
    make(local_index, blob, None, params=PARAMS)
    assert remote.files() == ["blob x.caibx"]
    assert read(os.path.join(remote.root, "blob x.caibx")) == read(local_index)
    out = os.path.join(tmp_path, "out")
    with open_index(location, options_for=options_for) as index:
        assert len(index) == stats.chunks_total and index.blob_size == os.path.getsize(blob)
        extract(index, out, store)
    assert read(out) == read(blob)


def test_open_index_without_options_for(remote: Remote, blob: str) -> None:
    make(remote.url("b.caibx"), blob, None, params=PARAMS)
    with open_index(remote.url("b.caibx")) as index:
        assert index.blob_size == os.path.getsize(blob)


def test_remote_index_larger_than_the_memory_spool(
    remote: Remote, blob: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexio, "_SPOOL", 1024)  # the index spills to a temporary file on both sides
    make(remote.url("b.caibx"), blob, None, params=PARAMS, options_for=options_for)
    with open_index(remote.url("b.caibx"), options_for=options_for) as index:
        assert index.blob_size == os.path.getsize(blob) and len(index) > 30


def test_options_for_gets_the_index_store_location(tmp_path: str, blob: str) -> None:
    token = "Basic " + base64.b64encode(b"me:pw").decode()
    remote = Remote(os.path.join(tmp_path, "auth"), authorization=token)
    try:
        seen: list[str] = []

        def with_auth(location: str) -> StoreOptions:
            seen.append(location)
            return FAST.replace(http_auth=token)

        make(remote.url("a.caibx"), blob, None, params=PARAMS, options_for=with_auth)
        with open_index(remote.url("a.caibx"), options_for=with_auth) as index:
            assert index.blob_size == os.path.getsize(blob)
        assert seen == [remote.base + "/"] * 2
        with pytest.raises(StoreError, match="access denied"):
            make(remote.url("b.caibx"), blob, None, params=PARAMS, options_for=options_for)
        # credentials in the URL become Basic authorization and never appear in messages
        secret_url = remote.base.replace("http://", "http://me:pw@") + "/missing.caibx"
        with pytest.raises(IndexNotFound) as err, open_index(secret_url, options_for=options_for):
            pass
        shown = remote.base.replace("http://", "http://me:***@")
        assert str(err.value) == f"index {shown}/missing.caibx does not exist"
    finally:
        remote.server.shutdown(grace=5)


# --------------------------------------------------------------------------- errors name the location


def test_missing_remote_index_names_the_location(remote: Remote) -> None:
    location = remote.url("none.caibx")
    opened = open_index(location, options_for=options_for)
    with pytest.raises(IndexNotFound, match="does not exist") as err, opened:
        pass
    assert remote.url("none.caibx") in str(err.value)


def test_damaged_remote_index_is_a_format_error_naming_it(remote: Remote) -> None:
    with open(os.path.join(remote.root, "bad.caibx"), "wb") as f:
        f.write(b"\0" * 200)
    with pytest.raises(FormatError) as err, open_index(remote.url("bad.caibx"), options_for=options_for):
        pass
    assert str(err.value).startswith(remote.url("bad.caibx") + ": ")


def test_unreachable_index_store_is_a_store_error() -> None:
    from tests.support import free_port

    location = f"http://127.0.0.1:{free_port()}/x.caibx"
    with pytest.raises(StoreError, match="refused"), open_index(location, options_for=options_for):
        pass


def test_display_location_hides_credentials() -> None:
    assert display_location("https://u:secret@h/x.caibx") == "https://u:***@h/x.caibx"
    assert display_location("local/u:secret@x.caibx") == "local/u:secret@x.caibx"
    assert display_location("-") == "-"


# --------------------------------------------------------------------------- writing: nothing unless complete


def test_failure_in_the_block_uploads_nothing(remote: Remote) -> None:
    location = remote.url("x.caibx")
    with pytest.raises(RuntimeError, match="boom"), index_writer(location, HEADER, options_for) as w:
        w.add(b"\1" * 32, 20_000)
        raise RuntimeError("boom")
    assert remote.files() == []


def test_make_failure_leaves_no_remote_index(remote: Remote, tmp_path: str) -> None:
    with pytest.raises(OSError):
        make(remote.url("x.caibx"), os.path.join(tmp_path, "no-such-input"), None, params=PARAMS)
    assert remote.files() == []


def test_bad_location_fails_before_the_work(tmp_path: str) -> None:
    for location in ("http://127.0.0.1:1/", "http://127.0.0.1:1/%2e%2e"):
        with pytest.raises(ParameterError, match="index"), index_writer(location, HEADER):
            pytest.fail("the block must not run")
    with pytest.raises(StoreError, match="ssh://"), index_writer("ssh://host/dir/x.caibx", HEADER):
        pytest.fail("the block must not run")


class _ReadOnly(IndexStore):
    def open_index(self, name: str) -> io.BytesIO:
        raise IndexNotFound(name)

    def __str__(self) -> str:
        return "ro://somewhere"


def _read_only(location: str, options: StoreOptions) -> _ReadOnly:
    return _ReadOnly()


def test_read_only_index_store_is_refused_before_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.BACKENDS, "ro", backends.Backend(index=f"{__name__}:_read_only"))
    with pytest.raises(StoreError, match="read-only"), index_writer("ro://somewhere/x.caibx", HEADER):
        pytest.fail("the block must not run")


def test_write_index_file_remote(remote: Remote) -> None:
    chunks = [(bytes([i]) * 32, 20_000 + i) for i in range(5)]
    assert write_index_file(remote.url("w.caibx"), HEADER, chunks, options_for) == sum(s for _, s in chunks)
    with open_index(remote.url("w.caibx")) as index:
        assert [(c.id, c.size) for c in index] == chunks


# --------------------------------------------------------------------------- local, file://, stdin, stdout


def test_local_paths_are_unchanged(tmp_path: str, blob: str) -> None:
    index = os.path.join(tmp_path, "sub dir", "x.caibx")
    os.mkdir(os.path.dirname(index))
    make(index, blob, None, params=PARAMS, options_for=options_for)
    assert not any(n.startswith(TEMP_PREFIX) for n in os.listdir(os.path.dirname(index)))
    with open_index(index) as ix:
        assert ix.blob_size == os.path.getsize(blob)
    with pytest.raises(ParameterError, match="same file"):
        make(blob, blob, None, params=PARAMS)
    with pytest.raises(FileNotFoundError), open_index(os.path.join(tmp_path, "none.caibx")):
        pass
    with open(os.path.join(tmp_path, "bad.caibx"), "wb") as f:
        f.write(b"junk")
    with pytest.raises(FormatError, match=r"bad\.caibx: "), open_index(os.path.join(tmp_path, "bad.caibx")):
        pass


def test_file_urls(tmp_path: str, blob: str) -> None:
    url = "file://" + urllib.parse.quote(os.path.join(tmp_path, "f x.caibx"))
    make(url, blob, None, params=PARAMS)
    assert os.path.isfile(os.path.join(tmp_path, "f x.caibx"))
    with open_index(url) as index:
        assert index.blob_size == os.path.getsize(blob)
    with pytest.raises(IndexNotFound), open_index("file://" + os.path.join(tmp_path, "none.caibx")):
        pass


def test_stdin_and_stdout(monkeypatch: pytest.MonkeyPatch, blob: str, tmp_path: str) -> None:
    out = io.BytesIO()
    monkeypatch.setattr(indexio, "_stdout", lambda: out)
    make("-", blob, None, params=PARAMS)
    local = os.path.join(tmp_path, "l.caibx")
    make(local, blob, None, params=PARAMS)
    assert out.getvalue() == read(local)
    monkeypatch.setattr(indexio, "_stdin", lambda: io.BytesIO(out.getvalue()))
    with open_index("-") as index:
        assert index.blob_size == os.path.getsize(blob)
    monkeypatch.setattr(indexio, "_stdin", lambda: io.BytesIO(b"junk"))
    with pytest.raises(FormatError, match="index on stdin"), open_index("-"):
        pass


# --------------------------------------------------------------------------- tar -i to a remote index


@pytest.fixture
def tree(tmp_path: str) -> str:
    root = os.path.join(tmp_path, "tree")
    os.makedirs(os.path.join(root, "sub"))
    for i, size in enumerate((0, 100, 200_000)):
        with open(os.path.join(root, "sub" if i else "", f"f{i}"), "wb") as f:
            f.write(rng_bytes(size, seed=i))
        os.utime(os.path.join(root, "sub" if i else "", f"f{i}"), (1_600_000_000, 1_600_000_000))
    for d in (os.path.join(root, "sub"), root):
        os.utime(d, (1_600_000_000, 1_600_000_000))
    return root


def test_tar_index_to_remote(remote: Remote, tree: str, tmp_path: str) -> None:
    store = LocalStore(os.path.join(tmp_path, "store"), sync=False)
    local = os.path.join(tmp_path, "t.caidx")
    tar_index(tree, local, store, params=PARAMS)
    tar_index(tree, remote.url("t.caidx"), store, params=PARAMS, options_for=options_for)
    assert read(os.path.join(remote.root, "t.caidx")) == read(local)


def test_tar_stream_index_to_remote(remote: Remote, tree: str, tmp_path: str) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(tree, arcname=".")
    store = LocalStore(os.path.join(tmp_path, "store"), sync=False)
    local = os.path.join(tmp_path, "s.caidx")
    archive.seek(0)
    tar_index_from_tarstream(archive, local, store, params=PARAMS)
    archive.seek(0)
    tar_index_from_tarstream(archive, remote.url("s.caidx"), store, params=PARAMS, options_for=options_for)
    assert read(os.path.join(remote.root, "s.caidx")) == read(local)
    with pytest.raises(FormatError):  # a broken stream: no index anywhere
        tar_index_from_tarstream(io.BytesIO(b"x" * 1024), remote.url("broken.caidx"), store, params=PARAMS)
    assert remote.files() == ["s.caidx"]


def test_index_header_is_checked_before_upload(remote: Remote) -> None:
    bad = IndexHeader(HEADER.feature_flags, 0, 0, 0)
    with pytest.raises((FormatError, ParameterError)), index_writer(remote.url("h.caibx"), bad, options_for):
        pass
    assert remote.files() == []
