"""HTTP(S) chunk stores: desync's and casync's web layout, read and written over the stdlib.

An :class:`HTTPStore` talks to a web server holding a casync store under a
base URL: ``GET <base>/xxxx/<id>.cacnk`` reads a chunk, ``HEAD`` tells whether
it is there, ``PUT`` stores one (``<base>/xxxx/<id>`` with raw data when the
store is ``uncompressed``, as in desync). It uses only :mod:`http.client`
and :mod:`ssl`: a bounded pool of keep-alive connections (``concurrency``
connections, thread-safe; a kept connection the server has dropped is
re-opened transparently), a timeout (desync's one minute by default,
negative = none) on every network wait and on reading a whole body, and
retries of 5xx answers, connection failures, timeouts and short bodies
(``error_retry`` attempts in all, as desync counts them, waiting
``attempt * error_retry_base_interval`` between them, capped at
:data:`MAX_RETRY_DELAY`), while 404 is "missing" at once and 401/403 and
other 4xx fail at once. A body shorter than its Content-Length or longer
than a chunk can be is an error, never a chunk. TLS follows desync's
options: ``trust_insecure``, ``ca_cert`` (then only those CAs),
``client_cert``/``client_key``; ``http_auth`` and ``http_cookie`` become the
``Authorization`` and ``Cookie`` headers (credentials in the URL become
Basic authorization, as Go's client does). Like desync (Go's
``ProxyFromEnvironment``), ``http_proxy``/``https_proxy``/``no_proxy`` are
honoured, except for loopback hosts; only ``http://`` proxies (HTTPS goes
through ``CONNECT``). Messages and logs name the store by its URL without
credentials and never show header values. Redirects are not followed.

An uncompressed store keeps the Store contract (``get_raw`` returns stored,
compressed bytes): ``get_raw`` encodes the data it receives with the store's
compression, so a cache or a chunk server in front of it sees a normal
``.cacnk`` blob; ``get_chunk`` uses the body as the data directly (checked
against the index size and the id); ``put_raw`` decodes the blob and sends
the data.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ChunkInvalid, ChunkMissing, ParameterError, StoreError

from .config import StoreOptions
from .store import WriteStore

__all__ = [
    "HTTPStore",
    "open_http",
    "redact_url",
    "DEFAULT_TIMEOUT",
    "DEFAULT_CONCURRENCY",
    "MAX_RETRY_DELAY",
    "MAX_BLOB_SIZE",
]

log = logging.getLogger(__name__)

#: Seconds a request may take when no timeout is configured (desync: one minute).
DEFAULT_TIMEOUT = 60.0
#: Connections per store when ``options.concurrency`` is 0 (desync's ``-n`` default).
DEFAULT_CONCURRENCY = 10
#: The longest wait between two attempts, in seconds.
MAX_RETRY_DELAY = 30.0
#: The largest compressed chunk accepted: the worst-case zstd/xz/gzip expansion
#: of the largest chunk casync allows.
MAX_BLOB_SIZE = CA_CHUNK_SIZE_LIMIT_MAX + CA_CHUNK_SIZE_LIMIT_MAX // 64 + (1 << 16)

_IDLE_TIMEOUT = 60.0  # seconds an unused kept connection is trusted (desync's IdleConnTimeout)
_ERROR_BODY_LIMIT = 1 << 16  # bytes of an error answer read (so the connection can be kept)
_READ_STEP = 1 << 20
_SUFFIX = ".cacnk"
#: What a kept connection the server has closed raises when it is used again.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
#: TLS errors that say nothing about the peer's configuration (a dropped connection).
_TLS_TRANSIENT = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError,
                  ssl.SSLWantReadError, ssl.SSLWantWriteError)


def redact_url(url: str) -> str:
    """``url`` without the ``user:password@`` part, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _effective_timeout(timeout: float | None) -> float | None:
    """desync's rule: unset or 0 = one minute, negative = no timeout."""
    if timeout is None or timeout == 0:
        return DEFAULT_TIMEOUT
    return None if timeout < 0 else float(timeout)


