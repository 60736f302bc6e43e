"""ProxyJump through a second real sshd: the user's ssh config reaches ``sftp://`` and ``ssh://`` stores.

A jump sshd (``start_sshd`` with TCP forwarding and a debug log) and the
session ``sshd`` fixture as the target; the client config names the target
``behind-jump`` with ``ProxyJump`` through the jump host, so the target is
reached only through it. ``sftp://`` runs the OpenSSH client with the
config of ``$HOME/.ssh/config``; ``ssh://`` (the casync protocol) runs
``$CASYNC_SSH_PATH``, here ``ssh -F CONFIG``. Each ``extract`` gives the
blob's bytes, and the jump host's log shows the forwarded connection to
the target's port.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from tests.support.cli import ok, read
from tests.support.sshd import SSHServer, require_paramiko, start_sshd, write_pycasync_remote

TARGET = "behind-jump"
Made = tuple[str, str, bytes]  #: store, index, data


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A second sshd that forwards TCP connections (the ProxyJump host), logging at DEBUG1."""
    server = start_sshd(str(tmp_path_factory.mktemp("jump")), forwarding=True, log_level="DEBUG1")
    try:
        yield server
    finally:
        server.stop()


def _host(name: str, server: SSHServer, extra: str = "") -> str:
    return (f"Host {name}\n    HostName 127.0.0.1\n    Port {server.port}\n    User {server.user}\n"
            f"    IdentityFile {server.user_key}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {server.known_hosts}\n    GlobalKnownHostsFile /dev/null\n"
            f"    StrictHostKeyChecking yes\n    BatchMode yes\n    LogLevel ERROR\n{extra}")  # fmt: skip


def _proxy_config(path: str, jump: SSHServer, target: SSHServer) -> str:
    """Write an ssh_config reaching ``target`` as :data:`TARGET` only through ``jump``; its path."""
    text = _host("the-jump-host", jump) + _host(TARGET, target, "    ProxyJump the-jump-host\n")
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def _forwarded(jump: SSHServer, port: int) -> int:
    """How many direct-tcpip connections to 127.0.0.1:PORT the jump host's log shows."""
    with open(jump.log, errors="replace") as f:
        log = f.read()
    return len(re.findall(rf"server_request_direct_tcpip: .* target 127\.0\.0\.1 port {port}\b", log))


@pytest.fixture
def made(env: dict[str, str], tmp_path: os.PathLike[str]) -> tuple[str, str, bytes]:
    """A blob made into a local store (the target sshd runs on this machine): store, index, data."""
    d = str(tmp_path)
    data = os.urandom(300_000) + bytes(200_000) + os.urandom(100_000)
    with open(f"{d}/blob", "wb") as f:
        f.write(data)
    ok(env, "make", "-s", f"{d}/store", f"{d}/blob.caibx", f"{d}/blob")
    return f"{d}/store", f"{d}/blob.caibx", data


def test_sftp_extract_through_proxyjump(
    env: dict[str, str], sshd: SSHServer, jump: SSHServer, made: Made, tmp_path: os.PathLike[str]
) -> None:
    require_paramiko()
    store, index, data = made
    ssh_dir = os.path.join(env["HOME"], ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    _proxy_config(os.path.join(ssh_dir, "config"), jump, sshd)
    env = {k: v for k, v in env.items() if k not in ("CASYNC_SSH_PATH", "PYCASYNC_SSH_CONFIG")}
    env["PYCASYNC_SFTP_CLIENT"] = "openssh"
    before = _forwarded(jump, sshd.port)
    out = os.path.join(tmp_path, "out")
    ok(env, "extract", "-s", f"sftp://{TARGET}{store}", index, out)
    assert read(out) == data
    remote_index = f"sftp://{TARGET}{index}"  # the index too, through the jump
    ok(env, "extract", "-s", f"sftp://{TARGET}{store}", remote_index, out + "2")
    assert read(out + "2") == data
    assert _forwarded(jump, sshd.port) > before


def test_ssh_extract_through_proxyjump(
    env: dict[str, str], sshd: SSHServer, jump: SSHServer, made: Made, tmp_path: os.PathLike[str]
) -> None:
    store, index, data = made
    d = str(tmp_path)
    config = _proxy_config(f"{d}/proxy_config", jump, sshd)
    wrapper = f"{d}/ssh-jump"
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec ssh -F "{config}" "$@"\n')
    os.chmod(wrapper, 0o755)
    env = dict(env, CASYNC_SSH_PATH=wrapper, CASYNC_REMOTE_PATH=write_pycasync_remote(d))
    before = _forwarded(jump, sshd.port)
    ok(env, "extract", "-s", f"ssh://{TARGET}{store}", index, f"{d}/out")
    assert read(f"{d}/out") == data
    assert _forwarded(jump, sshd.port) > before
