"""A real OpenSSH server on 127.0.0.1 for tests, with everything made in tmp.

:func:`start_sshd` generates a host key and a user key with ``ssh-keygen``,
writes an ``sshd_config`` listening on a free port of 127.0.0.1 (public-key
login only, for the current user, ``authorized_keys`` in the temp directory,
an ``sftp`` subsystem for later tests), starts ``sshd -D -e`` and waits for
the port. The client side is a generated ``ssh_config`` with a ``Host``
alias (:data:`HOST_ALIAS`) pointing there, the user key, a known-hosts file
holding the server's key and ``StrictHostKeyChecking yes``, plus a wrapper
script ``ssh -F CONFIG "$@"`` usable as ``CASYNC_SSH_PATH`` (which must be
one program). :func:`write_pycasync_remote` writes a one-word
``CASYNC_REMOTE_PATH`` running ``python -m pycasync`` from this checkout
(sshd gives sessions a bare environment, so it sets PYTHONPATH itself). The
``sshd`` fixture (session scope, in ``tests/conftest.py``) yields an
:class:`SSHServer` from :func:`start_sshd` and stops the server afterwards;
it skips when OpenSSH is missing, but fails under ``CI=true``.

For clients that read OpenSSH's config themselves (the sftp:// store, via
paramiko): :func:`write_ssh_home` writes a ``HOME`` whose ``.ssh/config``
has a ``Host`` alias with ``HostName``, ``Port``, ``User`` and, as asked, an
``IdentityFile``, a filled or empty ``UserKnownHostsFile`` and a
``StrictHostKeyChecking`` value; :func:`start_ssh_agent` runs a real
``ssh-agent`` holding given keys; :func:`require_paramiko` skips (fails
under ``CI=true``) without paramiko.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from tests.support import ROOT, free_port

__all__ = [
    "HOST_ALIAS",
    "SSHServer",
    "SSHAgent",
    "start_sshd",
    "require_openssh",
    "require_paramiko",
    "write_pycasync_remote",
    "write_ssh_home",
    "start_ssh_agent",
    "stop_process",
]

HOST_ALIAS = "pycasync-test-host"
SSHD = "/usr/sbin/sshd"


@dataclass
class SSHServer:
    """A running test sshd and the client files to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    user: str
    directory: str
    client_config: str  #: ssh_config with ``Host`` :data:`HOST_ALIAS`
    ssh_wrapper: str  #: ``ssh -F client_config "$@"``: a CASYNC_SSH_PATH
    user_key: str
    known_hosts: str
    log: str  #: sshd's stderr

    @property
    def alias(self) -> str:
        """The Host alias of the client config."""
        return HOST_ALIAS

    def env(self, remote: str | None = None) -> dict[str, str]:
        """``os.environ`` with CASYNC_SSH_PATH (and CASYNC_REMOTE_PATH when given) set."""
        env = dict(os.environ, CASYNC_SSH_PATH=self.ssh_wrapper)
        if remote is not None:
            env["CASYNC_REMOTE_PATH"] = remote
        return env

    def stop(self) -> None:
        """Stop the server (sessions still open end with it)."""
        stop_process(self.process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM a test server's process, and SIGKILL it when it has not exited within ``grace`` s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def write_pycasync_remote(directory: str) -> str:
    """Write ``DIR/pycasync-remote`` (runs this checkout's ``python -m pycasync "$@"``); its path."""
    path = os.path.join(directory, "pycasync-remote")
    script = f'#!/bin/sh\nPYTHONPATH="{ROOT}"\nexport PYTHONPATH\nexec "{sys.executable}" -m pycasync "$@"\n'
    _write(path, script, 0o755)
    return path


def require_openssh() -> str:
    """Path of sshd; skip the test without OpenSSH (fail under CI=true)."""
    tools = (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"))
    if any(not p or not os.access(p, os.X_OK) for p in tools):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("OpenSSH (sshd, ssh, ssh-keygen) is not installed, but CI=true requires it")
        pytest.skip("OpenSSH server or client is not installed")
    return SSHD


def _keygen(path: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pycasync-test", "-f", path],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(path + ".pub") as f:
        return f.read().strip()


def _write(path: str, text: str, mode: int = 0o600) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _server_config(d: str, port: int, user: str, forwarding: bool, log_level: str) -> str:
    return f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
AllowUsers {user}
PermitRootLogin yes
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitUserEnvironment no
X11Forwarding no
AllowTcpForwarding {"local" if forwarding else "no"}
PrintMotd no
LogLevel {log_level}
Subsystem sftp internal-sftp
"""


def _client_config(d: str, port: int, user: str) -> str:
    return f"""\
Host {HOST_ALIAS}
    HostName 127.0.0.1
Host *
    Port {port}
    User {user}
    IdentityFile {d}/user_key
    IdentitiesOnly yes
    UserKnownHostsFile {d}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
    ConnectTimeout 10
"""


def _wait_for_port(proc: subprocess.Popen[bytes], port: int, log: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"sshd exited with status {proc.returncode}: {f.read().strip()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not listen on 127.0.0.1:{port} within {timeout} s")


def start_sshd(directory: str, *, forwarding: bool = False, log_level: str = "ERROR") -> SSHServer:
    """Generate keys and configs in ``directory`` and start sshd there.

    ``forwarding`` lets clients open TCP connections through it (a ProxyJump
    host: ``AllowTcpForwarding local``); ``log_level`` is sshd's ``LogLevel``.
    """
    sshd_path = require_openssh()
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    except OSError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"cannot create /run/sshd for the test sshd: {exc}")
        pytest.skip(f"cannot create /run/sshd for the test sshd: {exc}")
    d = os.path.abspath(directory)
    user = getpass.getuser()
    host_pub = _keygen(os.path.join(d, "host_key"))
    _write(os.path.join(d, "authorized_keys"), _keygen(os.path.join(d, "user_key")) + "\n")
    for attempt in range(3):
        port = free_port()
        cfg = os.path.join(d, "sshd_config")
        _write(cfg, _server_config(d, port, user, forwarding, log_level))
        subprocess.run([sshd_path, "-t", "-f", cfg], check=True, capture_output=True)
        log = os.path.join(d, "sshd.log")
        with open(log, "wb") as err:
            proc = subprocess.Popen([sshd_path, "-D", "-e", "-f", cfg], stdin=subprocess.DEVNULL, stderr=err)
        try:
            _wait_for_port(proc, port, log)
            break
        except RuntimeError:
            proc.kill()
            proc.wait()
            if attempt == 2:
                raise
    known = "".join(f"[{h}]:{port} {host_pub}\n" for h in ("127.0.0.1", "localhost", HOST_ALIAS))
    _write(os.path.join(d, "known_hosts"), known)
    client = os.path.join(d, "ssh_config")
    _write(client, _client_config(d, port, user))
    wrapper = os.path.join(d, "ssh")
    _write(wrapper, f'#!/bin/sh\nexec ssh -F "{client}" "$@"\n', 0o755)
    return SSHServer(proc, port, user, d, client, wrapper, os.path.join(d, "user_key"),
                     os.path.join(d, "known_hosts"), log)  # fmt: skip


def _skip_or_fail(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why}, but CI=true requires it")
    pytest.skip(why)


def require_paramiko() -> None:
    """Skip the test without paramiko (the ``ssh`` extra); fail under CI=true."""
    try:
        import paramiko  # noqa: F401
    except ImportError:
        _skip_or_fail("paramiko is not installed")


def write_ssh_home(
    server: SSHServer,
    home: str,
    *,
    alias: str = HOST_ALIAS,
    identity: bool = True,
    known: bool = True,
    strict: str | None = "yes",
    extra: str = "",
) -> str:
    """Write ``HOME/.ssh/config`` (and ``known_hosts``) reaching ``server`` as ``alias``; the config's path.

    ``identity`` adds ``IdentityFile`` (the server's user key) and
    ``IdentitiesOnly yes``; ``known`` fills ``HOME/.ssh/known_hosts`` with the
    server's key (else it is empty); ``strict`` is ``StrictHostKeyChecking``
    (None leaves it unset); ``extra`` lines go into the ``Host`` block.
    """
    ssh = os.path.join(home, ".ssh")
    os.makedirs(ssh, mode=0o700, exist_ok=True)
    known_hosts = os.path.join(ssh, "known_hosts")
    text = ""
    if known:
        with open(server.known_hosts) as f:
            text = f.read()
    _write(known_hosts, text)
    lines = [f"Host {alias}", "    HostName 127.0.0.1", f"    Port {server.port}", f"    User {server.user}",
             f"    UserKnownHostsFile {known_hosts}", "    GlobalKnownHostsFile /dev/null"]  # fmt: skip
    if identity:
        lines += [f"    IdentityFile {server.user_key}", "    IdentitiesOnly yes"]
    if strict is not None:
        lines.append(f"    StrictHostKeyChecking {strict}")
    lines += ["    " + line for line in extra.splitlines() if line.strip()]
    config = os.path.join(ssh, "config")
    _write(config, "\n".join(lines) + "\n")
    return config


@dataclass
class SSHAgent:
    """A running ``ssh-agent`` listening on ``socket``."""

    process: subprocess.Popen[bytes]
    socket: str

    def stop(self) -> None:
        """Stop the agent."""
        stop_process(self.process)


def start_ssh_agent(directory: str, *keys: str) -> SSHAgent:
    """Start ``ssh-agent -D`` with its socket in ``directory`` and ``ssh-add`` each key file."""
    agent_path = shutil.which("ssh-agent")
    if not agent_path or not shutil.which("ssh-add"):
        _skip_or_fail("ssh-agent or ssh-add is not installed")
    sock = os.path.join(directory, "agent.sock")
    proc = subprocess.Popen([agent_path, "-D", "-a", sock], stdin=subprocess.DEVNULL,  # type: ignore[list-item]
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    agent = SSHAgent(proc, sock)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError("ssh-agent did not start")
        time.sleep(0.02)
    env = dict(os.environ, SSH_AUTH_SOCK=sock)
    for key in keys:
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
    return agent
