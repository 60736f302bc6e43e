"""The ssh:// store: locations, injection refusals, sessions, errors, real sshd.

Most tests use a stand-in ``CASYNC_SSH_PATH`` that behaves like ssh without
the network: it drops ``-p PORT`` and the host and hands the rest, joined
by spaces, to ``sh -c`` (as sshd hands it to the remote user's shell), so
quoting is tested for real. The last tests go through a real OpenSSH sshd
on 127.0.0.1 (see ``tests/support/sshd.py``), both ways: our store against real
``casync pull`` and against ``pycasync pull``, and casync's client against
``pycasync pull``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading

import pytest

from casync_format import chunk as chunk_codec
from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, ParameterError, StoreError
from casync_store import LocalStore
from casync_store.plumbing.config import StoreOptions
from casync_store.stores import ssh as ssh_mod
from casync_store.stores.location import open_store
from casync_store.stores.ssh import SSHStore, parse_location
from tests.support import ROOT, rng_bytes
from tests.support.sshd import SSHServer, write_pycasync_remote

Chunks = tuple[str, dict[bytes, bytes]]


def _fill(path: str, count: int, seed: int) -> dict[bytes, bytes]:
    store = LocalStore(path, sync=False)
    out = {}
    for i in range(count):
        data = rng_bytes(500 + 31 * i, seed * 1000 + i)
        cid = SHA512_256(data)
        store.put_raw(cid, chunk_codec.encode(data))
        out[cid] = data
    return out


@pytest.fixture
def chunks(tmp_path: object) -> Chunks:
    """A store directory with 20 chunks, and {id: data}."""
    path = os.path.join(str(tmp_path), "store")
    return path, _fill(path, 20, 1)


@pytest.fixture
def fake_ssh(tmp_path: object) -> str:
    """A CASYNC_SSH_PATH that runs the command here, through sh -c, as sshd would."""
    path = os.path.join(str(tmp_path), "fake-ssh")
    with open(path, "w") as f:
        f.write('#!/bin/sh\nif [ "$1" = "-p" ]; then shift 2; fi\nshift 1\nexec sh -c "$*"\n')
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def pycasync_remote(tmp_path: object) -> str:
    return write_pycasync_remote(str(tmp_path))


def _check_all(store: SSHStore, want: dict[bytes, bytes]) -> None:
    for cid, data in want.items():
        assert store.get_chunk(cid, SHA512_256) == data


# --------------------------------------------------------------------------- locations


@pytest.mark.parametrize(
    ("location", "host", "user", "port", "path", "destination"),
    [
        ("ssh://host/srv/store", "host", None, None, "/srv/store", "host"),
        ("ssh://me@h.example.org:2222/s", "h.example.org", "me", 2222, "/s", "me@h.example.org"),
        ("ssh://[fe80::1%eth0]/x", "[fe80::1%eth0]", None, None, "/x", "fe80::1%eth0"),
        ("ssh://[::1]:22/x", "[::1]", None, 22, "/x", "::1"),
        ("SSH://u_1@h-1/a%20b/c?d#e", "h-1", "u_1", None, "/a b/c?d#e", "u_1@h-1"),
        ("ssh://host/st'ore $(x);y", "host", None, None, "/st'ore $(x);y", "host"),
    ],
)
def test_parse_location(location: str, host: str, user: str | None, port: int | None, path: str,
                        destination: str) -> None:  # fmt: skip
    loc = parse_location(location)
    assert (loc.host, loc.user, loc.port, loc.path, loc.destination) == (host, user, port, path, destination)


@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("ssh://-oProxyCommand=touch%20pwned/p", "host"),
        ("ssh://-oProxyCommand=x@host/p", "user name"),
        ("ssh://%2Doops@host/p", "user name"),
        ("ssh://-host/p", "host"),
        ("ssh://ho st/p", "host"),
        ("ssh://ho%20st/p", "host"),
        ("ssh://ho'st/p", "host"),
        ('ssh://ho"st/p', "host"),
        ("ssh://ho`x`st/p", "host"),
        ("ssh://ho\nst/p", "host"),
        ("ssh://ho;st/p", "host"),
        ("ssh://us%20er@host/p", "user name"),
        ("ssh://us'er@host/p", "user name"),
        ("ssh://user:secret@host/p", "passwords"),
        ("ssh://host:0/p", "port"),
        ("ssh://host:99999/p", "port"),
        ("ssh://host:-p1/p", "port"),
        ("ssh://host:/p", "port"),
        ("ssh://host", "no path"),
        ("ssh://host/", "no path"),
        ("ssh:///p", "host"),
        ("ssh://host/p%0Aq", "control"),
        ("http://host/p", "not an ssh"),
    ],
)
def test_refused_locations(location: str, match: str) -> None:
    with pytest.raises(ParameterError, match=match):
        parse_location(location)


def test_password_is_not_echoed() -> None:
    with pytest.raises(ParameterError) as info:
        parse_location("ssh://user:hunter2@host/p")
    assert "passwords" in str(info.value) and "hunter2" not in str(info.value)


def test_command_line_quotes_the_path() -> None:
    store = SSHStore("ssh://u@h:2222/a b/$(x)'y", ssh_path="S", remote_path="R")
    assert store.argv == ["S", "-p", "2222", "u@h", "R", "pull", "-", "-", "-", shlex.quote("/a b/$(x)'y")]
    plain = SSHStore("ssh://h/srv/store", ssh_path="S", remote_path="R")
    assert plain.argv == ["S", "h", "R", "pull", "-", "-", "-", "/srv/store"]  # casync's exact form


def test_environment_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "")
    assert SSHStore("ssh://h/s").argv[:3] == ["ssh", "h", "casync"]
    monkeypatch.setenv("CASYNC_SSH_PATH", "/opt/my ssh")
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "desync")
    assert SSHStore("ssh://h/s").argv[:3] == ["/opt/my ssh", "h", "desync"]


def test_open_store_and_options() -> None:
    store = open_store("ssh://h/s", StoreOptions(concurrency=7, skip_verify=True))
    assert isinstance(store, SSHStore) and store.max_sessions == 7 and not store.verify
    assert str(store) == "ssh://h/s"
    assert SSHStore("ssh://h/s").max_sessions == ssh_mod.DEFAULT_SESSIONS
    with pytest.raises(StoreError, match="uncompressed"):
        open_store("ssh://h/s", StoreOptions(uncompressed=True))


# --------------------------------------------------------------------------- sessions (stand-in ssh)


def test_against_our_pull_with_hostile_path(tmp_path: object, fake_ssh: str, pycasync_remote: str) -> None:
    name = "st ore;touch PWNED$(touch PWNED2)`touch PWNED3`'q\"\\"
    path = os.path.join(str(tmp_path), name)
    want = _fill(path, 5, 2)
    location = "ssh://host" + path.replace("%", "%25")
    with SSHStore(location, ssh_path=fake_ssh, remote_path=pycasync_remote) as store:
        _check_all(store, want)
        with pytest.raises(ChunkMissing, match="ssh://host"):
            store.get_raw(b"\1" * 32)
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("PWNED")]
    assert not [n for n in os.listdir(os.getcwd()) if n.startswith("PWNED")]


@pytest.mark.parametrize("remote", ["casync", "pycasync"])
def test_pool_threads_repeats_and_clean_close(
    remote: str, chunks: Chunks, fake_ssh: str, pycasync_remote: str, casync: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    # casync's pull ignores a second request for the same id in a session: repeats must still work.
    monkeypatch.setattr(ssh_mod, "_RECENT_COUNT", 0)
    path, want = chunks
    remote_path = casync if remote == "casync" else pycasync_remote
    options = StoreOptions(concurrency=3, timeout=20)
    store = SSHStore(f"ssh://host{path}", options, ssh_path=fake_ssh, remote_path=remote_path)
    errors: list[BaseException] = []
    peak = [0]

    def work(seed: int) -> None:
        try:
            for cid in list(want)[seed:] + list(want)[:seed]:
                assert store.get_chunk(cid, SHA512_256) == want[cid]
                peak[0] = max(peak[0], store._live)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and 1 <= peak[0] <= 3
    assert store.has_chunk(next(iter(want))) and not store.has_chunk(b"\2" * 32)
    procs = [s.proc for s in store._idle]
    store.close()
    assert procs and all(p.returncode == 0 for p in procs)  # GOODBYE: they left on their own
    assert store._live == 0
    with pytest.raises(StoreError, match="closed"):
        store.get_raw(next(iter(want)))


def test_has_chunk_then_get_raw_is_one_transfer(chunks: Chunks, fake_ssh: str, casync: str) -> None:
    path, want = chunks
    cid = next(iter(want))
    with SSHStore(f"ssh://host{path}", StoreOptions(concurrency=1, timeout=20), ssh_path=fake_ssh,
                  remote_path=casync) as store:  # fmt: skip
        assert store.has_chunk(cid)
        session = store._idle[0]
        assert store.get_chunk(cid, SHA512_256) == want[cid]
        assert store._idle == [session] and session.asked == {cid}


# --------------------------------------------------------------------------- failures


_FAKE_REMOTE = """\
import sys
sys.path.insert(0, {root!r})
from casync_format import protocol as P
mode = {mode!r}
read, write = sys.stdin.buffer.read, sys.stdout.buffer
P.read_message(read)
write.write(P.encode(P.Hello(P.READABLE_STORE))); write.flush()
req = P.read_message(read)
if mode == "abort":
    write.write(P.encode(P.Abort(5, "disk on fire"))); write.flush(); sys.exit(1)
