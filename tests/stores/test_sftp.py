"""The sftp:// chunk and index stores against a real OpenSSH server (tests/support/sshd.py).

One sshd serves the whole session; every store here connects to it through
paramiko's own SSH (``$PYCASYNC_SFTP_CLIENT=paramiko``: the OpenSSH client,
the default where ssh is installed, is tested in test_sftp_openssh.py) with
an ssh client config written for the test (a ``Host`` alias,
keys, known_hosts), so host-key policy, authentication (identity files, the
default ``~/.ssh/id_*``, a real ``ssh-agent``) and config discovery
(``HOME``, ``$PYCASYNC_SSH_CONFIG``) are exercised for real. The server's
files are on this machine, so a :class:`LocalStore` on the same directory
checks the layout and plants or damages files directly. The generic store
contract runs on SFTP too (``sftp`` in tests/stores/test_store_contract.py).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import (
    ChunkMissing,
    IndexNotFound,
    MissingDependency,
    ParameterError,
    StoreError,
)
from casync_store import CachedStore, LocalStore
from casync_store.ops.extract import extract
from casync_store.ops.make import make
from casync_store.plumbing.atomic import TEMP_PREFIX
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.http import MAX_BLOB_SIZE
from casync_store.stores.indexio import open_index
from casync_store.stores.indexstore import open_index_store
from casync_store.stores.location import open_store
from casync_store.stores.sftp import SFTPIndexStore, SFTPStore, parse_location
from tests.support.sshd import SSHServer, require_paramiko, start_ssh_agent, write_ssh_home

FAST = StoreOptions(error_retry=1, error_retry_base_interval=0.01)


@pytest.fixture(autouse=True)
def _paramiko_ssh(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are of paramiko's SSH (config, host keys, authentication), not of the ssh program."""
    monkeypatch.setenv("PYCASYNC_SFTP_CLIENT", "paramiko")


@pytest.fixture
def server(sshd: SSHServer) -> SSHServer:
    require_paramiko()
    return sshd


def chunk(seed: int, size: int = 5000) -> tuple[bytes, bytes, bytes]:
    """(id, data, blob) of a deterministic chunk."""
    data = seed.to_bytes(4, "little") * (size // 4)
    return SHA512_256(data), data, chunk_codec.encode(data, "gzip")


def url(server: SSHServer, path: str, host: str | None = None) -> str:
    return f"sftp://{host or server.alias}{urllib.parse.quote(path)}"


def sftp_store(
    server: SSHServer, path: str, options: StoreOptions = FAST, config: str | None = None
) -> SFTPStore:
    return SFTPStore(url(server, path), options, ssh_config=config or server.client_config)


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- locations ----------------------------------------------------------------------------------


def test_parse_location() -> None:
    loc = parse_location("sftp://alice@example.org:2222/srv/store/")
    assert (loc.user, loc.host, loc.port, loc.path) == ("alice", "example.org", 2222, "/srv/store")
    loc = parse_location("sftp://[::1]/a%20b//c")
    assert (loc.user, loc.host, loc.port, loc.path) == (None, "::1", None, "/a b/c")
    assert parse_location("SFTP://h/").path == "/"
    bad_locations = ("sftp://h", "sftp:///x", "sftp://h:0/x", "sftp://h:99999/x", "sftp://h:x/x",
                     "ssh://h/x", "sftp://-oProxyCommand=x/p", "sftp://a b/x", "sftp://u;x@h/p",
                     "sftp://h/a\x00b")  # fmt: skip
    for bad in bad_locations:
        with pytest.raises(ParameterError):
            parse_location(bad)
    with pytest.raises(ParameterError) as exc:
        parse_location("sftp://bob:hunter2@h/x")
    assert "hunter2" not in str(exc.value) and "***" in str(exc.value)


_NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=20).filter(
    lambda s: not s.startswith("-")
)
_SEGMENT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..") and "/" not in s
)


@given(
    user=st.none() | _NAME,
    host=_NAME,
    port=st.none() | st.integers(1, 65535),
    segments=st.lists(_SEGMENT, min_size=1, max_size=4),
)
def test_parse_location_round_trip(
    user: str | None, host: str, port: int | None, segments: list[str]
) -> None:
    path = "/" + "/".join(segments)
    netloc = (f"{user}@" if user else "") + host + (f":{port}" if port else "")
    loc = parse_location(f"sftp://{netloc}{urllib.parse.quote(path)}")
    assert (loc.user, loc.host.lower(), loc.port, loc.path) == (user, host.lower(), port, path)


