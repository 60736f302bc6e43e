"""pull: serving chunks, indexes and archives with casync's protocol.

In-process sessions (frames in, frames out) check the protocol rules; the
``pycasync pull`` command is driven by a Python client and by the real
casync client through a stand-in ``CASYNC_SSH_PATH`` that runs the command
locally (exactly like casync's own test suite's ``pseudo-ssh``).
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Sequence

import pytest

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format import protocol as proto
from casync_format.digest import SHA512_256
from casync_format.errors import FormatError, ParameterError, StoreError
from casync_store import LocalStore
from casync_store.serve.pull import serve
from casync_store.stores.base import Store
from tests.support import rng_bytes
from tests.support.sshd import write_pycasync_remote

# --------------------------------------------------------------------------- helpers


def _fill(store: LocalStore, count: int, seed: int, compression: str = "zstd") -> list[bytes]:
    ids = []
    for i in range(count):
        data = rng_bytes(1000 + 37 * i, seed * 1000 + i)
        cid = SHA512_256(data)
        store.put_raw(cid, chunk_codec.encode(data, compression))
        ids.append(cid)
    return ids


def _session(frames: Sequence[proto.Message], stores: Sequence[Store], **kw: object) -> tuple[object, list]:
    """Run serve() on a recorded client input; returns (stats, messages sent)."""
    out = io.BytesIO()
    stats = serve(io.BytesIO(b"".join(proto.encode(f) for f in frames)), out, stores, **kw)  # type: ignore[arg-type]
    return stats, _messages(out.getvalue())


def _messages(blob: bytes) -> list:
    stream = io.BytesIO(blob)
    msgs = []
    while (m := proto.read_message(stream.read)) is not None:
        msgs.append(m)
    return msgs


HELLO = proto.Hello(proto.PULL_CHUNKS)
Stores = tuple[LocalStore, LocalStore]
Remote = tuple[dict[str, str], str]


@pytest.fixture
def stores(tmp_path: object) -> tuple[LocalStore, LocalStore]:
    return (LocalStore(os.path.join(str(tmp_path), "s1"), sync=False),
            LocalStore(os.path.join(str(tmp_path), "s2"), sync=False))  # fmt: skip


# --------------------------------------------------------------------------- in-process sessions


def test_batched_request_gets_every_answer_in_order(stores: Stores) -> None:
    s1, s2 = stores
    ids = _fill(s1, 60, 1) + _fill(s2, 30, 2) + [bytes([i]) * 32 for i in range(10)]
    order = ids[::2] + ids[1::2]
    stats, msgs = _session([HELLO, proto.Request(tuple(order)), proto.Goodbye()], [s1, s2])
    assert msgs[0] == proto.Hello(proto.READABLE_STORE)
    answers = msgs[1:]
    assert len(answers) == 100
    assert [m.chunk_id for m in answers] == order
    for m in answers:
        if m.chunk_id[:1] * 32 == m.chunk_id:
            assert isinstance(m, proto.Missing)
        else:
            assert isinstance(m, proto.Chunk) and m.compressed
            assert SHA512_256(compress.decompress(m.data, 10**6)) == m.chunk_id
    assert (stats.chunks_sent, stats.chunks_missing, stats.requests) == (90, 10, 1)
    assert stats.ended_by == "goodbye"


def test_many_requests_and_repeats(stores: Stores) -> None:
    ids = _fill(stores[0], 5, 3)
    frames = [HELLO] + [proto.Request((i,)) for i in ids * 3]
    stats, msgs = _session(frames, [stores[0]])
    assert [m.chunk_id for m in msgs[1:]] == ids * 3  # unlike casync's pull, repeats are answered
    assert stats.ended_by == "eof"


@pytest.mark.parametrize("method", ["xz", "gzip"])
def test_xz_and_gzip_chunks_are_served_as_zstd(stores: tuple[LocalStore, LocalStore], method: str) -> None:
    ids = _fill(stores[0], 4, 4, method)
    stats, msgs = _session([HELLO, proto.Request(tuple(ids))], [stores[0]])
    for m in msgs[1:]:
        assert compress.detect(m.data) == "zstd" and m.flags == proto.CHUNK_COMPRESSED
        assert SHA512_256(compress.decompress(m.data, 10**6)) == m.chunk_id
    assert stats.chunks_reencoded == 4


def test_damaged_chunk_falls_through_to_the_next_store(stores: Stores) -> None:
    s1, s2 = stores
    good = _fill(s2, 2, 5)
    s1.put_raw(good[0], b"not a compressed chunk")
    s1.put_raw(good[1], compress.compress(b"x" * 100)[:-3])  # truncated zstd
    only_bad = bytes(range(32))
    s1.put_raw(only_bad, b"\xfd7zXZ\0garbage")
    _, msgs = _session([HELLO, proto.Request((*good, only_bad))], [s1, s2])
    assert [type(m) for m in msgs[1:]] == [proto.Chunk, proto.Chunk, proto.Missing]


def test_index_and_archive_are_sent_when_asked(tmp_path: object, stores: Stores) -> None:
    index = os.path.join(str(tmp_path), "x.caibx")
    archive = os.path.join(str(tmp_path), "x.catar")
    with open(index, "wb") as f:
        f.write(rng_bytes(150_000, 6))
    with open(archive, "wb") as f:
        f.write(rng_bytes(1000, 7))
    ids = _fill(stores[0], 1, 8)
    hello = proto.Hello(proto.PULL_CHUNKS | proto.PULL_INDEX | proto.PULL_ARCHIVE)
    frames = [hello, proto.Request(tuple(ids))]
    stats, msgs = _session(frames, [stores[0]], index_path=index, archive_path=archive)
    assert msgs[0].flags == proto.READABLE_STORE | proto.READABLE_INDEX | proto.READABLE_ARCHIVE
    kinds = [type(m) for m in msgs[1:]]
    assert kinds == [proto.IndexData] * 3 + [proto.IndexEOF, proto.ArchiveData, proto.ArchiveEOF, proto.Chunk]
    assert b"".join(m.data for m in msgs[1:4]) == rng_bytes(150_000, 6)
    assert msgs[5].data == rng_bytes(1000, 7)
    assert (stats.index_bytes, stats.archive_bytes) == (150_000, 1000)


def test_index_not_sent_unless_asked(tmp_path: object) -> None:
    index = os.path.join(str(tmp_path), "x.caibx")
    with open(index, "wb") as f:
        f.write(b"idx")
    _, msgs = _session([proto.Hello(proto.PULL_INDEX)], [], index_path=index)
    assert msgs == [proto.Hello(proto.READABLE_INDEX), proto.IndexData(b"idx"), proto.IndexEOF()]


def test_client_wanting_what_is_not_offered_gets_an_abort(stores: Stores) -> None:
    out = io.BytesIO()
    with pytest.raises(FormatError, match="wants pull-index"):
        serve(io.BytesIO(proto.encode(proto.Hello(proto.PULL_INDEX))), out, [stores[0]])
    msgs = _messages(out.getvalue())
    assert isinstance(msgs[-1], proto.Abort) and "pull-index" in msgs[-1].reason


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (proto.encode(HELLO) + b"garbage garbage garbage", FormatError, "not a casync protocol message"),
        (proto.encode(HELLO) + proto.encode(HELLO), FormatError, "unexpected hello"),
        (proto.encode(HELLO) + proto.encode(proto.Chunk(b"\0" * 32, b"x")), FormatError, "unexpected chunk"),
        (proto.encode(proto.Goodbye()), FormatError, "goodbye before hello"),
        (proto.encode(HELLO) + proto.encode(proto.Request((b"\0" * 32,)))[:-5], FormatError, "truncated"),
        (proto.encode(HELLO) + proto.encode(proto.Abort(5, "bye")), StoreError, "client aborted.*bye"),
    ],
)
def test_bad_clients(frames: bytes, error: type, match: str, stores: Stores) -> None:
    out = io.BytesIO()
    with pytest.raises(error, match=match):
        serve(io.BytesIO(frames), out, [stores[0]])
    assert isinstance(_messages(out.getvalue())[-1], proto.Abort)


def test_unreadable_index_is_a_store_error(tmp_path: object) -> None:
    out = io.BytesIO()
    missing = os.path.join(str(tmp_path), "nope.caibx")
    with pytest.raises(StoreError, match=r"cannot open index .*nope\.caibx"):
        serve(io.BytesIO(proto.encode(proto.Hello(proto.PULL_INDEX))), out, [], index_path=missing)
    assert "nope.caibx" in _messages(out.getvalue())[-1].reason


def test_nothing_to_serve() -> None:
    with pytest.raises(ParameterError):
        serve(io.BytesIO(), io.BytesIO(), [])


def test_client_leaving_is_a_normal_end(stores: Stores) -> None:
    stats, msgs = _session([], [stores[0]])
    assert stats.ended_by == "eof" and msgs == [proto.Hello(proto.READABLE_STORE)]

    class Gone(io.BytesIO):
        def write(self, b: object) -> int:
            raise BrokenPipeError

    stats = serve(io.BytesIO(proto.encode(HELLO)), Gone(), [stores[0]])  # type: ignore[arg-type]
    assert stats.ended_by == "broken-pipe"


def test_rate_limit(stores: Stores) -> None:
    ids = _fill(stores[0], 40, 9)  # ~66 KB of incompressible chunks
    start = time.monotonic()
    stats, _ = _session([HELLO, proto.Request(tuple(ids))], [stores[0]], rate_limit_bps=200_000)
    assert time.monotonic() - start >= stats.bytes_sent / 200_000 - 0.1 > 0.2
    with pytest.raises(ParameterError):
        serve(io.BytesIO(), io.BytesIO(), [stores[0]], rate_limit_bps=0)


def test_non_blocking_pipes_are_handled(stores: Stores) -> None:
    # casync's client hands its child O_NONBLOCK pipes; serve() must still block on them.
    ids = _fill(stores[0], 3, 10)
    rin, win = os.pipe()
    rout, wout = os.pipe()
    os.set_blocking(rin, False)
    os.set_blocking(wout, False)
    with open(rin, "rb") as stdin, open(wout, "wb") as stdout:
        result: dict[str, object] = {}
        t = threading.Thread(target=lambda: result.update(stats=serve(stdin, stdout, [stores[0]])))
        t.start()
        with open(win, "wb", buffering=0) as w, open(rout, "rb") as r:
            time.sleep(0.2)  # the server meets an empty non-blocking pipe first
            w.write(proto.encode(HELLO))
            assert proto.read_message(r.read) == proto.Hello(proto.READABLE_STORE)
            w.write(proto.encode(proto.Request(tuple(ids))))
            assert [proto.read_message(r.read).chunk_id for _ in ids] == ids
            w.write(proto.encode(proto.Goodbye()))
            t.join(10)
    assert result["stats"].ended_by == "goodbye"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the pull command


def test_cli_options_before_verb_and_several_stores(tmp_path: object, stores: Stores) -> None:
    s1, s2 = stores
    ids = _fill(s1, 50, 11) + _fill(s2, 50, 12, "xz")
    remote = write_pycasync_remote(str(tmp_path))
    argv = [remote, "--log-level=3", "--rate-limit-bps=100000000", "pull", "-", "-", "-", s1.path, s2.path]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    asked = [*ids, b"\1" * 32]
    frames = [HELLO, proto.Request(tuple(asked)), proto.Goodbye()]
    out, err = proc.communicate(b"".join(proto.encode(f) for f in frames), timeout=60)
    assert proc.returncode == 0, err
    msgs = _messages(out)
    assert [m.chunk_id for m in msgs[1:]] == asked
    assert all(isinstance(m, proto.Chunk) for m in msgs[1:-1]) and isinstance(msgs[-1], proto.Missing)


@pytest.fixture
def casync_remote(tmp_path: object, casync: str) -> tuple[dict[str, str], str]:
    """Env for casync with a local pseudo-ssh and pycasync as the remote; and the args log."""
    d = str(tmp_path)
    log = os.path.join(d, "ssh-args.log")
    ssh = os.path.join(d, "pseudo-ssh")
    with open(ssh, "w") as f:  # casync's test/pseudo-ssh, plus a record of the command line
        f.write(f'#!/bin/sh\necho "$*" >> "{log}"\nshift 1\nexec "$@"\n')
    os.chmod(ssh, 0o755)
    env = dict(os.environ, CASYNC_SSH_PATH=ssh, CASYNC_REMOTE_PATH=write_pycasync_remote(d))
    return env, log


def _make(casync: str, cwd: str, *args: str) -> None:
    subprocess.run([casync, "make", *args], cwd=cwd, check=True, capture_output=True)


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


def test_casync_extract_from_our_pull(casync: str, casync_remote: Remote, tmp_path: object) -> None:
    env, log = casync_remote
    d = str(tmp_path)
    blob = rng_bytes(600_000, 13)
    with open(os.path.join(d, "blob"), "wb") as f:
        f.write(blob)
    store = os.path.join(d, "store")
    _make(casync, d, f"--store={store}", "x.caibx", "blob")
    local = LocalStore(store, sync=False)
    for n, cid in enumerate(local.iter_chunk_ids()):  # some chunks xz/gzip: served re-encoded
        data = chunk_codec.decode(local.get_raw(cid), cid, SHA512_256)
        local.put_raw(cid, chunk_codec.encode(data, ("xz", "gzip", "zstd")[n % 3]))
    r = subprocess.run([casync, "--rate-limit-bps=50000000", "extract", f"--store=localhost:{store}",
                        "x.caibx", "out"], env=env, cwd=d, capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with open(os.path.join(d, "out"), "rb") as f:
        assert f.read() == blob
    remote = env["CASYNC_REMOTE_PATH"]
    assert _read_lines(log) == [f"localhost {remote} --rate-limit-bps=50000000 pull - - - {store}"]


def test_casync_pulls_index_and_archive(casync: str, casync_remote: Remote, tmp_path: object) -> None:
    env, log = casync_remote
    d = str(tmp_path)
    os.makedirs(os.path.join(d, "tree", "sub"))
    for name, size in (("a", 300_000), ("sub/b", 5)):
        with open(os.path.join(d, "tree", name), "wb") as f:
            f.write(rng_bytes(size, 14))
    run = {"cwd": d, "check": True, "capture_output": True}
    subprocess.run([casync, "make", "x.caidx", "tree"], **run)  # store: default.castr next to it
    subprocess.run([casync, "make", "x.catar", "tree"], **run)
    want = subprocess.run([casync, "mtree", "tree"], **run).stdout
    remote_run = dict(run, env=env, timeout=120)
    via_index = subprocess.run([casync, "mtree", f"localhost:{d}/x.caidx"], **remote_run).stdout
    via_archive = subprocess.run([casync, "mtree", f"localhost:{d}/x.catar"], **remote_run).stdout
    assert via_index == want and via_archive == want
    remote = env["CASYNC_REMOTE_PATH"]
    assert _read_lines(log) == [
        f"localhost {remote} pull - - {d}/x.caidx {d}/default.castr",
        f"localhost {remote} pull - {d}/x.catar - -",
    ]


def test_casync_missing_chunk_fails_cleanly(casync: str, casync_remote: Remote, tmp_path: object) -> None:
    env, _ = casync_remote
    d = str(tmp_path)
    with open(os.path.join(d, "blob"), "wb") as f:
        f.write(rng_bytes(200_000, 15))
    store = os.path.join(d, "store")
    _make(casync, d, f"--store={store}", "x.caibx", "blob")
    local = LocalStore(store, sync=False)
    local.remove_chunk(next(iter(local.iter_chunk_ids())))
    r = subprocess.run([casync, "extract", f"--store=localhost:{store}", "x.caibx", "out"],
                       env=env, cwd=d, capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode != 0
    assert not os.path.exists(os.path.join(d, "out"))
