"""The HTTP(S) client plumbing the HTTP chunk and index stores share (stdlib only).

Pure helpers with no store logic: a bounded pool of keep-alive connections
(:class:`ConnectionPool`), the client TLS context from store options
(:func:`tls_context`, desync's ``trust_insecure``/``ca_cert``/client
certificate rules), connections that hold each request to one deadline
(:class:`DeadlineHTTPConnection`, :class:`DeadlineHTTPSConnection`: connect,
TLS handshake, proxy tunnel, sending, the answer's head and its whole body,
however slowly a server drips them), proxies from the environment (:func:`proxy_for`,
shown with :func:`~casync_store.plumbing.locparse.redact`), and one-line
descriptions of network failures (:func:`describe`). The request loop with
retries lives in :mod:`.http`.
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

from casync_format.errors import ParameterError, StoreError

from ..plumbing.config import StoreOptions
from ..plumbing.locparse import redact, split_url

__all__ = [
    "DEFAULT_TIMEOUT",
    "IDLE_TIMEOUT",
    "STALE",
    "TLS_TRANSIENT",
    "ConnectionPool",
    "DeadlineHTTPConnection",
    "DeadlineHTTPSConnection",
    "Proxy",
    "ShortBody",
    "TooLarge",
    "basic_auth",
    "describe",
    "effective_timeout",
    "is_latin1",
    "proxy_for",
    "snippet",
    "tls_context",
]

#: Seconds a request may take when no timeout is configured (desync: one minute).
DEFAULT_TIMEOUT = 60.0
#: Seconds an unused kept connection is trusted (desync's IdleConnTimeout).
IDLE_TIMEOUT = 60.0
#: What a kept connection the server has closed raises when it is used again.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
#: TLS errors that say nothing about the peer's configuration (a dropped connection).
TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError,
                 ssl.SSLWantReadError, ssl.SSLWantWriteError)


def effective_timeout(timeout: float | None) -> float | None:
    """desync's rule: unset or 0 = one minute, negative = no timeout."""
    if timeout is None or timeout == 0:
        return DEFAULT_TIMEOUT
    return None if timeout < 0 else float(timeout)


def basic_auth(username: str, password: str | None) -> str:
    """A Basic ``Authorization`` value from URL userinfo (percent-decoded)."""
    pair = f"{urllib.parse.unquote(username)}:{urllib.parse.unquote(password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


@dataclass(frozen=True)
class Proxy:
    """An HTTP proxy from the environment."""

    host: str
    port: int
    headers: dict[str, str] = field(default_factory=dict)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy_for(scheme: str, host: str, where: str) -> Proxy | None:
    """The proxy the environment names for ``scheme`` and ``host`` (None: connect directly)."""
    if _is_loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    # proxy_bypass_environment is public in urllib.request but missing from typeshed's stubs.
    if not url or urllib.request.proxy_bypass_environment(host, proxies):  # type: ignore[attr-defined]
        return None
    added = "" if "://" in url else "http://"
    parts = split_url(added + url)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http" or not parts.hostname or not port:
        shown = redact(added + url)[len(added):]  # the prefix is never masked
        raise ParameterError(f"store {where}: unusable {scheme}_proxy {shown} (need http://host:port)")
    headers = {}
    if parts.username is not None:
        headers["Proxy-Authorization"] = basic_auth(parts.username, parts.password)
    return Proxy(parts.hostname, port, headers)


