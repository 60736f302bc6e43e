"""sftp:// through the OpenSSH client (``$CASYNC_SSH_PATH``), on the real sshd fixture.

Where ssh is installed (or ``CASYNC_SSH_PATH`` names it), every SFTP session is ``PROGRAM -s ... -- HOST
sftp`` (recorded by a wrapper around the fixture's ``ssh -F CONFIG``): the
chunk and index stores work through it (parallel sessions, atomic writes,
prune), the CLI makes and extracts with it, and a failing ssh's own message
is the error. :func:`ssh_program` picks the client from the environment.
"""

from __future__ import annotations

import io
import os
import shutil
import threading

import pytest

from casync_format.digest import SHA512_256
from casync_format.errors import ChunkMissing, ParameterError, StoreError
from casync_store import LocalStore
from casync_store.plumbing.config import StoreOptions
from casync_store.stores.sftp import SFTP_CLIENT_ENV, SFTPIndexStore, SFTPStore, ssh_program
from tests.stores.test_sftp import FAST, chunk
from tests.support import ROOT
from tests.support.cli import ok, read, run
from tests.support.sshd import SSHServer, require_paramiko


@pytest.fixture
def openssh(sshd: SSHServer, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """CASYNC_SSH_PATH = a wrapper logging its arguments, then running the fixture's ssh; and the log."""
    require_paramiko()
    log = os.path.join(tmp_path, "ssh-argv.log")
    wrapper = os.path.join(tmp_path, "my-ssh")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{sshd.ssh_wrapper}" "$@"\n')
    os.chmod(wrapper, 0o755)
    monkeypatch.setenv("CASYNC_SSH_PATH", wrapper)
    monkeypatch.delenv(SFTP_CLIENT_ENV, raising=False)
    monkeypatch.delenv("PYCASYNC_SSH_CONFIG", raising=False)
    return wrapper, log


def _lines(path: str) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


def test_ssh_program_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CASYNC_SSH_PATH", raising=False)
    monkeypatch.delenv(SFTP_CLIENT_ENV, raising=False)
    assert ssh_program() == shutil.which("ssh")  # the installed ssh, as desync
    monkeypatch.setenv("PATH", "/nonexistent")
    assert ssh_program() is None  # no ssh program: paramiko's own SSH
    monkeypatch.setenv(SFTP_CLIENT_ENV, "openssh")
    assert ssh_program() == "ssh"
    monkeypatch.setenv("CASYNC_SSH_PATH", "/opt/ssh")
    assert ssh_program() == "/opt/ssh"
    monkeypatch.delenv(SFTP_CLIENT_ENV)
    assert ssh_program() == "/opt/ssh"  # as desync: $CASYNC_SSH_PATH is run
    monkeypatch.setenv(SFTP_CLIENT_ENV, "paramiko")
    assert ssh_program() is None
    monkeypatch.setenv(SFTP_CLIENT_ENV, "putty")
    with pytest.raises(ParameterError, match="openssh or paramiko"):
        ssh_program()


def test_chunk_store_through_openssh(sshd: SSHServer, openssh: tuple[str, str],
                                     tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    _, log = openssh
    root = os.path.join(tmp_path, "deep", "store")
    local = LocalStore(root, sync=False)
    options = StoreOptions(concurrency=3, error_retry=1, error_retry_base_interval=0.01)
    with SFTPStore(f"sftp://{sshd.user}@{sshd.alias}:{sshd.port}{root}", options) as store:
        assert store.openssh
        missing = chunk(99)[0]
        assert not store.has_chunk(missing)
        with pytest.raises(ChunkMissing):
            store.get_raw(missing)
        chunks = [chunk(i, 40_000 + i) for i in range(12)]
        errors: list[BaseException] = []

        def put(part: list[tuple[bytes, bytes, bytes]]) -> None:
            try:
                for cid, data, blob in part:
                    store.store_chunk(cid, data, blob)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(chunks[i::3],)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for cid, data, blob in chunks:
            assert local.get_raw(cid) == blob
            assert store.get_chunk(cid, SHA512_256, size=len(data)) == data
        assert sorted(store.iter_chunk_ids()) == sorted(c[0] for c in chunks)
        assert store.prune({chunks[0][0]}) == 11
        assert list(local.iter_chunk_ids()) == [chunks[0][0]]
    argv = _lines(log)
    assert 1 <= len(argv) <= 3  # at most -n sessions, each one ssh process
    assert set(argv) == {f"-s -p {sshd.port} -l {sshd.user} -- {sshd.alias} sftp"}


def test_index_store_through_openssh(sshd: SSHServer, openssh: tuple[str, str],
                                     tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    root = os.path.join(tmp_path, "indexes")
    os.mkdir(root)
    body = open(os.path.join(ROOT, "tests", "data", "desync", "blob1.caibx"), "rb").read()  # noqa: SIM115
    with SFTPIndexStore(f"sftp://{sshd.alias}{root}", FAST) as store:
        store.put_index("x.caibx", io.BytesIO(body), len(body))
        assert store.has_index("x.caibx") and not store.has_index("y.caibx")
        with store.open_index("x.caibx") as f:
            assert f.read() == body
    assert read(os.path.join(root, "x.caibx")) == body


def test_ssh_failure_is_its_message(sshd: SSHServer, openssh: tuple[str, str], tmp_path: os.PathLike[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    denied = SFTPStore(f"sftp://nobody-here@{sshd.alias}{tmp_path}", FAST)  # the key is not authorized
    with denied, pytest.raises(StoreError) as info:
        denied.has_chunk(b"\0" * 32)
    text = str(info.value)
    assert "\n" not in text and "cannot start SFTP through" in text
    assert "Permission denied" in text or "Connection closed" in text, text
    monkeypatch.setenv("CASYNC_SSH_PATH", os.path.join(tmp_path, "no-such-ssh"))
    absent = SFTPStore(f"sftp://{sshd.alias}{tmp_path}", FAST)
    with absent, pytest.raises(StoreError, match="cannot run"):
        absent.has_chunk(b"\0" * 32)


def test_cli_make_and_extract_through_openssh(env: dict[str, str], sshd: SSHServer, openssh: tuple[str, str],
                                              tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    wrapper, log = openssh
    d = str(tmp_path)
    src = os.path.join(d, "blob")
    content = os.urandom(700_000)
    with open(src, "wb") as f:
        f.write(content)
    os.makedirs(os.path.join(d, "remote", "indexes"))
    env = dict(env, CASYNC_SSH_PATH=wrapper)
    store_url = f"sftp://{sshd.alias}{d}/remote/store"
    index_url = f"sftp://{sshd.alias}{d}/remote/indexes/blob.caibx"
    ok(env, "make", "-n", "2", "-s", store_url, index_url, src)
    ok(env, "extract", "-s", store_url, index_url, os.path.join(d, "out"))
    assert read(os.path.join(d, "out")) == content
    assert run(env, "verify", "-s", store_url).returncode == 0
    assert _lines(log) and all(line.endswith(" sftp") for line in _lines(log))
