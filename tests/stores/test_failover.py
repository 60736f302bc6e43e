"""Failover groups (``a|b``): desync's semantics, over real HTTP stores.

Members are HTTP stores talking to :mod:`tests.support.faulty_http` servers (which count
requests, so "the second server was never asked" is checked on the wire), to a
closed port (a server that is down) or to pycasync's own chunk server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkInvalid, ChunkMissing, StoreError
from casync_store import LocalStore
from casync_store.plumbing.config import StoreOptions
from casync_store.serve.chunkserver import ChunkServer
from casync_store.stores.failover import FailoverGroup
from casync_store.stores.http import HTTPStore
from casync_store.stores.location import open_store
from tests.support import free_port
from tests.support.faulty_http import FaultyServer, Status

OPTIONS = StoreOptions(timeout=5.0, error_retry=2, error_retry_base_interval=0.001)


def make_chunk(seed: int, size: int = 4000) -> tuple[bytes, bytes, bytes]:
    data = bytes((seed * 13 + i) % 256 for i in range(size))
    return SHA512_256(data), data, chunk_codec.encode(data, "gzip")


def chunk_path(cid: bytes) -> str:
    return f"/{cid.hex()[:4]}/{cid.hex()}.cacnk"


@pytest.fixture
def servers() -> Iterator[list[FaultyServer]]:
    """Three faulty servers holding the same chunks."""
    with FaultyServer() as a, FaultyServer() as b, FaultyServer() as c:
        yield [a, b, c]


@pytest.fixture
def chunk(servers: list[FaultyServer]) -> tuple[bytes, bytes, bytes]:
    cid, data, blob = make_chunk(1)
    for srv in servers:
        srv.chunks[chunk_path(cid)] = blob
    return cid, data, blob


def down_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


def group(*urls: str, options: StoreOptions = OPTIONS) -> FailoverGroup:
    return FailoverGroup([HTTPStore(u, options) for u in urls])


def test_str_and_close(servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]) -> None:
    a, b = servers[0].url + "/x", servers[1].url + "/y"
    g = group(a, b)
    assert str(g) == f"{a}|{b}"
    g.close()
    for member in g.stores:
        with pytest.raises(StoreError, match="closed"):
            member.get_raw(chunk[0])


def test_healthy_first_serves_everything(
    servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]
) -> None:
    cid, data, blob = chunk
    with group(servers[0].url, servers[1].url) as g:
        assert g.get_raw(cid) == blob and g.get_chunk(cid, SHA512_256, len(data)) == data
        assert g.has_chunk(cid)
    assert servers[0].count() == 3 and servers[1].count() == 0


def test_first_down_second_serves(servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, data, blob = chunk
    dead = down_url()
    with group(dead, servers[1].url) as g:
        assert g.get_chunk(cid, SHA512_256) == data
        assert str(g.active) == servers[1].url
        assert g.get_raw(cid) == blob and g.has_chunk(cid)  # the dead one is not tried again
    assert servers[1].count() == 3


def test_first_failing_with_500_switches(
    servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]
) -> None:
    cid, _, blob = chunk
    servers[0].plan(None, *[Status(500)] * 100)
    with group(servers[0].url, servers[1].url) as g:
        for _ in range(5):
            assert g.get_raw(cid) == blob
    assert servers[0].count() == OPTIONS.error_retry  # retried by the member, then left for good
    assert servers[1].count() == 5


def test_missing_on_active_is_missing(servers: list[FaultyServer]) -> None:
    """desync: the members hold the same chunks, so a miss is not a failure to fail over on."""
    cid, _, blob = make_chunk(2)
    servers[1].chunks[chunk_path(cid)] = blob  # only the second has it
    with group(servers[0].url, servers[1].url) as g:
        with pytest.raises(ChunkMissing) as exc:
            g.get_raw(cid)
        assert servers[0].url in str(exc.value)
        with pytest.raises(ChunkMissing):
            g.get_chunk(cid, SHA512_256)
        assert not g.has_chunk(cid)
        assert g.active is g.stores[0]
    assert servers[1].count() == 0


def test_all_down_names_the_last(chunk: tuple[bytes, bytes, bytes]) -> None:
    first, last = down_url(), down_url()
    with group(first, last) as g:
        for call in (g.get_raw, g.has_chunk, lambda c: g.get_chunk(c, SHA512_256)):
            with pytest.raises(StoreError) as exc:
                call(chunk[0])
            assert last in str(exc.value) and "refused" in str(exc.value)


def test_each_member_tried_once_per_request(
    servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]
) -> None:
    for srv in servers:
        srv.plan(None, *[Status(503)] * 100)
    with group(*(s.url for s in servers)) as g, pytest.raises(StoreError) as exc:
        g.get_raw(chunk[0])
    assert all(s.count() == OPTIONS.error_retry for s in servers)
    assert servers[2].url in str(exc.value) and "HTTP 503" in str(exc.value)


def test_rotation_wraps_around(servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]) -> None:
    cid, _, blob = chunk
    a, b = servers[0], servers[1]
    with group(a.url, b.url) as g:
        b.plan(None, *[Status(500)] * OPTIONS.error_retry)
        g._failed(0)  # b is active and about to fail once: the group goes back to a
        assert g.get_raw(cid) == blob
        assert g.active is g.stores[0]
    assert a.count() == 1 and b.count() == OPTIONS.error_retry


def test_invalid_chunk_fails_over(servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]) -> None:
    """desync verifies in GetChunk, so a damaged copy is a failure of that member."""
    cid, data, _ = chunk
    servers[0].chunks[chunk_path(cid)] = make_chunk(3)[2]
    with group(servers[0].url, servers[1].url) as g:
        assert g.get_chunk(cid, SHA512_256) == data
        assert g.active is g.stores[1]
    with group(servers[0].url) as g, pytest.raises(ChunkInvalid):
        g.get_chunk(cid, SHA512_256)


def test_concurrent_failures_move_the_group_once(
    servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]
) -> None:
    """Many requests failing on one member at once move the group one step, not several."""
    ids = [chunk[0]]
    for seed in range(10, 40):
        other, _, oblob = make_chunk(seed)
        ids.append(other)
        for srv in servers:
            srv.chunks[chunk_path(other)] = oblob
    errors: list[BaseException] = []
    with group(down_url(), servers[1].url, servers[2].url) as g:
        start = threading.Barrier(12)

        def work(k: int) -> None:
            try:
                start.wait()
                for c in ids[k::3]:
                    g.get_chunk(c, SHA512_256)
                    assert g.has_chunk(c)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert g.active is g.stores[1]
    assert not errors
    assert servers[2].count() == 0  # never: only the dead member's failures moved the group
    assert servers[1].count() == sum(2 * len(ids[k::3]) for k in range(12))  # each request once


def test_open_store_builds_a_read_only_group(
    servers: list[FaultyServer], chunk: tuple[bytes, bytes, bytes]
) -> None:
    location = f"{down_url()}|{servers[1].url}/"
    with open_store(location, OPTIONS) as store:
        assert isinstance(store, FailoverGroup) and str(store) == location
        assert store.get_raw(chunk[0]) == chunk[2]
    with pytest.raises(StoreError, match="read-only"):
        open_store(location, OPTIONS, writable=True)


def test_failover_between_chunk_servers(tmp_path: Path) -> None:
    """Two real chunk servers of one store; the first stops: requests continue on the second."""
    backing = LocalStore(str(tmp_path / "store"), sync=False)
    chunks = [make_chunk(100 + i) for i in range(10)]
    for cid, _, blob in chunks:
        backing.put_raw(cid, blob)
    first = ChunkServer(backing, ["127.0.0.1:0"])
    second = ChunkServer(backing, ["127.0.0.1:0"])
    first.start()
    second.start()
    try:
        urls = [f"http://127.0.0.1:{s.addresses[0][1]}/" for s in (first, second)]
        with group(*urls) as g:
            for cid, data, _ in chunks[:5]:
                assert g.get_chunk(cid, SHA512_256) == data
            assert g.active is g.stores[0]
            first.shutdown(grace=1)
            for cid, data, _ in chunks[5:]:
                assert g.get_chunk(cid, SHA512_256) == data
            assert g.active is g.stores[1]
    finally:
        first.shutdown(grace=1)
        second.shutdown(grace=1)


def test_missing_after_a_failure_reports_the_failure(tmp_path: Path) -> None:
    """A damaged copy on the first member and none on the second: the damage is reported,
    not a misleading "missing" from the second member."""
    cid, _, blob = make_chunk(7)
    first, second = LocalStore(str(tmp_path / "first"), sync=False), LocalStore(str(tmp_path / "second"))
    first.put_raw(cid, make_chunk(8)[2])  # another chunk's bytes under this id
    with FailoverGroup([first, second]) as g:
        with pytest.raises(ChunkInvalid) as exc:
            g.get_chunk(cid, SHA512_256)
        assert str(first) in str(exc.value)
        second.put_raw(cid, blob)  # the group now reads from the second member
        assert g.get_chunk(cid, SHA512_256) == make_chunk(7)[1]