class TooLarge(Exception):
    """A response body above the caller's limit (not retried)."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


class ShortBody(http.client.HTTPException):
    """The server closed the connection before sending all the declared bytes."""

    def __init__(self, got: int, declared: int) -> None:
        super().__init__(f"response body shorter than its Content-Length ({got} of {declared} bytes)")


class _Deadline:
    """What a connection's request may still take: ``deadline`` (a monotonic time) or None (no limit)."""

    deadline: float | None = None

    def left(self) -> float | None:
        """Seconds left (None: no limit); TimeoutError once the deadline has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        return left

    def arm(self, sock: socket.socket) -> None:
        """Bound the next blocking operation on ``sock`` by what is left (once per read or send)."""
        if self.deadline is not None:
            sock.settimeout(self.left())


class _DeadlineReader(io.RawIOBase):
    """A response's socket reads, each bounded by what is left of its request's deadline.

    http.client reads the head line by line and a body until a count is
    reached, looping over socket reads that each return what has arrived;
    bounding every one of those by the time left (rather than by a fixed
    timeout per read) is what stops a server that drips bytes.
    """

    def __init__(self, raw: io.RawIOBase, sock: socket.socket, clock: _Deadline) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._clock = clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._clock.arm(self._sock)
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()  # the socket's own file: releases its reference to the socket
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTPResponse reading through a :class:`_DeadlineReader`."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, clock: _Deadline) -> None:  # fmt: skip
        super().__init__(sock, debuglevel, method, url)
        raw = self.fp.detach()  # the buffered file http.client made: keep its raw socket file only
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, clock))


class _DeadlineSteps(_Deadline):
    """Connect, send and read of an http.client connection, each bounded by the time left.

    Mixed into HTTPConnection and HTTPSConnection: the socket timeout is set,
    before each connect, send and read, to the time left, so one request
    (connect, TLS handshake, proxy tunnel, request, answer head, whole body)
    takes at most until its :attr:`deadline` in all.
    """

    sock: Any
    blocksize: int
    auto_open: int
    # http.client only calls it as response_class(sock, method=...): here a partial binding the clock.
    response_class: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._create_connection = self._open_socket
        self.response_class = functools.partial(_DeadlineResponse, clock=self)

    def _open_socket(self, address: tuple[str, int], timeout: Any, source: Any = None) -> socket.socket:
        left = self.left()
        sock = socket.create_connection(address, timeout if left is None else left, source)
        if self.deadline is not None:  # what the TLS handshake that may follow has left
            try:
                sock.settimeout(self.left())
            except BaseException:
                sock.close()
                raise
        return sock

    def send(self, data: Any) -> None:
        """Send bytes (or a file, block by block), each send bounded by the time left."""
        if hasattr(data, "read"):
            while block := data.read(self.blocksize):
                self.send(block)
            return
        if self.sock is None and self.auto_open:
            self.connect()  # type: ignore[attr-defined]
        if self.sock is not None:
            self.arm(self.sock)
        super().send(data)  # type: ignore[misc]


class DeadlineHTTPConnection(_DeadlineSteps, http.client.HTTPConnection):
    """An HTTPConnection whose requests each end by their :attr:`deadline` (see :class:`_DeadlineSteps`)."""


class DeadlineHTTPSConnection(_DeadlineSteps, http.client.HTTPSConnection):
    """:class:`DeadlineHTTPConnection` over TLS (the handshake within the deadline too)."""


class ConnectionPool:
    """At most ``size`` connections in use at once; finished ones kept for reuse."""

    def __init__(self, factory: Callable[[], http.client.HTTPConnection], size: int, name: str) -> None:
        self._factory = factory
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._name = name

    def acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        """A connection and whether it was used before (may have been dropped by the server)."""
        self._slots.acquire()
        with self._lock:
            if self._closed:
                self._slots.release()
                raise StoreError(f"store {self._name} is closed")
            now = time.monotonic()
            while self._idle:
                conn, since = self._idle.pop()
                if now - since < IDLE_TIMEOUT:
                    return conn, True
                conn.close()
        return self._factory(), False

    def release(self, conn: http.client.HTTPConnection, keep: bool) -> None:
        """Give a connection back; ``keep`` = it is idle and may be reused."""
        with self._lock:
            if keep and not self._closed:
                self._idle.append((conn, time.monotonic()))
                conn = None  # type: ignore[assignment]
        if conn is not None:
            conn.close()
        self._slots.release()

    def close(self) -> None:
        """Close the idle connections; busy ones are closed when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()


def is_latin1(value: str) -> bool:
    """Whether ``value`` can be sent as an HTTP header value (latin-1)."""
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def snippet(body: bytes) -> str:
    """The start of an error answer's text, printable and short."""
    text = body[:200].decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:120]


def describe(exc: BaseException, store: Any) -> str:
    """A one-line reason for a failed exchange."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"timed out after {store.timeout:g} s" if store.timeout else "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host {store.host}: {exc.strerror or exc}"
    if isinstance(exc, ConnectionRefusedError):
        via = f" (via proxy {store.proxy.host} port {store.proxy.port})" if store.proxy else ""
        return f"connection to {store.host} port {store.port}{via} refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, http.client.IncompleteRead):
        return f"response body cut short ({len(exc.partial)} bytes read)"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"server certificate not trusted ({exc.verify_message}; see ca-cert and trust-insecure)"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


def tls_context(options: StoreOptions, where: str) -> ssl.SSLContext:
    """The client TLS settings from the store options (desync's rules)."""
    try:
        ctx = ssl.create_default_context(cafile=options.ca_cert or None)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise StoreError(
            f"store {where}: cannot load CA certificates from {options.ca_cert}: {reason}"
        ) from None
    if options.trust_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if options.client_key and not options.client_cert:
        raise ParameterError(f"store {where}: a client key needs a client certificate (client-cert)")
    if options.client_cert:
        try:
            ctx.load_cert_chain(options.client_cert, options.client_key or None)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise StoreError(
                f"store {where}: cannot load client certificate {options.client_cert}: {reason}"
            ) from None
    return ctx
