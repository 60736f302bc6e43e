"""push: receiving a pushed index, archive and chunks with casync's protocol.

The real casync client pushes through the real sshd fixture (``casync make
host:/srv/x.caibx``) to ``pycasync push`` and the result is read back with
casync; in-process sessions (recorded client frames in, our frames out)
check the rules: only missing chunks are asked for, every chunk is checked
against its id and index size, and nothing is installed unless complete.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Sequence

import pytest

from casync_format import chunk as chunk_codec
from casync_format import protocol as proto
from casync_format.constants import CA_FORMAT_SHA512_256
from casync_format.digest import SHA512_256
from casync_format.errors import FormatError, ParameterError, StoreError
from casync_format.index import IndexHeader, read_index, write_index
from casync_store import LocalStore
from casync_store.serve.push import PushStats, receive
from tests.support import rng_bytes
from tests.support.cli import ok, one_error, run
from tests.support.sshd import SSHServer, write_pycasync_remote

HEADER = IndexHeader(CA_FORMAT_SHA512_256, 1000, 4000, 16000)
WANTS = proto.PUSH_INDEX | proto.PUSH_CHUNKS | proto.PUSH_INDEX_CHUNKS


def _chunks(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        data = rng_bytes(1000 + 211 * i, seed * 100 + i)
        out.append((SHA512_256(data), data))
    return out


def _index_bytes(chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    buf = io.BytesIO()
    write_index(buf, HEADER, [(cid, len(data)) for cid, data in chunks])
    return buf.getvalue()


def _messages(blob: bytes) -> list[proto.Message]:
    stream = io.BytesIO(blob)
    msgs = []
    while (m := proto.read_message(stream.read)) is not None:
        msgs.append(m)
    return msgs


def _session(frames: Sequence[proto.Message], wstore: LocalStore | None,
             **kw: object) -> tuple[PushStats, list]:  # fmt: skip
    out = io.BytesIO()
    raw = io.BytesIO(b"".join(proto.encode(f) for f in frames))
    stats = receive(raw, out, wstore, **kw)  # type: ignore[arg-type]
    return stats, _messages(out.getvalue())


def _failing(frames: Sequence[proto.Message], wstore: LocalStore | None, exc: type, match: str,
             **kw: object) -> list:  # fmt: skip
    out = io.BytesIO()
    raw = io.BytesIO(b"".join(proto.encode(f) for f in frames))
    with pytest.raises(exc, match=match):
        receive(raw, out, wstore, **kw)  # type: ignore[arg-type]
    msgs = _messages(out.getvalue())
    assert isinstance(msgs[-1], proto.Abort)
    return msgs


def _push_frames(chunks: Sequence[tuple[bytes, bytes]], piece: int = 100) -> list[proto.Message]:
    raw = _index_bytes(chunks)
    frames: list[proto.Message] = [proto.Hello(WANTS)]
    frames += [proto.IndexData(raw[i : i + piece]) for i in range(0, len(raw), piece)]
    return [*frames, proto.IndexEOF()]


def _files(directory: str) -> list[str]:
    return sorted(os.listdir(directory))


# --------------------------------------------------------------------------- in-process sessions


def test_asks_only_for_missing_chunks_and_installs_index(tmp_path: object) -> None:
    d = str(tmp_path)
    chunks = _chunks(6, 1)
    chunks.append(chunks[0])  # a repeated chunk is asked for once
    wstore, rstore = LocalStore(f"{d}/w", sync=False), LocalStore(f"{d}/r", sync=False)
    wstore.put_raw(chunks[1][0], chunk_codec.encode(chunks[1][1]))
    rstore.put_raw(chunks[2][0], chunk_codec.encode(chunks[2][1]))
    need = [c for i, c in enumerate(chunks[:6]) if i not in (1, 2)]
    frames = _push_frames(chunks) + [proto.Chunk(cid, chunk_codec.encode(data)) for cid, data in need]
    frames.append(proto.Chunk(need[-1][0], data=need[-1][1], flags=0))  # after the goodbye: never read
    stats, msgs = _session(frames, wstore, rstores=[rstore], index_path=f"{d}/x.caibx")
    assert isinstance(msgs[0], proto.Hello)
    assert msgs[0].flags == proto.WRITABLE_STORE | proto.WRITABLE_INDEX
    asked = [cid for m in msgs if isinstance(m, proto.Request) for cid in m.ids]
    assert asked == [cid for cid, _ in need]
    assert isinstance(msgs[-1], proto.Goodbye)
    assert stats.chunks_received == len(need) and stats.index_chunks == 7 and stats.ended_by == "done"
    with open(f"{d}/x.caibx", "rb") as f:
        assert f.read() == _index_bytes(chunks)
    for cid, data in need:
        assert wstore.get_chunk(cid, SHA512_256) == data
    assert not rstore.has_chunk(need[0][0])
    assert _files(d) == ["r", "w", "x.caibx"]  # no temporary file left


def test_uncompressed_and_xz_chunks_are_checked_and_stored(tmp_path: object) -> None:
    d = str(tmp_path)
    chunks = _chunks(2, 2)
    wstore = LocalStore(f"{d}/w", sync=False)
    frames = [
        *_push_frames(chunks),
        proto.Chunk(chunks[0][0], chunks[0][1], flags=0),
        proto.Chunk(chunks[1][0], chunk_codec.encode(chunks[1][1], "xz")),
    ]
    _session(frames, wstore, index_path=f"{d}/x.caibx")
    for cid, data in chunks:
        assert wstore.get_chunk(cid, SHA512_256) == data
        assert wstore.get_raw(cid)[:4] == b"\x28\xb5\x2f\xfd"  # stored in the store's compression


@pytest.mark.parametrize("damage", ["other content", "wrong size", "not zstd"])
def test_damaged_chunk_aborts_and_installs_nothing(tmp_path: object, damage: str) -> None:
    d = str(tmp_path)
    chunks = _chunks(3, 3)
    wstore = LocalStore(f"{d}/w", sync=False)
    cid, data = chunks[1]
    bad = {
        "other content": proto.Chunk(cid, chunk_codec.encode(chunks[2][1])),
        "wrong size": proto.Chunk(cid, data + b"x", flags=0),
        "not zstd": proto.Chunk(cid, b"\x28\xb5\x2f\xfd garbage"),
    }[damage]
    frames = [*_push_frames(chunks), proto.Chunk(chunks[0][0], chunk_codec.encode(chunks[0][1])), bad]
    msgs = _failing(frames, wstore, StoreError, "damaged chunk", index_path=f"{d}/x.caibx")
    assert "damaged chunk" in msgs[-1].reason
    assert not wstore.has_chunk(cid)
    assert _files(d) == ["w"]


@pytest.mark.parametrize(
    ("end", "match"),
    [
        ([proto.Goodbye()], "ended the session before the push was complete .2 chunks"),
        ([], "left before the push was complete"),
        ([proto.Missing(b"\1" * 32)], "does not have chunk 0101"),
        ([proto.Abort(5, "disk full")], "client aborted the session: disk full"),
    ],
)
def test_client_leaving_early_installs_nothing(tmp_path: object, end: list, match: str) -> None:
    d = str(tmp_path)
    chunks = _chunks(3, 4)
    frames = [*_push_frames(chunks), proto.Chunk(chunks[0][0], chunk_codec.encode(chunks[0][1])), *end]
    _failing(frames, LocalStore(f"{d}/w", sync=False), StoreError, match, index_path=f"{d}/x.caibx")
    assert _files(d) == ["w"]


def test_truncated_index_is_incomplete(tmp_path: object) -> None:
    d = str(tmp_path)
    raw = _index_bytes(_chunks(2, 5))
    frames = [proto.Hello(proto.PUSH_INDEX), proto.IndexData(raw[:-1]), proto.IndexEOF()]
    _failing(frames, None, FormatError, "truncated", index_path=f"{d}/x.caibx")
    frames = [proto.Hello(proto.PUSH_INDEX), proto.IndexData(b"\0" * 64)]
    _failing(frames, None, FormatError, "not a casync index", index_path=f"{d}/x.caibx")
    assert _files(d) == []


def test_index_alone_is_installed_without_chunks(tmp_path: object) -> None:
    d = str(tmp_path)
    raw = _index_bytes(_chunks(2, 6))
    stats, msgs = _session([proto.Hello(proto.PUSH_INDEX), proto.IndexData(raw), proto.IndexEOF()],
                           None, index_path=f"{d}/x.caibx")  # fmt: skip
    assert [type(m) for m in msgs] == [proto.Hello, proto.Goodbye]
    with open(f"{d}/x.caibx", "rb") as f:
        assert len(read_index(f)) == 2
    assert stats.index_bytes == len(raw)


def test_pushing_what_is_not_offered_is_refused(tmp_path: object) -> None:
    d = str(tmp_path)
    wstore = LocalStore(f"{d}/w", sync=False)
    _failing([proto.Hello(WANTS)], wstore, FormatError, "wants push-index, which needs writable-index")
    frames = [proto.Hello(proto.PUSH_ARCHIVE), proto.IndexData(b"x")]
    _failing(frames, wstore, FormatError, "unexpected index message", archive_path=f"{d}/x.catar")
    # casync's client sends chunks only when asked, and asks are made from a pushed index: without
    # one, nothing would ever arrive (the client would end "successfully"): refused instead.
    _failing([proto.Hello(proto.PUSH_CHUNKS)], wstore, StoreError, "together with their index")
    with pytest.raises(ParameterError, match="nowhere to write"):
        receive(io.BytesIO(), io.BytesIO(), None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the command, real casync


def test_cli_refuses_base_and_nothing(env: dict[str, str], tmp_path: object) -> None:
    one_error(run(env, "push", str(tmp_path), "-", "-", "-"), 2, "base directory")
    one_error(run(env, "push", "-", "-", "-", "-"), 2, "nowhere to write")
    assert b"push - ARCHIVE INDEX WSTORE" in ok(env, "push", "--help").stdout


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def test_sshd_casync_make_pushes_index_and_chunks(sshd: SSHServer, tmp_path: object, casync: str) -> None:
    d = str(tmp_path)
    blob = rng_bytes(900_000, 7)
    _write(f"{d}/blob", blob)
    os.mkdir(f"{d}/srv")
    env = sshd.env(remote=write_pycasync_remote(d))
    kw = {"cwd": d, "capture_output": True, "timeout": 120}
    r = subprocess.run([casync, "make", f"{sshd.alias}:{d}/srv/x.caibx", "blob"], env=env, **kw)
    assert r.returncode == 0, r.stderr
    subprocess.run([casync, "make", "--store=local.castr", "local.caibx", "blob"], check=True, **kw)
    with open(f"{d}/srv/x.caibx", "rb") as a, open(f"{d}/local.caibx", "rb") as b:
        assert a.read() == b.read()
    srv = LocalStore(f"{d}/srv/default.castr", sync=False)
    with open(f"{d}/local.caibx", "rb") as f:
        want = {c.id for c in read_index(f)}
    assert set(srv.iter_chunk_ids()) == want
    # Half the chunks gone: a second push asks for those only, the others stay untouched.
    ids = sorted(want)
    for cid in ids[::2]:
        srv.remove_chunk(cid)
    kept = {cid: os.stat(srv.chunk_path(cid)).st_ino for cid in ids[1::2]}
    r = subprocess.run([casync, "make", f"{sshd.alias}:{d}/srv/x.caibx", "blob"], env=env, **kw)
    assert r.returncode == 0, r.stderr
    assert set(srv.iter_chunk_ids()) == want
    assert {cid: os.stat(srv.chunk_path(cid)).st_ino for cid in kept} == kept
    r = subprocess.run([casync, "extract", "--store=srv/default.castr", "srv/x.caibx", "out"], **kw)
    assert r.returncode == 0, r.stderr
    with open(f"{d}/out", "rb") as f:
        assert f.read() == blob


def test_sshd_casync_pushes_caidx_to_store_and_catar(sshd: SSHServer, tmp_path: object, casync: str) -> None:
    d = str(tmp_path)
    os.makedirs(f"{d}/tree/sub")
    _write(f"{d}/tree/a", rng_bytes(300_000, 8))
    _write(f"{d}/tree/sub/b", b"hello\n")
    os.mkdir(f"{d}/srv")
    env = sshd.env(remote=write_pycasync_remote(d))
    kw = {"cwd": d, "capture_output": True, "timeout": 120}
    remote = f"{sshd.alias}:{d}/srv"
    for args in ([f"--store={remote}/store", f"{remote}/t.caidx", "tree"], [f"{remote}/t.catar", "tree"]):
        r = subprocess.run([casync, "make", *args], env=env, **kw)
        assert r.returncode == 0, r.stderr
    want = subprocess.run([casync, "mtree", "tree"], check=True, **kw).stdout
    got_index = subprocess.run([casync, "mtree", "--store=srv/store", "srv/t.caidx"], check=True, **kw).stdout
    got_archive = subprocess.run([casync, "mtree", "srv/t.catar"], check=True, **kw).stdout
    assert got_index == want and got_archive == want
    assert sorted(os.listdir(f"{d}/srv")) == ["store", "t.caidx", "t.catar"]
