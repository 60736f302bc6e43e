"""SSH connections for the ``sftp://`` stores of :mod:`.sftp`, over paramiko.

This private module owns everything below the SFTP protocol: reading the
user's OpenSSH client config (``$PYCASYNC_SSH_CONFIG`` or ``~/.ssh/config``)
into a :class:`Target`, checking the server's host key against the
known-hosts files under the ``StrictHostKeyChecking`` policy (appending new
keys for ``accept-new``), authenticating with identity files, the ssh agent
and the default ``~/.ssh/id_*`` keys in OpenSSH's order (:func:`connect`),
and the :class:`SessionPool` that opens SFTP sessions lazily,
:data:`SESSIONS_PER_CONNECTION` per SSH connection, each used by one thread
at a time. :class:`PipeSessionPool` opens each session instead through the
OpenSSH client (``ssh -s HOST sftp``, as desync runs ``$CASYNC_SSH_PATH``),
paramiko's SFTP client speaking over the process's pipes
(:class:`PipeChannel`), so the whole of the user's ssh setup applies.
paramiko is imported only inside functions (:func:`load_paramiko`),
so importing this module needs no paramiko; connecting without it raises
:class:`MissingDependency` ``ssh``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import getpass
import hashlib
import logging
import os
import select
import shlex
import socket
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Callable

from casync_format.errors import MissingDependency, ParameterError, StoreError

from ..plumbing.config import StoreOptions

__all__ = [
    "DEFAULT_TIMEOUT",
    "PipeChannel",
    "PipeSessionPool",
    "SESSIONS_PER_CONNECTION",
    "SSH_CONFIG_ENV",
    "Session",
    "SessionPool",
    "Target",
    "connect",
    "load_paramiko",
    "reason",
    "resolve_target",
]

log = logging.getLogger(__name__.rpartition(".")[0] + ".sftp")  # logs as the stores did before the split

#: SFTP sessions (channels) sharing one SSH connection.
SESSIONS_PER_CONNECTION = 4
#: Environment variable naming the ssh client config to read instead of ``~/.ssh/config``.
SSH_CONFIG_ENV = "PYCASYNC_SSH_CONFIG"
DEFAULT_TIMEOUT = 60.0  # seconds, for connecting and for each request, when neither options nor config say
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
_known_hosts_lock = threading.Lock()


def load_paramiko() -> Any:
    """The paramiko module; MissingDependency ``ssh`` when it is not installed."""
    try:
        import paramiko
    except ImportError:
        raise MissingDependency("ssh", "paramiko") from None
    return paramiko


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def reason(exc: BaseException) -> str:
    """A short description of a failure: the OS error text, else the exception's."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


# --------------------------------------------------------------------------- connecting


