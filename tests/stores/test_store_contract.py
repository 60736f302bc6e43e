"""The Store contract, one suite for every store; plus the router's and cache's own rules.

Each entry of :data:`FACTORIES` builds a :class:`Harness`: the store under
test and a ``backing`` WriteStore through which the test plants chunks where
that store will find them (for a wrapper, in the store it reads through; for
a network store, the local directory its test server serves: ``http`` is an
HTTPStore in front of a real ChunkServer). A factory is called with the test's
temp directory and its ``request`` (for session fixtures such as a test server:
``request.getfixturevalue(name)``). To bring a new backend under the contract,
add a factory; tests that need a capability (WriteStore,
PruneStore) skip stores that lack it.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format.digest import SHA256, SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_format.index import read_index
from casync_store import CachedStore, LocalStore, StoreRouter, combine
from casync_store.plumbing.atomic import TEMP_PREFIX, atomic_write, write_file_atomic
from casync_store.stores.base import PruneStore, Store, WriteStore, require_prunable, require_writable
from tests.support import DATA_DIR, ROOT

DATA = DATA_DIR
METHOD = "zstd" if compress.ZSTD_BACKEND else "gzip"


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


def make_chunk(seed: int, size: int = 3000, method: str = METHOD) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob) of a deterministic chunk."""
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data, chunk_codec.encode(data, method)