def _basic(username: str, password: str | None) -> str:
    """A Basic ``Authorization`` value from URL userinfo (percent-decoded)."""
    pair = f"{urllib.parse.unquote(username)}:{urllib.parse.unquote(password or '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


@dataclass(frozen=True)
class _Proxy:
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


def _proxy_for(scheme: str, host: str, where: str) -> _Proxy | None:
    """The proxy the environment names for ``scheme`` and ``host`` (None: connect directly)."""
    if _is_loopback(host):
        return None
    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme.lower() != "http" or not parts.hostname or not port:
        raise ParameterError(f"store {where}: unusable {scheme}_proxy {redact_url(url)} (need http://host:port)")
    headers = {}
    if parts.username is not None:
        headers["Proxy-Authorization"] = _basic(parts.username, parts.password)
    return _Proxy(parts.hostname, port, headers)


class _TooLarge(Exception):
    """A response body above the caller's limit (not retried)."""

    def __init__(self, size: int | None) -> None:
        super().__init__(size)
        self.size = size


class _ShortBody(http.client.HTTPException):
    """The server closed the connection before sending all the declared bytes."""

    def __init__(self, got: int, declared: int) -> None:
        super().__init__(f"response body shorter than its Content-Length ({got} of {declared} bytes)")


class _Pool:
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
                if now - since < _IDLE_TIMEOUT:
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


