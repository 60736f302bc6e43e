"""The Store contract: one suite of reading, writing, listing and pruning rules for every store.

Each entry of :data:`FACTORIES` builds a :class:`Harness`: the store under
test and a ``backing`` WriteStore through which the test plants chunks where
that store will find them (for a wrapper, in the store it reads through; for
a network store, the local directory its test server serves: ``http`` is an
HTTPStore in front of a real ChunkServer). A factory is called with the test's
temp directory and its ``request`` (for session fixtures such as a test server:
``request.getfixturevalue(name)``). To bring a new backend under the contract,
add a factory; tests that need a capability (WriteStore,
PruneStore) skip stores that lack it. LocalStore's own rules are in
``test_store_local.py``, the router's and cache's in ``test_store_router_cache.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Callable

import pytest

from casync_format import compress
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing
from casync_store import CachedStore, LocalStore, StoreRouter
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.stores.base import PruneStore, Store, WriteStore
from tests.support.chunks import make_chunk, random_chunk


class Harness:
    """A store under test, the store that backs it, and the directories involved."""

    def __init__(
        self, store: Store, backing: WriteStore, dirs: list[str], names: list[str] | None = None
    ) -> None:
        self.store = store
        self.backing = backing
        self.dirs = dirs
        #: what ``str(store)`` must mention (default: the directories)
        self.names = dirs if names is None else names
        #: called after the store is closed (servers to stop)
        self.teardown: list[Callable[[], object]] = []

    def plant(self, cid: bytes, blob: bytes) -> None:
        """Make the store find ``blob`` under ``cid``."""
        self.backing.put_raw(cid, blob)

    def leftovers(self) -> list[str]:
        """Temporary files left in the backing directories."""
        return [
            os.path.join(top, name)
            for d in self.dirs
            for top, _dirs, names in os.walk(d)
            for name in names
            if name.startswith(TEMP_PREFIX)
        ]


def _local(tmp: str, request: pytest.FixtureRequest) -> Harness:
    store = LocalStore(os.path.join(tmp, "local"), sync=False)
    return Harness(store, store, [store.path])


def _router(tmp: str, request: pytest.FixtureRequest) -> Harness:
    a = LocalStore(os.path.join(tmp, "a"), sync=False)
    b = LocalStore(os.path.join(tmp, "b"), sync=False)
    return Harness(StoreRouter([a, b]), b, [a.path, b.path])  # found in b: a says ChunkMissing


def _cached(tmp: str, request: pytest.FixtureRequest) -> Harness:
    remote = LocalStore(os.path.join(tmp, "remote"), sync=False)
    cache = LocalStore(os.path.join(tmp, "cache"), sync=False)
    return Harness(CachedStore(remote, cache), remote, [remote.path, cache.path])


def _http(tmp: str, request: pytest.FixtureRequest) -> Harness:
    from casync_store.serve.chunkserver import ChunkServer
    from casync_store.stores.http import HTTPStore

    backing = LocalStore(os.path.join(tmp, "served"), sync=False)
    server = ChunkServer(backing, ["127.0.0.1:0"], writable=True)
    server.start()
    host, port = server.addresses[0]
    url = f"http://{host}:{port}/"
    h = Harness(HTTPStore(url), backing, [backing.path], names=[url.rstrip("/")])
    h.teardown.append(server.shutdown)
    return h


def _failover(tmp: str, request: pytest.FixtureRequest) -> Harness:
    from casync_store.stores.failover import FailoverGroup

    a = LocalStore(os.path.join(tmp, "first"), sync=False)
    b = LocalStore(os.path.join(tmp, "second"), sync=False)
    h = Harness(FailoverGroup([a, b]), a, [a.path, b.path])
    # Planted in both members: after a failure the group stays on the next member (desync's rule).
    h.plant = lambda cid, blob: (a.put_raw(cid, blob), b.put_raw(cid, blob))  # type: ignore[method-assign]
    return h


def _sftp(tmp: str, request: pytest.FixtureRequest) -> Harness:
    from casync_store.stores.sftp import SFTPStore
    from tests.support.sshd import require_paramiko

    server = request.getfixturevalue("sshd")  # the session's real OpenSSH server
    require_paramiko()
    backing = LocalStore(os.path.join(tmp, "sftp"), sync=False)  # the server's files are on this machine
    url = f"sftp://{server.alias}{backing.path}"
    return Harness(SFTPStore(url, ssh_config=server.client_config), backing, [backing.path], names=[url])


def _s3(tmp: str, request: pytest.FixtureRequest) -> Harness:
    from casync_store.plumbing.config import S3Credentials, StoreOptions
    from casync_store.stores.s3 import S3Store
    from tests.support.moto import TEST_KEY, TEST_SECRET, make_bucket, shared_moto

    server = shared_moto()  # one moto server per test process (no fixture needed here)
    bucket = "contract-" + os.urandom(6).hex()
    make_bucket(server.endpoint, bucket)
    url = f"s3+{server.endpoint}/{bucket}/store"
    # moto's in-memory objects race when one key is overwritten concurrently ("I/O operation on
    # closed file", HTTP 500): more retries than the default let the client ride that out.
    options = StoreOptions(s3_credentials=S3Credentials(access_key=TEST_KEY, secret_key=TEST_SECRET),
                           error_retry=10)
    backing = S3Store(url, options)  # a second client on the same bucket plants the chunks
    h = Harness(S3Store(url, options), backing, [], names=[url])
    h.teardown.append(backing.close)
    return h


FACTORIES: dict[str, Callable[[str, pytest.FixtureRequest], Harness]] = {
    "local": _local,
    "router": _router,
    "cached": _cached,
    "http": _http,
    "failover": _failover,
    "sftp": _sftp,
    "s3": _s3,
}


@pytest.fixture(params=sorted(FACTORIES))
def harness(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Harness]:
    h = FACTORIES[request.param](str(tmp_path), request)
    yield h
    h.store.close()
    for stop in h.teardown:
        stop()


def writable(h: Harness) -> WriteStore:
    if not isinstance(h.store, WriteStore):
        pytest.skip(f"{type(h.store).__name__} is read-only")
    return h.store


def prunable(h: Harness) -> PruneStore:
    if not isinstance(h.store, PruneStore):
        pytest.skip(f"{type(h.store).__name__} cannot list and remove chunks")
    return h.store


def assert_names(err: ChunkMissing | ChunkInvalid, cid: bytes, store: Store) -> None:
    """The error names the chunk and (a member of) the store."""
    assert err.chunk_id == cid and cid.hex() in str(err)
    assert err.store is not None and str(err.store) and str(err.store) in str(store)
    assert str(err.store) in str(err)


# --- reading --------------------------------------------------------------------------------------


def test_missing_chunk(harness: Harness) -> None:
    cid = SHA512_256(b"never stored")
    assert not harness.store.has_chunk(cid)
    for call in (lambda: harness.store.get_raw(cid), lambda: harness.store.get_chunk(cid, SHA512_256)):
        with pytest.raises(ChunkMissing) as exc:
            call()
        assert_names(exc.value, cid, harness.store)


def test_planted_chunk_reads_back(harness: Harness) -> None:
    cid, data, blob = make_chunk(1)
    harness.plant(cid, blob)
    assert harness.store.has_chunk(cid)
    assert harness.store.get_raw(cid) == blob
    assert harness.store.get_chunk(cid, SHA512_256) == data
    assert harness.store.get_chunk(cid, SHA512_256, size=len(data)) == data
    assert harness.store.get_chunk(cid, SHA512_256, max_size=len(data)) == data


@pytest.mark.parametrize("damage", ["wrong content", "garbage", "truncated", "size"])
def test_get_chunk_verifies(harness: Harness, damage: str) -> None:
    cid, data, blob = make_chunk(2)
    other = make_chunk(3)[2]
    bad = {"wrong content": other, "garbage": b"garbage!", "truncated": blob[: len(blob) // 2], "size": blob}
    harness.plant(cid, bad[damage])
    size = len(data) + 1 if damage == "size" else len(data)
    with pytest.raises(ChunkInvalid) as exc:
        harness.store.get_chunk(cid, SHA512_256, size=size)
    assert_names(exc.value, cid, harness.store)
    assert harness.store.get_raw(cid) == bad[damage]  # get_raw does not verify


def test_str_is_location(harness: Harness) -> None:
    for name in harness.names:
        assert name in str(harness.store)


def test_context_manager(harness: Harness) -> None:
    with harness.store as s:
        assert s is harness.store


# --- writing --------------------------------------------------------------------------------------


def test_put_then_get(harness: Harness) -> None:
    store = writable(harness)
    cid, data, blob = make_chunk(4)
    store.put_raw(cid, blob)
    assert store.has_chunk(cid) and store.get_raw(cid) == blob
    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    store.put_raw(cid, blob)  # storing again is fine
    assert store.get_raw(cid) == blob
    assert not harness.leftovers()


def test_store_chunk_encodes_with_store_compression(harness: Harness) -> None:
    store = writable(harness)
    if store.compression == "zstd" and not compress.ZSTD_BACKEND:
        pytest.skip("no zstd binding")
    cid, data, _ = make_chunk(5)
    store.store_chunk(cid, data)
    assert compress.detect(store.get_raw(cid)) == store.compression
    assert store.get_chunk(cid, SHA512_256) == data
    cid2, data2, blob2 = make_chunk(6, method="xz")
    store.store_chunk(cid2, data2, blob2)  # a blob the caller already has is stored as is
    assert store.get_raw(cid2) == blob2


def test_concurrent_writers_threads(harness: Harness) -> None:
    store = writable(harness)
    cid, data, blob = random_chunk(7, 1 << 20)
    stop = threading.Event()
    seen: list[bytes] = []

    def read() -> None:
        while not stop.is_set():
            try:
                got = store.get_raw(cid)
            except ChunkMissing:
                continue
            if got != blob:
                seen.append(got)

    failures: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(10):
                store.put_raw(cid, blob)
        except BaseException as exc:  # a writer that fails must fail the test
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write) for _ in range(8)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not seen, "a reader saw a partial chunk"
    assert not failures, f"a writer failed: {failures[0]}"
    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    assert not harness.leftovers()


# --- listing and removing -------------------------------------------------------------------------


def test_iter_remove_prune(harness: Harness) -> None:
    store = prunable(harness)
    chunks = [make_chunk(10 + i) for i in range(6)]
    for cid, _data, blob in chunks:
        store.put_raw(cid, blob)
    ids = store.iter_chunk_ids()
    assert iter(ids) is ids, "iter_chunk_ids must stream (an iterator, not a list)"
    assert sorted(ids) == sorted(c[0] for c in chunks)
    keep = {chunks[0][0], chunks[3][0], SHA512_256(b"not in store")}
    assert store.prune(keep) == 4
    assert sorted(store.iter_chunk_ids()) == sorted([chunks[0][0], chunks[3][0]])
    assert store.prune(keep) == 0
    store.remove_chunk(chunks[0][0])
    store.remove_chunk(chunks[0][0])  # idempotent
    store.remove_chunk(SHA512_256(b"never there"))
    assert list(store.iter_chunk_ids()) == [chunks[3][0]]
    assert not store.has_chunk(chunks[0][0])


def test_remove_while_iterating(harness: Harness) -> None:
    store = prunable(harness)
    for i in range(20):
        cid, _data, blob = make_chunk(100 + i)
        store.put_raw(cid, blob)
    removed = 0
    for cid in store.iter_chunk_ids():
        store.remove_chunk(cid)
        removed += 1
    assert removed == 20 and list(store.iter_chunk_ids()) == []
