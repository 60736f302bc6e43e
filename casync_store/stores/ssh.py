"""The ``ssh://[user@]host[:port]/path`` store: chunks from a remote casync.

:class:`SSHStore` runs ``$CASYNC_SSH_PATH`` (default ``ssh``) as
``ssh [-p PORT] [USER@]HOST $CASYNC_REMOTE_PATH pull - - - PATH``
(``$CASYNC_REMOTE_PATH`` defaults to ``casync``; ``pycasync`` and ``desync``
serve the same command) and speaks casync's protocol
(:mod:`casync_format.protocol`) as a client over the pipes, one chunk
request at a time per session. Up to ``options.concurrency`` sessions
(default :data:`DEFAULT_SESSIONS`) are started lazily and shared by threads.
The store is read-only. A chunk's whole answer is due within
``options.timeout`` (desync's one minute when unset, negative = no limit),
however slowly the remote sends it; starting a session (the HELLO) is
limited only when a timeout is set, since ssh may be asking for a password.

Safety: a location can never become ssh options or remote shell words. The
host and user must look like a host and a user name (never starting with
``-``; no spaces, quotes, control or shell characters), the port is a
number, and the path is quoted for the remote shell, which is what ssh hands
the command line to. Every failure names the store, the host and the chunk:
a remote that exits (with its last words on stderr), one that speaks
garbage or aborts, a chunk the remote does not have (:class:`ChunkMissing`).

casync's own ``pull`` silently ignores a request for a chunk it was already
asked for in the same session, so a session never asks twice: a repeated id
goes to another session, or a fresh one, and recently fetched answers are
remembered so ``has_chunk`` followed by ``get_raw`` costs one transfer.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import select
import shlex
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass

from casync_format import chunk as chunk_codec
from casync_format import protocol as proto
from casync_format.errors import ChunkMissing, FormatError, ParameterError, StoreError

from ..plumbing.config import StoreOptions
from ..plumbing.locparse import redact
from ._httpclient import effective_timeout
from .base import Store

__all__ = ["SSHStore", "SSHLocation", "open_ssh", "parse_location", "DEFAULT_SESSIONS"]

#: Sessions per store when ``options.concurrency`` is 0.
DEFAULT_SESSIONS = 4
_SESSION_MAX_IDS = 1 << 16  # a session is retired after this many ids (bounds its "asked" set)
_RECENT_COUNT = 64  # answers remembered for has_chunk/get_raw pairs and repeats
_RECENT_BYTES = 32 * 1024 * 1024
_STDERR_TAIL = 2048
_CLOSE_WAIT = 5.0
_HOST = re.compile(r"[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\]")
_USER = re.compile(r"[A-Za-z0-9_.-]+")
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True)
class SSHLocation:
    """The parts of an ``ssh://`` location, validated."""

    host: str
    path: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        """``[user@]host`` as ssh takes it (IPv6 without brackets)."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return f"{self.user}@{host}" if self.user else host


def _refuse(location: str, what: str) -> ParameterError:
    shown = redact(location)  # never echo a password
    return ParameterError(f"ssh store location {shown!r}: {what}")


def parse_location(location: str) -> SSHLocation:
    """Split and validate ``ssh://[user@]host[:port]/path``; raises ParameterError.

    The path is percent-decoded (as desync does); ``?`` and ``#`` are part of it.
    """
    scheme, sep, rest = location.partition("://")
    if not sep or scheme.lower() != "ssh":
        raise _refuse(location, "not an ssh:// location")
    netloc, slash, path = rest.partition("/")
    if not slash or not path:
        raise _refuse(location, "no path after the host (ssh://host/path/to/store)")
    userinfo, at, hostport = netloc.rpartition("@")
    user = urllib.parse.unquote(userinfo) if at else None
    if user is not None and ":" in user:
        raise _refuse(location, "passwords in ssh locations are not supported (use keys or ssh's config)")
    if user is not None and (not _USER.fullmatch(user) or user.startswith("-")):
        raise _refuse(location, f"user name {user!r} is not allowed (letters, digits, '_', '.', '-')")
    host, port = _split_port(location, hostport)
    if not host or not _HOST.fullmatch(host) or host.startswith("-"):
        raise _refuse(location, f"host {host!r} is not allowed (a host name, alias or [IPv6])")
    path = urllib.parse.unquote("/" + path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise _refuse(location, "control characters in the path")
    return SSHLocation(host, path, user, port)


def _split_port(location: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        host, rest = (hostport[: end + 1], hostport[end + 1 :]) if end > 0 else (hostport, "")
        if rest and not rest.startswith(":"):
            raise _refuse(location, f"host {hostport!r} is not allowed")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise _refuse(location, f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


class _StderrTail:
    """Drains a child's stderr in a thread, keeping its last bytes for error messages."""

    def __init__(self, stream: object) -> None:
        self._stream = stream
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="pycasync-ssh-stderr", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        read = self._stream.read  # type: ignore[attr-defined]
        while True:
            try:
                block = read(4096)
            except (OSError, ValueError):
                return
            if not block:
                return
            with self._lock:
                self._buf += block
                del self._buf[:-_STDERR_TAIL]

    def text(self, wait: float = 0.0) -> str:
        """The last lines the child wrote to stderr, on one line."""
        self._thread.join(wait)
        with self._lock:
            raw = bytes(self._buf)
        lines = [ln.strip() for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
        return "; ".join(lines[-3:])[-400:]


class _Session:
    """One ssh process speaking the protocol, used by one thread at a time."""

    def __init__(self, store: SSHStore) -> None:
        self.store = store
        self.asked: set[bytes] = set()
        self.buf = bytearray()
        try:
            self.proc = subprocess.Popen(
                store.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0
            )
        except OSError as exc:
            raise StoreError(f"store {store}: cannot run {store.argv[0]!r}: {exc.strerror}") from None
        self.tail = _StderrTail(self.proc.stderr)
        self.fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        self.limit: float | None = None  # seconds the current exchange may take (None: no limit)
        self.deadline = 0.0  # when it must have ended

    # -------------------------------------------------------------- raw I/O

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self.proc.stdin.write(view)  # type: ignore[union-attr]
            view = view[n or 0 :]

    def _read(self, n: int) -> bytes:
        if not self.buf:
            # The whole answer is due by the deadline, however slowly the remote drips it.
            if self.limit is not None:
                left = self.deadline - time.monotonic()
                if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                    raise TimeoutError(f"no answer within {self.limit:g} s")
            self.buf += os.read(self.fd, max(n, 256 * 1024))
            if not self.buf:
                return b""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _exchange(self, msg: proto.Message, limit: float | None) -> proto.Message | None:
        """Send a message and read the whole answer within ``limit`` s (None: the remote closed the pipe)."""
        self.limit = limit
        self.deadline = time.monotonic() + (limit or 0.0)
        # A remote that is gone breaks the pipe: what it said before leaving explains why.
        with contextlib.suppress(BrokenPipeError):
            self._write(proto.encode(msg))
        return proto.read_message(self._read)

    def _fail(self, doing: str, detail: str, grace: float = 0.2) -> StoreError:
        """End the session; an error saying what happened, with the remote's last words."""
        status = self.end(grace)
        exited = f"exited with status {status}" if status is not None else "failed"
        said = self.tail.text(wait=1.0)
        said = f" (remote said: {said})" if said else ""
        where = self.store.location.destination
        return StoreError(f"store {self.store}: session to {where} {exited} {doing}: {detail}{said}")

    # -------------------------------------------------------------- protocol

    def handshake(self) -> None:
        """Exchange HELLOs; the remote must offer a readable store."""
        doing = "while starting"
        try:
            msg = self._exchange(proto.Hello(proto.PULL_CHUNKS), self.store.start_timeout)
        except TimeoutError as exc:
            raise self._fail(doing, str(exc), 0.0) from None
        except (OSError, FormatError) as exc:
            raise self._fail(doing, str(exc)) from None
        if msg is None:
            raise self._fail(doing, "connection closed before hello", 2.0)
        if isinstance(msg, proto.Abort):
            raise self._fail(doing, f"remote aborted: {msg.reason or 'no reason given'}")
        if not isinstance(msg, proto.Hello):
            raise self._fail(doing, f"protocol error: expected hello, got {proto.type_name(msg.TYPE)}")
        try:
            proto.check_hello(proto.PULL_CHUNKS, msg.flags)
        except FormatError as exc:
            raise self._fail(doing, str(exc)) from None

    def request(self, chunk_id: bytes) -> bytes | None:
        """The chunk's blob as sent (compressed), or None when the remote lacks it."""
        self.asked.add(chunk_id)
        doing = f"while fetching chunk {chunk_id.hex()}"
        try:
            msg = self._exchange(proto.Request((chunk_id,), proto.REQUEST_HIGH_PRIORITY), self.store.timeout)
        except TimeoutError as exc:
            raise self._fail(doing, str(exc), 0.0) from None
        except (OSError, FormatError) as exc:
            raise self._fail(doing, str(exc)) from None
        if msg is None:
            raise self._fail(doing, "connection closed", 2.0)
        if isinstance(msg, proto.Abort):
            raise self._fail(doing, f"remote aborted: {msg.reason or 'no reason given'}")
        if not isinstance(msg, (proto.Chunk, proto.Missing)) or msg.chunk_id != chunk_id:
            got = proto.type_name(msg.TYPE)
            if isinstance(msg, (proto.Chunk, proto.Missing)):
                got += f" for chunk {msg.chunk_id.hex()}"
            raise self._fail(doing, f"protocol error: unexpected {got}")
        if isinstance(msg, proto.Missing):
            return None
        return msg.data if msg.compressed else chunk_codec.encode(msg.data)

    def end(self, grace: float = 0.0) -> int | None:
        """Close its input, give the process ``grace`` seconds, then kill it.

        Returns the exit status when it left by itself, None when killed.
        """
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        status: int | None
        try:
            status = self.proc.wait(grace) if grace > 0 else self.proc.poll()
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()
        return status

    def goodbye(self) -> None:
        """Start a clean end: GOODBYE and end of input (finish with :meth:`reap`)."""
        with contextlib.suppress(OSError):
            self._write(proto.encode(proto.Goodbye()))
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # type: ignore[union-attr]

    def reap(self, timeout: float = _CLOSE_WAIT) -> None:
        """Wait for the process to leave after :meth:`goodbye`; kill it when it does not."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]


class _Recent:
    """The last answers fetched (blob or None for missing), bounded in count and bytes."""

    def __init__(self) -> None:
        self._items: collections.OrderedDict[bytes, bytes | None] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, chunk_id: bytes) -> tuple[bool, bytes | None]:
        with self._lock:
            if chunk_id in self._items:
                return True, self._items[chunk_id]
        return False, None

    def put(self, chunk_id: bytes, blob: bytes | None) -> None:
        with self._lock:
            if chunk_id in self._items:
                return
            self._items[chunk_id] = blob
            self._bytes += len(blob or b"")
            while len(self._items) > _RECENT_COUNT or self._bytes > _RECENT_BYTES:
                _, old = self._items.popitem(last=False)
                self._bytes -= len(old or b"")


class SSHStore(Store):
    """A read-only store served by ``casync pull`` (or pycasync's/desync's) over ssh.

    ``ssh_path``/``remote_path`` default to ``$CASYNC_SSH_PATH``/``ssh`` and
    ``$CASYNC_REMOTE_PATH``/``casync``. The ssh program is one path (no
    arguments); the remote command is handed to the remote shell as casync
    does, so it may be a command line (``python3 -m pycasync``).
    """

    def __init__(
        self,
        location: str,
        options: StoreOptions | None = None,
        *,
        ssh_path: str | None = None,
        remote_path: str | None = None,
    ) -> None:
        options = options or StoreOptions()
        self.location = parse_location(location)
        self.name = redact(location)  # passwords were refused: as given
        self.verify = not options.skip_verify
        #: Seconds a chunk's answer may take in all: desync's one minute unless set (negative: no limit).
        self.timeout = effective_timeout(options.timeout)
        #: Seconds the remote may take to start (only when set: ssh may be asking for a password).
        self.start_timeout = options.timeout if options.timeout and options.timeout > 0 else None
        self.max_sessions = options.concurrency if options.concurrency > 0 else DEFAULT_SESSIONS
        ssh = ssh_path or os.environ.get("CASYNC_SSH_PATH") or "ssh"
        remote = remote_path or os.environ.get("CASYNC_REMOTE_PATH") or "casync"
        port = ["-p", str(self.location.port)] if self.location.port else []
        self.argv = [ssh, *port, self.location.destination, remote, "pull", "-", "-", "-",
                     shlex.quote(self.location.path)]  # fmt: skip
        self._idle: list[_Session] = []
        self._live = 0  # sessions started (idle or in use) or starting
        self._closed = False
        self._cond = threading.Condition()
        self._recent = _Recent()

    def __str__(self) -> str:
        return self.name

    # -------------------------------------------------------------- pool

    def _acquire(self, chunk_id: bytes) -> _Session:
        """An idle session not yet asked for ``chunk_id``; starts or recycles one if needed."""
        stale: _Session | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise StoreError(f"store {self} is closed")
                fresh = next((s for s in self._idle if chunk_id not in s.asked), None)
                if fresh is not None:
                    self._idle.remove(fresh)
                    return fresh
                if self._live < self.max_sessions:
                    self._live += 1
                    break
                if self._idle:  # every idle session was asked already: replace one
                    stale = self._idle.pop(0)
                    break
                self._cond.wait()
        if stale is not None:
            stale.goodbye()
            stale.reap()
        session: _Session | None = None
        try:
            session = _Session(self)
            session.handshake()  # ends the session itself when it fails
        except BaseException:
            if session is not None:
                session.end()  # an interrupt mid-handshake: do not leave the process behind
            self._forget()
            raise
        return session

    def _release(self, session: _Session) -> None:
        with self._cond:
            keep = not self._closed and len(session.asked) < _SESSION_MAX_IDS
            if keep:
                self._idle.append(session)
                self._cond.notify()
                return
        session.goodbye()
        session.reap()
        self._forget()

    def _forget(self) -> None:
        """One session fewer (it failed or was retired)."""
        with self._cond:
            self._live -= 1
            self._cond.notify()

    # -------------------------------------------------------------- Store

    def _fetch(self, chunk_id: bytes) -> bytes | None:
        known, blob = self._recent.get(chunk_id)
        if known:
            return blob
        session = self._acquire(chunk_id)
        try:
            blob = session.request(chunk_id)
        except BaseException:
            session.end()
            self._forget()
            raise
        self._release(session)
        self._recent.put(chunk_id, blob)
        return blob

    def get_raw(self, chunk_id: bytes) -> bytes:
        blob = self._fetch(chunk_id)
        if blob is None:
            raise ChunkMissing(chunk_id, self)
        return blob

    def has_chunk(self, chunk_id: bytes) -> bool:
        # The protocol has no "do you have it" request: fetch it (kept for a get_raw next).
        return self._fetch(chunk_id) is not None

    def close(self) -> None:
        """GOODBYE to every idle session, then wait for them (kill after a timeout)."""
        with self._cond:
            self._closed = True
            sessions, self._idle = self._idle, []
            self._live -= len(sessions)
            self._cond.notify_all()
        for session in sessions:
            session.goodbye()
        for session in sessions:
            session.reap()


def open_ssh(location: str, options: StoreOptions) -> SSHStore:
    """The store factory for ``ssh://`` locations (see :data:`casync_store.stores.location.BACKENDS`)."""
    if options.uncompressed:
        raise StoreError(f"store {location}: the casync protocol has no uncompressed stores")
    return SSHStore(location, options)