def test_missing_paramiko(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setitem(sys.modules, "paramiko", None)  # import paramiko raises ImportError
    store = SFTPStore("sftp://h/x")  # constructing needs no paramiko: connecting does
    with pytest.raises(MissingDependency) as exc:
        store.has_chunk(b"\0" * 32)
    assert exc.value.extra == "ssh" and "pycasync[ssh]" in str(exc.value)


def test_uncompressed_refused() -> None:
    with pytest.raises(StoreError):
        SFTPStore("sftp://h/x", StoreOptions(uncompressed=True))


# --- the chunk store ----------------------------------------------------------------------------


def test_layout_read_write_prune(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(str(tmp_path), "deep", "store")  # made on the first write
    local = LocalStore(root, sync=False)
    with sftp_store(server, root) as store:
        missing = chunk(99)[0]
        assert not store.has_chunk(missing)
        with pytest.raises(ChunkMissing) as exc:
            store.get_raw(missing)
        assert missing.hex() in str(exc.value) and str(store) in str(exc.value)
        with pytest.raises(StoreError, match="does not exist"):
            list(store.iter_chunk_ids())
        chunks = [chunk(i) for i in range(5)]
        for cid, data, blob in chunks:
            store.store_chunk(cid, data, blob)
        cid, data, blob = chunks[0]
        assert os.path.isfile(os.path.join(root, cid.hex()[:4], cid.hex() + ".cacnk"))
        assert local.get_raw(cid) == blob and store.get_chunk(cid, SHA512_256, size=len(data)) == data
        other = chunk(50)
        local.put_raw(other[0], other[2])  # what another writer put there
        assert store.get_raw(other[0]) == other[2]
        assert sorted(store.iter_chunk_ids()) == sorted(local.iter_chunk_ids())
        # Prune: unreferenced chunks and stale temp files go; foreign and fresh temp files stay.
        prefix_dir = os.path.join(root, cid.hex()[:4])
        names = (TEMP_PREFIX + "old", TEMP_PREFIX + "new", "README")
        stale, fresh, foreign = (os.path.join(prefix_dir, n) for n in names)
        for p in (stale, fresh, foreign):
            with open(p, "wb") as f:
                f.write(b"x")
        os.utime(stale, (time.time() - 7200,) * 2)
        assert store.prune({cid}) == 5
        assert list(store.iter_chunk_ids()) == [cid]
        assert not os.path.exists(stale) and os.path.exists(fresh) and os.path.exists(foreign)
        store.remove_chunk(cid)
        store.remove_chunk(cid)
        assert list(store.iter_chunk_ids()) == []


def test_oversized_file_refused(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    local = LocalStore(str(tmp_path), sync=False)
    cid = chunk(1)[0]
    local.put_raw(cid, b"")
    os.truncate(local.chunk_path(cid), MAX_BLOB_SIZE + 1)  # sparse: cheap to make
    with sftp_store(server, str(tmp_path)) as store, pytest.raises(StoreError) as exc:
        store.get_raw(cid)
    assert "more than" in one_line(exc) and not isinstance(exc.value, ChunkMissing)
    assert cid.hex() in str(exc.value)


def test_unreadable_chunk_is_store_error(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    local = LocalStore(str(tmp_path), sync=False)
    cid = chunk(2)[0]
    os.makedirs(local.chunk_path(cid))  # a directory where the chunk belongs
    with sftp_store(server, str(tmp_path)) as store:
        with pytest.raises(StoreError) as exc:
            store.get_raw(cid)
        assert not isinstance(exc.value, ChunkMissing) and cid.hex() in one_line(exc)
        cid2, _data, blob = chunk(3)
        store.put_raw(cid2, blob)  # the session is still fine after an error status
        assert store.get_raw(cid2) == blob


def test_without_posix_rename(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    with sftp_store(server, str(tmp_path)) as store:
        store._posix_rename = False  # as with a server lacking posix-rename@openssh.com
        cid, _data, blob = chunk(4)
        store.put_raw(cid, blob)
        store.put_raw(cid, blob)  # the chunk exists: plain rename fails, the copy is the same
        assert store.get_raw(cid) == blob
    leftovers = [n for _t, _d, names in os.walk(str(tmp_path)) for n in names if n.startswith(TEMP_PREFIX)]
    assert not leftovers


def test_parallel_sessions(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    chunks = [chunk(1000 + i, 20000) for i in range(96)]
    errors: list[BaseException] = []
    with sftp_store(server, str(tmp_path), StoreOptions(concurrency=8)) as store:

        def work(k: int) -> None:
            try:
                mine = chunks[k::16]
                for cid, _data, blob in mine:
                    store.put_raw(cid, blob)
                for cid, data, _blob in chunks[(k + 1) % 16 :: 16]:
                    while not store.has_chunk(cid):
                        time.sleep(0.001)
                    assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        pool = store._pool
        assert 1 < pool._live <= 8 and len(pool._conns) <= 2  # 4 sessions per SSH connection
    assert sorted(LocalStore(str(tmp_path)).iter_chunk_ids()) == sorted(c[0] for c in chunks)


def test_dropped_connection_is_retried(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    cid, _data, blob = chunk(5)
    with sftp_store(server, str(tmp_path)) as store:
        store.put_raw(cid, blob)
        for conn in store._pool._conns:
            conn.transport.close()  # idle sessions whose connection dropped are not used again
        assert store.get_raw(cid) == blob
        drops = []

        def drop_once(sftp: object) -> object:
            if not drops:  # the connection dies in the middle of the operation
                drops.append(1)
                sftp.get_channel().get_transport().close()  # type: ignore[attr-defined]
            return sftp.stat(str(tmp_path))  # type: ignore[attr-defined]

        assert store._run("stat", drop_once) and drops == [1]
        store.retries = 0
        drops.clear()
        with pytest.raises(StoreError) as exc:
            store._run("stat the store", drop_once)
        assert "connection to" in one_line(exc) and f":{server.port}" in str(exc.value)
        assert "stat the store" in str(exc.value)
        assert store.get_raw(cid) == blob  # the next operation connects anew


def test_sftp_as_store_and_cache(
    server: SSHServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCASYNC_SSH_CONFIG", server.client_config)
    d = str(tmp_path)
    blob_path, out = os.path.join(d, "input"), os.path.join(d, "out")
    with open(blob_path, "wb") as f:
        f.write(os.urandom(600_000) * 2)
    remote_dir, cache_dir = os.path.join(d, "remote"), os.path.join(d, "cache")
    index_url = url(server, os.path.join(d, "indexes", "x.caibx"))  # the index on the server too
    with sftp_store(server, remote_dir) as remote:
        make(index_url, blob_path, store=remote)
    assert os.path.isfile(os.path.join(d, "indexes", "x.caibx"))
    with open_index(index_url) as index, sftp_store(server, cache_dir) as cache:
        remote = LocalStore(remote_dir)
        extract(index, out, CachedStore(remote, cache))
        assert same_file(out, blob_path)
        assert sorted(cache.iter_chunk_ids()) == sorted(remote.iter_chunk_ids())
        shutil.rmtree(remote_dir)  # now every chunk must come from the SFTP cache
        os.unlink(out)
        extract(index, out, CachedStore(LocalStore(remote_dir), cache))
        assert same_file(out, blob_path)


def same_file(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


# --- the index store ----------------------------------------------------------------------------


def test_index_store_round_trip(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    root = os.path.join(str(tmp_path), "indexes")
    payload = os.urandom(2_500_000)  # bigger than one read block
    with SFTPIndexStore(url(server, root), FAST, ssh_config=server.client_config) as store:
        assert not store.has_index("a.caibx")
        with pytest.raises(IndexNotFound) as exc:
            store.open_index("a.caibx")
        assert "a.caibx" in one_line(exc)
        store.put_index("a.caibx", io.BytesIO(payload), len(payload))
        assert store.has_index("a.caibx")
        with store.open_index("a.caibx") as f:
            assert f.read(10) == payload[:10]
            assert f.read() == payload[10:]
        store.put_index("a.caibx", io.BytesIO(b"new"), 3)  # replaced atomically
        with store.open_index("a.caibx") as f:
            assert f.read() == b"new"
        with pytest.raises(StoreError):  # a source shorter than announced uploads nothing
            store.put_index("b.caibx", io.BytesIO(b"short"), 100)
        assert not store.has_index("b.caibx")
        for bad in ("../x", "a/b", "", ".."):
            with pytest.raises(ParameterError):
                store.open_index(bad)
        os.mkdir(os.path.join(root, "dir.caibx"))
        with pytest.raises(StoreError):
            store.open_index("dir.caibx")
        store._posix_rename = False
        store.put_index("a.caibx", io.BytesIO(b"old server"), 10)
        with store.open_index("a.caibx") as f:
            assert f.read() == b"old server"
        for _ in range(10):  # readers closed: their sessions went back to the pool
            store.open_index("a.caibx").close()
    assert sorted(os.listdir(root)) == ["a.caibx", "dir.caibx"]


def test_index_store_through_backends(
    server: SSHServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYCASYNC_SSH_CONFIG", server.client_config)
    with open_index_store(url(server, str(tmp_path))) as store:
        assert isinstance(store, SFTPIndexStore)
        store.put_index("x.caidx", io.BytesIO(b"abc"), 3)
    with open(os.path.join(str(tmp_path), "x.caidx"), "rb") as f:
        assert f.read() == b"abc"


# --- connecting: config, host keys, authentication ------------------------------------------------


def test_config_from_home_and_env(
    server: SSHServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = os.path.join(str(tmp_path), "home")
    write_ssh_home(server, home, alias="from-home")
    other = write_ssh_home(server, os.path.join(str(tmp_path), "other"), alias="from-env")
    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("PYCASYNC_SSH_CONFIG", raising=False)
    store_dir = os.path.join(str(tmp_path), "store")
    with open_store(url(server, store_dir, "from-home"), FAST) as store:
        assert isinstance(store, SFTPStore) and not store.has_chunk(chunk(1)[0])
    monkeypatch.setenv("PYCASYNC_SSH_CONFIG", other)
    with SFTPStore(url(server, store_dir, "from-env"), FAST) as store:
        assert not store.has_chunk(chunk(1)[0])
    monkeypatch.setenv("PYCASYNC_SSH_CONFIG", os.path.join(str(tmp_path), "nonexistent"))
    with SFTPStore(url(server, store_dir, "from-env"), FAST) as store, pytest.raises(ParameterError):
        store.has_chunk(chunk(1)[0])


@pytest.mark.parametrize("strict", ["yes", "ask", None])
def test_unknown_host_refused(server: SSHServer, tmp_path: os.PathLike[str], strict: str | None) -> None:
    config = write_ssh_home(server, str(tmp_path), known=False, strict=strict)
    with sftp_store(server, str(tmp_path), config=config) as store, pytest.raises(StoreError) as exc:
        store.has_chunk(chunk(1)[0])
    text = one_line(exc)
    assert f"host key of [127.0.0.1]:{server.port} is not in known_hosts" in text
    assert "SHA256:" in text and str(store) in text


def test_strict_no_accepts_with_warning(
    server: SSHServer, tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = write_ssh_home(server, str(tmp_path), known=False, strict="no")
    caplog.set_level(logging.WARNING, "casync_store.stores.sftp")
    with sftp_store(server, str(tmp_path), config=config) as store:
        assert not store.has_chunk(chunk(1)[0])
    assert any("StrictHostKeyChecking=no" in r.getMessage() for r in caplog.records)
    assert os.path.getsize(os.path.join(str(tmp_path), ".ssh", "known_hosts")) == 0


def test_accept_new_then_changed_key(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    config = write_ssh_home(server, str(tmp_path), known=False, strict="accept-new")
    known = os.path.join(str(tmp_path), ".ssh", "known_hosts")
    with sftp_store(server, str(tmp_path), config=config) as store:
        assert not store.has_chunk(chunk(1)[0])
    with open(known) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"[127.0.0.1]:{server.port} ")
    config = write_ssh_home(server, str(tmp_path), known=False, strict="yes")
    with open(known, "w") as f:
        f.write(lines[0] + "\n")
    with sftp_store(server, str(tmp_path), config=config) as store:  # now known: accepted under "yes"
        assert not store.has_chunk(chunk(1)[0])
    with open(server.user_key + ".pub") as f:  # a different key of the same type for this host
        wrong = f.read().split()[:2]
    with open(known, "w") as f:
        f.write(f"[127.0.0.1]:{server.port} {wrong[0]} {wrong[1]}\n")
    for strict in ("yes", "accept-new"):
        config = write_ssh_home(server, str(tmp_path), known=True, strict=strict)
        with open(known, "w") as f:
            f.write(f"[127.0.0.1]:{server.port} {wrong[0]} {wrong[1]}\n")
        with sftp_store(server, str(tmp_path), config=config) as store, pytest.raises(StoreError) as exc:
            store.has_chunk(chunk(1)[0])
        assert "does not match known_hosts" in one_line(exc)


def test_authentication(
    server: SSHServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = os.path.join(str(tmp_path), "home")
    config = write_ssh_home(server, home, identity=False)
    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    store_dir = os.path.join(str(tmp_path), "store")
    who = f"{server.user}@127.0.0.1:{server.port}"
    # No key anywhere: one line naming user@host:port.
    with sftp_store(server, store_dir, config=config) as store, pytest.raises(StoreError) as exc:
        store.has_chunk(chunk(1)[0])
    assert f"authentication as {who} failed" in one_line(exc) and "no key" in str(exc.value)
    # A real ssh-agent holding the key, no IdentityFile: the agent's key is used.
    agent = start_ssh_agent(str(tmp_path), server.user_key)
    try:
        monkeypatch.setenv("SSH_AUTH_SOCK", agent.socket)
        with sftp_store(server, store_dir, config=config) as store:
            assert not store.has_chunk(chunk(1)[0])
    finally:
        agent.stop()
    monkeypatch.delenv("SSH_AUTH_SOCK")
    # OpenSSH's default identity file.
    shutil.copy(server.user_key, os.path.join(home, ".ssh", "id_ed25519"))
    with sftp_store(server, store_dir, config=config) as store:
        assert not store.has_chunk(chunk(1)[0])
    # A key the server does not know.
    stranger = os.path.join(str(tmp_path), "stranger")
    keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger]
    subprocess.run(keygen, check=True, capture_output=True)
    extra = f"IdentityFile {stranger}\nIdentitiesOnly yes"
    config = write_ssh_home(server, home, identity=False, extra=extra)
    with sftp_store(server, store_dir, config=config) as store, pytest.raises(StoreError) as exc:
        store.has_chunk(chunk(1)[0])
    assert f"authentication as {who} failed (1 key(s) refused)" in one_line(exc)


def test_connection_refused(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    config = write_ssh_home(server, str(tmp_path), extra=f"Port {port}")
    with open(config) as f:
        text = f.read().replace(f"    Port {server.port}\n", "")
    with open(config, "w") as f:
        f.write(text)
    with sftp_store(server, str(tmp_path), config=config) as store, pytest.raises(StoreError) as exc:
        store.get_raw(chunk(1)[0])
    assert f"cannot connect to {server.user}@127.0.0.1:{port}" in one_line(exc)


def test_proxy_command(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    relay = os.path.join(str(tmp_path), "relay.py")
    with open(relay, "w") as f:
        f.write(
            "import os, socket, sys, threading\n"
            "s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
            "def up():\n"
            "    while True:\n"
            "        b = os.read(0, 65536)\n"
            "        if not b: break\n"
            "        s.sendall(b)\n"
            "    s.shutdown(socket.SHUT_WR)\n"
            "threading.Thread(target=up, daemon=True).start()\n"
            "while True:\n"
            "    b = s.recv(65536)\n"
            "    if not b: break\n"
            "    os.write(1, b)\n"
        )
    config = write_ssh_home(server, str(tmp_path), extra=f"ProxyCommand {sys.executable} {relay} %h %p")
    cid, _data, blob = chunk(6)
    with sftp_store(server, str(tmp_path), config=config) as store:
        store.put_raw(cid, blob)
        assert store.get_raw(cid) == blob


def test_encrypted_store_is_a_local_encrypted_store(server: SSHServer, tmp_path: os.PathLike[str]) -> None:
    key = "6368616e676520746869732070617373776f726420746f206120736563726574"
    options = FAST.replace(encryption=True, encryption_key=key, encryption_algorithm="aes-256-gcm")
    local = LocalStore(str(tmp_path), sync=False, cipher=options.chunk_cipher())
    plain = LocalStore(str(tmp_path), sync=False)
    with sftp_store(server, str(tmp_path), options) as store:
        chunks = [chunk(i) for i in range(3)]
        for cid, data, blob in chunks:
            store.store_chunk(cid, data, blob)
        cid, data, blob = chunks[0]
        name = cid.hex() + ".cacnk.aes-256-gcm-50d64035"
        assert os.path.isfile(os.path.join(str(tmp_path), cid.hex()[:4], name))
        assert local.get_raw(cid) == blob and store.get_raw(cid) == blob
        local.put_raw(chunk(7)[0], chunk(7)[2])
        assert sorted(store.iter_chunk_ids()) == sorted(local.iter_chunk_ids()) and not plain.has_chunk(cid)
        assert store.get_chunk(chunk(7)[0], SHA512_256) == chunk(7)[1]
        assert store.prune({cid}) == 3 and list(local.iter_chunk_ids()) == [cid]