def random_chunk(seed: int, size: int) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob) of an incompressible chunk (a big blob is slow to write)."""
    data = random.Random(seed).randbytes(size)
    return SHA512_256(data), data, compress.compress(data, "gzip", level=1)


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


# --- LocalStore specifics -------------------------------------------------------------------------


def test_local_layout_and_foreign_files(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path), sync=False)
    cid, _data, blob = make_chunk(20)
    store.put_raw(cid, blob)
    name = cid.hex()
    assert store.chunk_path(cid) == os.path.join(str(tmp_path), name[:4], name + ".cacnk")
    assert os.path.isfile(store.chunk_path(cid))
    mode = os.stat(store.chunk_path(cid)).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o644 & ~umask
    junk = {
        os.path.join(name[:4], TEMP_PREFIX + "abc"),  # a writer's temporary file
        os.path.join(name[:4], name + ".cacnk.tmp"),
        os.path.join(name[:4], name.upper() + ".cacnk"),
        os.path.join(name[:4], "README"),
        "README",
        os.path.join("zzzz", name + ".cacnk"),  # not a prefix directory
        os.path.join("0000", "1111" + name[4:] + ".cacnk"),  # filed under the wrong prefix
        os.path.join("00000", name + ".cacnk"),
        name + ".cacnk",
    }
    for rel in junk:
        os.makedirs(os.path.dirname(os.path.join(str(tmp_path), rel)), exist_ok=True)
        with open(os.path.join(str(tmp_path), rel), "wb") as f:
            f.write(blob)
    os.makedirs(os.path.join(str(tmp_path), "abcd", "0" * 64 + ".cacnk"))  # a directory, not a chunk
    assert list(store.iter_chunk_ids()) == [cid]
    assert store.prune(set()) == 1
    for rel in junk:
        assert os.path.exists(os.path.join(str(tmp_path), rel)), "prune removed a foreign file"


def test_local_reads_casync_store() -> None:
    with open(os.path.join(DATA, "index", "text.caibx"), "rb") as f:
        items = list(read_index(f))
    for method in ("zstd", "xz", "gzip"):
        if method == "zstd" and not compress.ZSTD_BACKEND:
            continue
        store = LocalStore(os.path.join(DATA, "store-" + method))
        assert sorted(store.iter_chunk_ids()) == sorted({c.id for c in items})
        for c in items:
            assert len(store.get_chunk(c.id, SHA512_256, size=c.size)) == c.size


def test_local_errors(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(str(tmp_path), "file")
    with open(path, "wb") as f:
        f.write(b"x")
    with pytest.raises(StoreError):
        LocalStore(path)
    under_file = LocalStore(os.path.join(path, "store"))
    cid, _data, blob = make_chunk(21)
    with pytest.raises(StoreError) as exc:
        under_file.put_raw(cid, blob)
    assert cid.hex() in str(exc.value) and str(under_file) in str(exc.value)
    with pytest.raises(StoreError):
        list(LocalStore(os.path.join(str(tmp_path), "nonexistent")).iter_chunk_ids())
    assert not LocalStore(os.path.join(str(tmp_path), "nonexistent")).has_chunk(cid)


def test_local_directory_under_chunk_name_is_invalid(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path))
    cid = make_chunk(22)[0]
    os.makedirs(store.chunk_path(cid))  # a directory where the chunk file belongs
    with pytest.raises(ChunkInvalid) as exc:  # there, but no chunk: verify -r removes it
        store.get_raw(cid)
    assert cid.hex() in str(exc.value) and "directory" in str(exc.value)
    assert not store.has_chunk(cid)


def test_local_verify_false_trusts_content(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(str(tmp_path), verify=False, sync=False)
    cid, data, _ = make_chunk(23)
    other = make_chunk(24)
    store.put_raw(cid, other[2])
    assert store.get_chunk(cid, SHA512_256) == other[1]
    with pytest.raises(ChunkInvalid):  # the size is still checked
        store.get_chunk(cid, SHA512_256, size=len(data) + 4)


def test_local_concurrent_writer_processes(tmp_path: os.PathLike[str]) -> None:
    store = LocalStore(os.path.join(str(tmp_path), "store"), sync=False)
    cid, data, blob = random_chunk(25, 4 << 20)
    blob_path = os.path.join(str(tmp_path), "blob")
    with open(blob_path, "wb") as f:
        f.write(blob)
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from casync_store.stores.local import LocalStore\n"
        "s = LocalStore(sys.argv[2], sync=False)\n"
        "blob = open(sys.argv[3], 'rb').read()\n"
        "for _ in range(30): s.put_raw(bytes.fromhex(sys.argv[4]), blob)\n"
    )
    args = [sys.executable, "-c", script, ROOT, store.path, blob_path, cid.hex()]
    procs = [subprocess.Popen(args) for _ in range(4)]
    bad = good = 0
    while any(p.poll() is None for p in procs):
        try:
            got = store.get_raw(cid)
        except ChunkMissing:
            continue
        good += got == blob
        bad += got != blob
    assert [p.wait() for p in procs] == [0] * 4
    assert bad == 0, f"a reader saw a partial chunk ({bad} of {bad + good} reads)"
    assert good, "the reader never saw the chunk: the test did not test anything"
    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
    leftovers = [n for _t, _d, names in os.walk(store.path) for n in names if n.startswith(TEMP_PREFIX)]
    assert not leftovers and list(store.iter_chunk_ids()) == [cid]


def test_atomic_write_keeps_target_on_error(tmp_path: os.PathLike[str]) -> None:
    target = os.path.join(str(tmp_path), "file")
    write_file_atomic(target, b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"new, partial")
        raise RuntimeError("boom")
    with open(target, "rb") as f:
        assert f.read() == b"old"
    assert os.listdir(str(tmp_path)) == ["file"]
    write_file_atomic(target, b"new", mode=0o600)
    with open(target, "rb") as f:
        assert f.read() == b"new"
    assert os.stat(target).st_mode & 0o777 == 0o600


# --- CachedStore ----------------------------------------------------------------------------------


@pytest.fixture
def cache_pair(tmp_path: os.PathLike[str]) -> CachePair:
    remote = LocalStore(os.path.join(str(tmp_path), "remote"), sync=False)
    cache = LocalStore(os.path.join(str(tmp_path), "cache"), sync=False)
    return CachedStore(remote, cache), remote, cache


def _age(store: LocalStore, cid: bytes, seconds: float = 3600) -> float:
    old = time.time() - seconds
    os.utime(store.chunk_path(cid), (old, old))
    return old


CachePair = tuple[CachedStore, LocalStore, LocalStore]


def test_cache_miss_fills_cache_with_remote_bytes(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, data, blob = make_chunk(30, method="xz")
    remote.put_raw(cid, blob)
    assert cached.get_chunk(cid, SHA512_256, size=len(data)) == data
    assert cache.get_raw(cid) == blob
    cid2, _data2, blob2 = make_chunk(31)
    remote.put_raw(cid2, blob2)
    # A raw read cannot verify, so it is served but does not fill the cache.
    assert cached.get_raw(cid2) == blob2 and not cache.has_chunk(cid2)


def test_cache_hit_touches_mtime(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, _data, blob = make_chunk(32)
    cache.put_raw(cid, blob)  # only in the cache: a hit must not ask the remote
    for read in (lambda: cached.get_chunk(cid, SHA512_256), lambda: cached.get_raw(cid)):
        old = _age(cache, cid)
        read()
        assert os.stat(cache.chunk_path(cid)).st_mtime > old + 1800
    assert not remote.has_chunk(cid)


def test_damaged_cache_copy_replaced(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, data, blob = make_chunk(33)
    remote.put_raw(cid, blob)
    for bad in (make_chunk(34)[2], b"garbage", blob[:10]):
        cache.put_raw(cid, bad)
        assert cached.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert cache.get_raw(cid) == blob


def test_damaged_remote_copy_not_cached(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    cid, _data, _blob = make_chunk(35)
    remote.put_raw(cid, make_chunk(36)[2])
    with pytest.raises(ChunkInvalid) as exc:
        cached.get_chunk(cid, SHA512_256)
    assert exc.value.store is remote
    assert not cache.has_chunk(cid)


def test_cache_has_chunk(cache_pair: CachePair) -> None:
    cached, remote, cache = cache_pair
    a, b, c = make_chunk(37), make_chunk(38), make_chunk(39)
    remote.put_raw(a[0], a[2])
    cache.put_raw(b[0], b[2])
    assert cached.has_chunk(a[0]) and cached.has_chunk(b[0]) and not cached.has_chunk(c[0])


# --- StoreRouter ----------------------------------------------------------------------------------


@pytest.fixture
def two_stores(tmp_path: os.PathLike[str]) -> tuple[LocalStore, LocalStore]:
    return (
        LocalStore(os.path.join(str(tmp_path), "a"), sync=False),
        LocalStore(os.path.join(str(tmp_path), "b"), sync=False),
    )


def test_router_order(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    router = StoreRouter([a, b])
    cid, data, blob = make_chunk(40)
    blob_xz = chunk_codec.encode(data, "xz")
    b.put_raw(cid, blob_xz)
    assert router.get_raw(cid) == blob_xz
    a.put_raw(cid, blob)
    assert router.get_raw(cid) == blob  # the first store that holds it wins
    assert router.get_chunk(cid, SHA512_256) == data
    assert str(router) == f"{a}, {b}"


def test_router_store_error_is_final(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    cid, _data, blob = make_chunk(41)
    b.put_raw(cid, blob)

    class Unreadable(LocalStore):  # a cannot read the chunk: StoreError, not ChunkMissing
        def get_raw(self, chunk_id: bytes) -> bytes:
            raise StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: Permission denied")

    router = StoreRouter([Unreadable(a.path), b])
    with pytest.raises(StoreError) as exc:
        router.get_raw(cid)
    assert not isinstance(exc.value, ChunkMissing)
    with pytest.raises(StoreError):
        router.get_chunk(cid, SHA512_256)


def test_router_invalid_is_final_and_names_member(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    cid, _data, blob = make_chunk(42)
    a.put_raw(cid, make_chunk(43)[2])
    b.put_raw(cid, blob)
    with pytest.raises(ChunkInvalid) as exc:
        StoreRouter([a, b]).get_chunk(cid, SHA512_256)
    assert exc.value.store is a


def test_router_members_keep_their_verify_setting(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, _b = two_stores
    trusted = LocalStore(a.path, verify=False)
    cid = make_chunk(44)[0]
    _other_id, other_data, other_blob = make_chunk(45)
    a.put_raw(cid, other_blob)
    assert StoreRouter([trusted]).get_chunk(cid, SHA256) == other_data


def test_router_and_combine_construction(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    with pytest.raises(StoreError):
        StoreRouter([])
    with pytest.raises(StoreError):
        combine([])
    assert combine([a]) is a
    assert isinstance(combine([a, b]), StoreRouter)
    cached = combine([a, b], cache=LocalStore(a.path + "-cache"))
    assert isinstance(cached, CachedStore) and isinstance(cached.remote, StoreRouter)
    cache = LocalStore(a.path + "-cache")
    assert combine([], cache=cache) is cache


def test_capability_checks(two_stores: tuple[LocalStore, LocalStore]) -> None:
    a, b = two_stores
    assert require_writable(a) is a and require_prunable(a) is a
    for store in (StoreRouter([a, b]), CachedStore(a, b)):
        with pytest.raises(StoreError) as exc:
            require_writable(store)
        assert str(a) in str(exc.value)
        with pytest.raises(StoreError):
            require_prunable(store)