@dataclass
class Target:
    """Where and how to connect, resolved once from the location and the ssh config."""

    name: str  #: the store, for messages
    hostname: str
    port: int
    user: str
    known_name: str  #: the host's name in known_hosts
    user_known: list[str]
    global_known: list[str]
    strict: str
    identity_files: list[str]
    identities_only: bool
    use_agent: bool
    proxy_command: str | None
    timeout: float
    compression: bool

    @property
    def who(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


def _ssh_config_path(override: str | None) -> tuple[str, bool]:
    """(path, explicit): an explicitly named config must exist, ``~/.ssh/config`` may not."""
    named = override or os.environ.get(SSH_CONFIG_ENV)
    return (os.path.expanduser(named), True) if named else (os.path.expanduser("~/.ssh/config"), False)


def resolve_target(
    name: str,
    host: str,
    user: str | None,
    url_port: int | None,
    options: StoreOptions,
    config_path: str | None,
) -> Target:
    """How to reach ``host`` for store ``name``; a user or port from the URL wins over the config."""
    paramiko = load_paramiko()
    path, explicit = _ssh_config_path(config_path)
    if explicit or os.path.exists(path):
        try:
            cfg = paramiko.SSHConfig.from_path(path).lookup(host)
        except OSError as exc:
            raise ParameterError(f"ssh config {path}: {exc.strerror}") from None
        except Exception as exc:  # paramiko's ConfigParseError and friends
            raise ParameterError(f"ssh config {path}: {exc}") from None
    else:
        cfg = {"hostname": host}

    def files(key: str, default: str) -> list[str]:
        return [os.path.expanduser(p) for p in shlex.split(cfg.get(key, default)) if p.lower() != "none"]

    if cfg.get("proxyjump", "none").lower() != "none":
        raise StoreError(f"store {name}: ProxyJump is not supported; use ProxyCommand ssh -W %h:%p JUMPHOST")
    hostname = cfg.get("hostname", host)
    try:
        port = url_port or int(cfg.get("port", 22))
        timeout = options.timeout or float(cfg.get("connecttimeout", DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise ParameterError(f"ssh config {path}: Host {host}: {exc}") from None
    alias = cfg.get("hostkeyalias", hostname)
    proxy = cfg.get("proxycommand")
    return Target(
        name=name,
        hostname=hostname,
        port=port,
        user=user or cfg.get("user") or getpass.getuser(),
        known_name=alias if port == 22 else f"[{alias}]:{port}",
        user_known=files("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2"),
        global_known=files("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2"),
        strict=cfg.get("stricthostkeychecking", "ask").lower(),
        identity_files=[os.path.expanduser(p) for p in cfg.get("identityfile", [])],
        identities_only=cfg.get("identitiesonly", "no").lower() == "yes",
        use_agent=cfg.get("identityagent", "SSH_AUTH_SOCK").lower() != "none",
        proxy_command=None if proxy is None or proxy.lower() == "none" else proxy,
        timeout=timeout,
        compression=cfg.get("compression", "no").lower() == "yes",
    )


def _host_keys(t: Target) -> Any:
    keys = load_paramiko().HostKeys()
    for path in t.global_known + t.user_known:
        try:
            keys.load(path)
        except OSError:  # absent or unreadable: OpenSSH goes on without it too
            continue
        except Exception as exc:  # paramiko skips bad lines, but not every kind of damage
            raise StoreError(f"store {t.name}: cannot read known_hosts file {path}: {exc}") from None
    return keys


def _prefer_known_types(transport: Any, known: dict[str, Any] | None) -> None:
    """Ask the server for a host key type we can check, as OpenSSH does."""
    if not known:
        return
    options = transport.get_security_options()
    wanted: list[str] = []
    for kind in known:
        wanted += ["rsa-sha2-512", "rsa-sha2-256", kind] if kind == "ssh-rsa" else [kind]
    available = list(options.key_types)
    first = [k for k in wanted if k in available]
    options.key_types = first + [k for k in available if k not in first]


def _check_host_key(t: Target, known: dict[str, Any] | None, key: Any) -> None:
    kind, shown = key.get_name(), f"{key.get_name()} key {_fingerprint(key)}"
    files = ", ".join(t.user_known) or "no UserKnownHostsFile"
    if known and kind in known:
        if known[kind] == key:
            return
        if t.strict in ("no", "off"):
            log.warning("host key of %s changed (%s); accepted: StrictHostKeyChecking=no",
                        t.known_name, shown)  # fmt: skip
            return
        raise StoreError(
            f"store {t.name}: host key of {t.known_name} does not match known_hosts ({files}): "
            f"{shown}; refused (the key changed, or someone is intercepting the connection)"
        )
    if t.strict in ("no", "off"):
        log.warning("host key of %s is unknown (%s); accepted: StrictHostKeyChecking=no", t.known_name, shown)
    elif t.strict == "accept-new" and t.user_known:
        _remember_host_key(t, key)
        log.info("added host key of %s (%s) to %s", t.known_name, shown, t.user_known[0])
    else:
        raise StoreError(
            f"store {t.name}: host key of {t.known_name} is not in known_hosts ({files}; {shown}); "
            f"add it (ssh-keyscan) or set StrictHostKeyChecking accept-new"
        )


def _remember_host_key(t: Target, key: Any) -> None:
    paramiko = load_paramiko()
    path = t.user_known[0]
    line = paramiko.hostkeys.HostKeyEntry([t.known_name], key).to_line()
    with _known_hosts_lock:  # connections of one process do not add the same line twice
        if _host_keys(t).check(t.known_name, key):
            return
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            with open(path, "a") as f:
                f.write(line)
        except OSError as exc:
            raise StoreError(f"store {t.name}: cannot add the host key to {path}: {exc.strerror}") from None


def _load_key(path: str) -> Any | None:
    """The private key in ``path``; None when absent, encrypted or not a key."""
    paramiko = load_paramiko()
    if not os.path.exists(path):
        return None
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        log.debug("identity file %s is encrypted: using it only through the agent", path)
    except (OSError, ValueError, paramiko.SSHException) as exc:
        log.debug("cannot load identity file %s: %s", path, exc)
    return None


def _public_blob(path: str) -> bytes | None:
    with contextlib.suppress(OSError, ValueError, IndexError), open(path + ".pub") as f:
        return base64.b64decode(f.read().split()[1])
    return None


def _candidate_keys(t: Target, agent_keys: list[Any]) -> list[Any]:
    """Keys to offer, in OpenSSH's order: identity files (or their agent copies), agent, defaults."""
    by_blob = {k.asbytes(): k for k in agent_keys}
    out: list[Any] = []
    for path in t.identity_files:
        key = _load_key(path)
        blob = _public_blob(path)
        if key is None and blob in by_blob:
            key = by_blob[blob]
        if key is not None:
            out.append(key)
    if not t.identities_only:
        out += agent_keys
    if not t.identity_files:
        out += [k for k in map(_load_key, (os.path.expanduser(f"~/.ssh/{n}") for n in _DEFAULT_KEYS)) if k]
    unique: dict[bytes, Any] = {}
    for key in out:
        unique.setdefault(key.asbytes(), key)
    return list(unique.values())


def _agent(t: Target) -> Any | None:
    paramiko = load_paramiko()
    if not t.use_agent:
        return None
    try:
        return paramiko.Agent()
    except (paramiko.SSHException, OSError) as exc:
        log.warning("store %s: not using the ssh agent: %s", t.name, exc)
        return None


def _authenticate(t: Target, transport: Any) -> None:
    paramiko = load_paramiko()
    agent = _agent(t)
    try:
        keys = _candidate_keys(t, list(agent.get_keys()) if agent else [])
        for key in keys:
            try:
                transport.auth_publickey(t.user, key)
            except paramiko.BadAuthenticationType:
                raise StoreError(f"store {t.name}: {t.who} does not accept public keys") from None
            except paramiko.AuthenticationException:
                continue
            if transport.is_authenticated():
                return
    finally:
        if agent is not None:
            agent.close()
    tried = f"{len(keys)} key(s) refused" if keys else "no key found (IdentityFile, agent, ~/.ssh/id_*)"
    raise StoreError(f"store {t.name}: authentication as {t.who} failed ({tried})")


def connect(t: Target) -> Any:
    """A new authenticated paramiko Transport; StoreError naming user@host:port otherwise."""
    paramiko = load_paramiko()
    try:
        if t.proxy_command:
            sock: Any = paramiko.ProxyCommand(t.proxy_command)
        else:
            sock = socket.create_connection((t.hostname, t.port), timeout=t.timeout)
            # Small requests must not wait for the delayed ACK of the last answer (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.gaierror as exc:
        raise StoreError(f"store {t.name}: cannot resolve {t.hostname} ({t.who}): {exc.strerror}") from None
    except OSError as exc:
        raise StoreError(f"store {t.name}: cannot connect to {t.who}: {exc.strerror or exc}") from None
    except paramiko.SSHException as exc:
        raise StoreError(f"store {t.name}: ProxyCommand for {t.who} failed: {exc}") from None
    transport = paramiko.Transport(sock)
    doing = "SSH handshake"
    try:
        transport.banner_timeout = transport.auth_timeout = t.timeout
        transport.use_compression(t.compression)
        known = _host_keys(t).lookup(t.known_name)
        _prefer_known_types(transport, known)
        transport.start_client(timeout=t.timeout)
        _check_host_key(t, known, transport.get_remote_server_key())
        doing = "authentication"
        _authenticate(t, transport)
    except (paramiko.SSHException, EOFError, OSError) as exc:
        transport.close()
        raise StoreError(f"store {t.name}: {doing} with {t.who} failed: {reason(exc)}") from None
    except BaseException:
        transport.close()
        raise
    return transport


# --------------------------------------------------------------------------- sessions


class Session:
    """One SFTP channel and the connection it runs over."""

    def __init__(self, conn: _Connection, client: Any) -> None:
        self.conn = conn
        self.client = client

    def alive(self) -> bool:
        return bool(self.conn.transport.is_active()) and not self.client.get_channel().closed


@dataclass
class _Connection:
    transport: Any
    sessions: int = 0


class SessionPool:
    """Up to ``size`` SFTP sessions over as few SSH connections as allowed, opened on demand."""

    def __init__(self, target: Callable[[], Target], size: int) -> None:
        self._target = target
        self.size = size
        self._idle: list[Session] = []
        self._conns: list[_Connection] = []
        self._live = 0
        self._closed = False
        self._cond = threading.Condition()
        self._connecting = threading.Lock()

    def acquire(self, name: str) -> Session:
        while True:
            with self._cond:
                while not (self._closed or self._idle or self._live < self.size):
                    self._cond.wait()
                if self._closed:
                    raise StoreError(f"store {name} is closed")
                if not self._idle:
                    self._live += 1
                    break
                session = self._idle.pop()
            if session.alive():
                return session
            self.release(session, False)  # its connection dropped while it was idle
        try:
            return self._open()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _open(self) -> Session:
        target = self._target()
        # One thread connects at a time, so sessions opened at once share the new connection.
        with self._connecting:
            with self._cond:  # a connection with room for one more channel, reserved under the lock
                self._conns = [c for c in self._conns if c.transport.is_active() or c.sessions]
                conn = next((c for c in self._conns if c.sessions < SESSIONS_PER_CONNECTION
                             and c.transport.is_active()), None)  # fmt: skip
                if conn is not None:
                    conn.sessions += 1
            if conn is None:
                conn = _Connection(connect(target), 1)
                with self._cond:
                    self._conns.append(conn)
        try:
            client = load_paramiko().SFTPClient.from_transport(conn.transport)
            if client is None:
                raise EOFError("the server refused the sftp subsystem")
            client.get_channel().settimeout(target.timeout)
        except Exception as exc:
            self._drop_conn(conn)
            raise StoreError(f"store {target.name}: cannot start SFTP on {target.who}: {exc}") from None
        return Session(conn, client)

    def _drop_conn(self, conn: _Connection) -> None:
        """One session of ``conn`` is gone; close the connection when it is dead or abandoned."""
        with self._cond:
            conn.sessions -= 1
            close = not conn.transport.is_active() or (conn.sessions == 0 and conn not in self._conns)
        if close:
            conn.transport.close()

    def release(self, session: Session, healthy: bool) -> None:
        with self._cond:
            if healthy and not self._closed:
                self._idle.append(session)
                self._cond.notify()
                return
            self._live -= 1
            self._cond.notify()
        with contextlib.suppress(Exception):
            session.client.close()
        self._drop_conn(session.conn)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            conns, self._conns = self._conns, []
            self._cond.notify_all()
        for s in idle:
            with contextlib.suppress(Exception):
                s.client.close()
        for c in conns:
            c.transport.close()


# --------------------------------------------------------------------------- OpenSSH pipes


class PipeChannel:
    """An ssh process's stdin and stdout as the socket-like channel paramiko's SFTPClient talks over.

    ``recv`` waits at most ``timeout`` seconds (then :class:`socket.timeout`);
    the last lines ssh writes on stderr are kept for error messages.
    """

    def __init__(self, argv: list[str], timeout: float | None) -> None:
        self.argv = argv
        self.timeout = timeout
        self.closed = False
        self._errors: collections.deque[str] = collections.deque(maxlen=5)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0)  # fmt: skip
        except OSError as exc:
            raise StoreError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        self._pump = threading.Thread(target=self._pump_errors, name="ssh-stderr", daemon=True)
        self._pump.start()

    def _pump_errors(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").strip()
            if line:
                log.debug("%s: %s", self.argv[0], line)
                self._errors.append(line)

    def last_error(self) -> str:
        """What ssh last said on stderr ("" when nothing)."""
        return self._errors[-1] if self._errors else ""

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def get_name(self) -> str:
        """The channel's name, for paramiko's log lines."""
        return f"ssh-pipe-{self.proc.pid}"

    def send(self, data: bytes) -> int:
        if self.closed:
            raise EOFError("the ssh process is closed")
        try:
            return os.write(self._in, data)
        except BrokenPipeError:
            raise EOFError(f"ssh exited ({self.last_error() or 'no message'})") from None

    def recv(self, n: int) -> bytes:
        if self.closed:
            return b""
        ready, _, _ = select.select([self._out], [], [], self.timeout)
        if not ready:
            raise socket.timeout("timed out")
        return os.read(self._out, n)

    def is_active(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._pump.join(1)  # its last words, for the error message


class PipeSessionPool(SessionPool):
    """A :class:`SessionPool` whose every session is an OpenSSH process running ``argv``."""

    def __init__(self, argv: list[str], name: str, size: int, timeout: float | None) -> None:
        super().__init__(lambda: None, size)  # type: ignore[arg-type, return-value]
        self.argv, self.name, self.timeout = argv, name, timeout

    def _open(self) -> Session:
        pipe = PipeChannel(self.argv, self.timeout)
        try:
            client = load_paramiko().SFTPClient(pipe)
        except Exception as exc:
            pipe.close()
            said = pipe.last_error() or reason(exc)
            command = " ".join(self.argv)
            raise StoreError(f"store {self.name}: cannot start SFTP through '{command}': {said}") from None
        return Session(_Connection(pipe, 1), client)