class HTTPStore(WriteStore):
    """A chunk store on a web server (``http://`` or ``https://``); see the module."""

    def __init__(self, location: str, options: StoreOptions | None = None) -> None:
        options = options if options is not None else StoreOptions()
        self.location = redact_url(location)
        self.options = options
        self.verify = not options.skip_verify
        self.uncompressed = options.uncompressed
        parts = urllib.parse.urlsplit(location)
        self.scheme = parts.scheme.lower()
        if self.scheme not in ("http", "https"):
            raise ParameterError(f"store {self}: not an http:// or https:// location")
        try:
            port = parts.port
        except ValueError:
            raise ParameterError(f"store {self}: invalid port") from None
        if not parts.hostname:
            raise ParameterError(f"store {self}: no host name")
        self.host = parts.hostname
        self.port = port or (443 if self.scheme == "https" else 80)
        path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        self.base_path = path if path.endswith("/") else path + "/"
        self.timeout = _effective_timeout(options.timeout)
        self.attempts = max(1, options.error_retry)
        self.retry_interval = max(0.0, options.error_retry_base_interval)
        self._headers = self._make_headers(parts, options)
        self._tls = _tls_context(options, self.location) if self.scheme == "https" else None
        self.proxy = _proxy_for(self.scheme, self.host, self.location)
        if self.proxy is not None and self._tls is None:  # plain HTTP: absolute URLs to the proxy
            netloc = f"[{self.host}]" if ":" in self.host else self.host
            self._origin = f"http://{netloc}" + (f":{self.port}" if self.port != 80 else "")
            self._headers.update(self.proxy.headers)
        else:
            self._origin = ""
        size = options.concurrency if options.concurrency > 0 else DEFAULT_CONCURRENCY
        self._pool = _Pool(self._connect, size, self.location)

    def __str__(self) -> str:
        return self.location

    def _make_headers(self, parts: urllib.parse.SplitResult, options: StoreOptions) -> dict[str, str]:
        headers = {"User-Agent": "pycasync"}
        auth = options.http_auth
        if not auth and parts.username is not None:
            auth = _basic(parts.username, parts.password)
        for name, value in (("Authorization", auth), ("Cookie", options.http_cookie)):
            if not value:
                continue
            if any(c in value for c in "\r\n\0") or not _latin1(value):
                # Never echo the value: it is a secret.
                raise ParameterError(f"store {self}: the {name} value contains invalid characters")
            headers[name] = value
        return headers

    def _connect(self) -> http.client.HTTPConnection:
        proxy = self.proxy
        host, port = (proxy.host, proxy.port) if proxy is not None else (self.host, self.port)
        if self._tls is None:
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
        if proxy is not None:
            conn.set_tunnel(self.host, self.port, headers=proxy.headers)
        return conn

    def chunk_path(self, chunk_id: bytes) -> str:
        """The request path of a chunk (base path included)."""
        name = chunk_id.hex()
        return f"{self.base_path}{name[:4]}/{name}{'' if self.uncompressed else _SUFFIX}"

    # ------------------------------------------------------------------ the Store API

    def get_raw(self, chunk_id: bytes) -> bytes:
        """The chunk's stored bytes; an uncompressed store's data is encoded here (zstd)."""
        if self.uncompressed:
            return chunk_codec.encode(self._get(chunk_id, CA_CHUNK_SIZE_LIMIT_MAX), self.compression)
        return self._get(chunk_id, MAX_BLOB_SIZE)

    def get_chunk(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> bytes:
        """The chunk's verified data; an uncompressed store's body is the data itself."""
        if not self.uncompressed:
            return super().get_chunk(chunk_id, digest, size, max_size)
        bound = size if size is not None else max_size
        data = self._get(chunk_id, bound, invalid=True)
        if size is not None and len(data) != size:
            raise ChunkInvalid(chunk_id, None, f"has {len(data)} bytes, index says {size}", self)
        if self.verify:
            chunk_codec.verify(chunk_id, data, digest, self)
        return data

    def has_chunk(self, chunk_id: bytes) -> bool:
        """HEAD the chunk: 200 = present, 404 = absent, anything else an error."""
        status, reason, body = self._request("HEAD", chunk_id)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self._status_error("HEAD", chunk_id, status, reason, body)

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        """PUT the blob (decoded to raw data first for an uncompressed store)."""
        if self.uncompressed:
            blob = chunk_codec.decode(blob, chunk_id, None, store=self)
        self._put(chunk_id, blob)

    def store_chunk(self, chunk_id: bytes, data: bytes | memoryview, blob: bytes | None = None) -> None:
        """Store chunk data: raw for an uncompressed store, else encoded (or ``blob``)."""
        if self.uncompressed:
            self._put(chunk_id, bytes(data))
        else:
            super().store_chunk(chunk_id, data, blob)

    def close(self) -> None:
        """Close the kept connections; later requests fail."""
        self._pool.close()

    # ------------------------------------------------------------------ requests

    def _get(self, chunk_id: bytes, limit: int, invalid: bool = False) -> bytes:
        try:
            status, reason, body = self._request("GET", chunk_id, limit=limit)
        except _TooLarge as exc:
            if invalid:
                raise ChunkInvalid(chunk_id, None, f"larger than {limit} bytes", self) from None
            size = f"{exc.size} bytes" if exc.size is not None else "a body"
            raise StoreError(
                f"store {self}: GET chunk {chunk_id.hex()}: server sent {size}, "
                f"more than a chunk can be ({limit} bytes)"
            ) from None
        if status == 200:
            return body
        raise self._status_error("GET", chunk_id, status, reason, body)

    def _put(self, chunk_id: bytes, body: bytes | memoryview) -> None:
        status, reason, answer = self._request("PUT", chunk_id, body=bytes(body))
        if not 200 <= status < 300:
            raise self._status_error("PUT", chunk_id, status, reason, answer)

    def _status_error(self, method: str, chunk_id: bytes, status: int, reason: str, body: bytes) -> Exception:
        """The error for a final status that is not success."""
        if status == 404 and method != "PUT":
            return ChunkMissing(chunk_id, self)
        what = f"store {self}: {method} chunk {chunk_id.hex()}: HTTP {status} {reason}".rstrip()
        if status in (401, 403):
            return StoreError(f"{what} (access denied: check http-auth and the client certificate)")
        text = _snippet(body)
        return StoreError(f"{what}: {text}" if text else what)

    def _request(
        self, method: str, chunk_id: bytes, body: bytes | None = None, limit: int = _ERROR_BODY_LIMIT
    ) -> tuple[int, str, bytes]:
        """(status, reason, body) of the first answer that is not a 5xx, retrying failures."""
        path = self.chunk_path(chunk_id)
        detail = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                time.sleep(min(self.retry_interval * (attempt - 1), MAX_RETRY_DELAY))
            log.debug("%s %s%s (attempt %d)", method, self, path[len(self.base_path):], attempt)
            try:
                status, reason, data = self._exchange(method, path, body, limit)
            except OSError as exc:
                if isinstance(exc, ssl.SSLError) and not isinstance(exc, _TLS_TRANSIENT):
                    raise StoreError(
                        f"store {self}: {method} chunk {chunk_id.hex()}: TLS error: {_describe(exc, self)}"
                    ) from None
                detail = _describe(exc, self)
            except http.client.HTTPException as exc:
                detail = _describe(exc, self)
            else:
                if not 500 <= status <= 599:
                    return status, reason, data
                detail = f"HTTP {status} {reason}".rstrip()
                text = _snippet(data)
                detail += f": {text}" if text else ""
            log.debug("%s %s: %s", method, self, detail)
        tries = f" (gave up after {self.attempts} attempts)" if self.attempts > 1 else ""
        raise StoreError(f"store {self}: {method} chunk {chunk_id.hex()}: {detail}{tries}")

    def _exchange(self, method: str, path: str, body: bytes | None, limit: int) -> tuple[int, str, bytes]:
        """One request on a pooled connection (re-opened once if the server dropped it)."""
        conn, reused = self._pool.acquire()
        keep = False
        try:
            try:
                resp = self._send(conn, method, path, body)
            except _STALE:
                if not reused:
                    raise
                conn.close()  # a kept connection the server closed meanwhile: open a new one
                resp = self._send(conn, method, path, body)
            status, reason, data, keep = self._read(resp, method, limit)
            return status, reason, data
        finally:
            self._pool.release(conn, keep)

    def _send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None
    ) -> http.client.HTTPResponse:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        conn.request(method, self._origin + path, body=body, headers=headers)
        return conn.getresponse()

    def _read(
        self, resp: http.client.HTTPResponse, method: str, limit: int
    ) -> tuple[int, str, bytes, bool]:
        """(status, reason, body, connection reusable) of a response."""
        status, reason = resp.status, resp.reason or ""
        if method == "HEAD":
            data = resp.read()
        elif status != 200:
            data = resp.read(_ERROR_BODY_LIMIT)
        elif resp.length is not None and resp.length > limit:
            raise _TooLarge(resp.length)
        else:
            data = self._read_body(resp, limit)
        if not resp.isclosed():
            resp.read(0)  # an empty body: mark the response done, so the connection is free
        return status, reason, data, resp.isclosed() and not resp.will_close

    def _read_body(self, resp: http.client.HTTPResponse, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes, within the request's timeout."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        declared = resp.length
        parts: list[bytes] = []
        total = 0
        while resp.length is None or resp.length > 0:
            if deadline is not None and time.monotonic() > deadline:
                raise socket.timeout("timed out")
            piece = resp.read(_READ_STEP if resp.length is None else min(_READ_STEP, resp.length))
            if not piece:
                if declared is not None:
                    raise _ShortBody(total, declared)
                break
            total += len(piece)
            if total > limit:
                raise _TooLarge(None)
            parts.append(piece)
        return b"".join(parts)


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _snippet(body: bytes) -> str:
    """The start of an error answer's text, printable and short."""
    text = body[:200].decode("utf-8", "replace")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:120]


def _describe(exc: BaseException, store: HTTPStore) -> str:
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


def _tls_context(options: StoreOptions, where: str) -> ssl.SSLContext:
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


def open_http(location: str, options: StoreOptions) -> HTTPStore:
    """The store factory for ``http://`` and ``https://`` locations (see :data:`location.BACKENDS`)."""
    return HTTPStore(location, options)