if mode == "wrong":
    write.write(P.encode(P.Missing(bytes(32)))); write.flush(); sys.exit(0)
write.write(P.encode(P.Chunk(req.ids[0], {blob!r}))); write.flush()
P.read_message(read)
sys.stderr.write("remote: giving up\\n")
sys.exit(3)
"""


def _fake_remote(tmp_path: object, mode: str, blob: bytes = b"") -> str:
    script = os.path.join(str(tmp_path), f"remote-{mode}.py")
    with open(script, "w") as f:
        f.write(_FAKE_REMOTE.format(root=ROOT, mode=mode, blob=blob))
    return f"{shlex.quote(sys.executable)} {shlex.quote(script)}"


def test_remote_exiting_mid_session(tmp_path: object, chunks: Chunks, fake_ssh: str) -> None:
    path, want = chunks
    first, second = list(want)[:2]
    remote = _fake_remote(tmp_path, "die", chunk_codec.encode(want[first]))
    options = StoreOptions(concurrency=1)
    with SSHStore(f"ssh://host{path}", options, ssh_path=fake_ssh, remote_path=remote) as store:
        assert store.get_chunk(first, SHA512_256) == want[first]
        with pytest.raises(StoreError) as info:
            store.get_raw(second)
    text = str(info.value)
    assert f"ssh://host{path}" in text and "session to host" in text and second.hex() in text
    assert "exited with status 3" in text and "remote: giving up" in text


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("abort", "remote aborted: disk on fire"),
        ("wrong", "protocol error: unexpected missing for chunk 0000"),
    ],
)
def test_remote_misbehaving(tmp_path: object, fake_ssh: str, mode: str, match: str) -> None:
    store = SSHStore("ssh://host/s", ssh_path=fake_ssh, remote_path=_fake_remote(tmp_path, mode))
    with pytest.raises(StoreError, match=match) as info:
        store.get_raw(b"\7" * 32)
    assert (b"\7" * 32).hex() in str(info.value)
    store.close()


@pytest.mark.parametrize(
    ("remote", "match"),
    [
        ("echo 'bash: casync: command not found' >&2; exit 127 #", "status 127.*command not found"),
        ("echo hello, this is a login banner #", "not a casync protocol message: b'hello, this is "),
        ("exec sleep 30 #", "no answer within 0.5 s"),
        ("exec /nonexistent/casync", "while starting"),
    ],
)
def test_remote_that_cannot_start(fake_ssh: str, remote: str, match: str) -> None:
    store = SSHStore("ssh://somehost/s", StoreOptions(timeout=0.5), ssh_path=fake_ssh, remote_path=remote)
    with pytest.raises(StoreError, match=match) as info:
        store.get_raw(b"\7" * 32)
    assert "somehost" in str(info.value)
    assert store._live == 0
    store.close()


def test_ssh_program_missing() -> None:
    store = SSHStore("ssh://h/s", ssh_path="/nonexistent/ssh")
    with pytest.raises(StoreError, match="cannot run '/nonexistent/ssh'"):
        store.has_chunk(b"\0" * 32)


# --------------------------------------------------------------------------- real sshd


def test_sshd_our_store_against_casync_pull(sshd: SSHServer, chunks: Chunks, casync: str) -> None:
    path, want = chunks
    env_ssh = sshd.env()["CASYNC_SSH_PATH"]
    location = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}{path}"  # the port travels as ssh -p
    options = StoreOptions(concurrency=2, timeout=30)
    with SSHStore(location, options, ssh_path=env_ssh, remote_path=casync) as store:
        _check_all(store, want)
        with pytest.raises(ChunkMissing):
            store.get_raw(b"\3" * 32)


def test_sshd_our_store_against_our_pull(sshd: SSHServer, chunks: Chunks, pycasync_remote: str) -> None:
    path, want = chunks
    with SSHStore(f"ssh://{sshd.alias}{path}", StoreOptions(timeout=30), ssh_path=sshd.ssh_wrapper,
                  remote_path=pycasync_remote) as store:  # fmt: skip
        _check_all(store, want)
        assert not store.has_chunk(b"\3" * 32)


def test_sshd_cli_extract_from_ssh_store(sshd: SSHServer, tmp_path: object, casync: str) -> None:
    d = str(tmp_path)
    blob = rng_bytes(400_000, 3)
    with open(os.path.join(d, "blob"), "wb") as f:
        f.write(blob)
    run = {"cwd": d, "check": True, "capture_output": True, "timeout": 60}
    subprocess.run([casync, "make", "--store=store", "x.caibx", "blob"], **run)
    env = dict(sshd.env(remote=casync), PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "pycasync", "extract", "-n", "2", "-s", f"ssh://{sshd.alias}{d}/store",
                        "x.caibx", "out"], cwd=d, env=env, capture_output=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    with open(os.path.join(d, "out"), "rb") as f:
        assert f.read() == blob


def test_sshd_casync_client_against_our_pull(sshd: SSHServer, tmp_path: object, casync: str,
                                             pycasync_remote: str) -> None:  # fmt: skip
    d = str(tmp_path)
    blob = rng_bytes(500_000, 4)
    with open(os.path.join(d, "blob"), "wb") as f:
        f.write(blob)
    run = {"cwd": d, "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([casync, "make", "x.caibx", "blob"], **run)  # chunks in default.castr
    env = sshd.env(remote=pycasync_remote)
    remote = f"{sshd.alias}:{d}"
    subprocess.run([casync, "extract", f"--store={remote}/default.castr", "x.caibx", "out1"], env=env, **run)
    subprocess.run([casync, "extract", f"{remote}/x.caibx", "out2"], env=env, **run)  # the index travels too
    for name in ("out1", "out2"):
        with open(os.path.join(d, name), "rb") as f:
            assert f.read() == blob
