"""HTTP(S) chunk and index stores: desync's and casync's web layout, read and written over the stdlib.

An :class:`HTTPStore` talks to a web server holding a casync store under a
base URL: ``GET <base>/xxxx/<id>.cacnk`` reads a chunk, ``HEAD`` tells whether
it is there, ``PUT`` stores one (``<base>/xxxx/<id>`` with raw data when the
store is ``uncompressed``, as in desync). It uses only :mod:`http.client`
and :mod:`ssl`: a bounded pool of keep-alive connections (``concurrency``
connections, thread-safe; a kept connection the server has dropped is
re-opened transparently), a deadline per attempt (the ``timeout``,
desync's one minute by default, negative = none) covering the whole
exchange: connect, TLS handshake, sending, the answer's head and its whole
body, so a server that stalls or drips bytes fails it on time, and
retries of 5xx answers, connection failures, timeouts and short bodies
(``error_retry`` attempts in all, as desync counts them, waiting
``attempt * error_retry_base_interval`` between them, capped at
:data:`MAX_RETRY_DELAY`), all attempts of one request and the waits between
them within ``timeout * attempts`` (counted from when the first attempt has
its connection); 404 is "missing" at once and 401/403 and
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
compression, so a cache or a chunk server in front sees a ``.cacnk`` blob;
``get_chunk`` uses the body as the data (checked against the index size and
the id); ``put_raw`` decodes the blob and sends the data. An encrypted store
(desync's ``encryption`` options) seals bodies as desync does, one layer
below all that, under ``<id>.cacnk<cipher.suffix>``.

An :class:`HTTPIndexStore` holds index files under a base URL: ``GET
<base>/<name>`` (the name percent-encoded) streams an index to the caller
without loading it into memory, ``HEAD`` tells whether it is there, ``PUT``
streams one from a file with its Content-Length; 404 is
:class:`~casync_format.errors.IndexNotFound`. Both stores share this module's
request loop (retries, limits, messages) and :mod:`._httpclient`'s pool, TLS
and proxy plumbing.
"""

from __future__ import annotations

import http.client
import io
import logging
import ssl
import time
import urllib.parse
from typing import BinaryIO, Union, cast

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import Digest
from casync_format.errors import ChunkInvalid, ChunkMissing, IndexNotFound, ParameterError, StoreError

from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location
from ._httpclient import (
    DEFAULT_TIMEOUT,
    STALE,
    TLS_TRANSIENT,
    ConnectionPool,
    DeadlineHTTPConnection,
    DeadlineHTTPSConnection,
    ShortBody,
    TooLarge,
    basic_auth,
    describe,
    effective_timeout,
    is_latin1,
    proxy_for,
    snippet,
    tls_context,
)
from .base import Store, WriteStore
from .indexstore import WriteIndexStore, check_index_name
from .layout import chunk_path, chunk_suffix

__all__ = [
    "HTTPStore", "HTTPIndexStore", "open_http", "open_http_index_store",
    "DEFAULT_TIMEOUT", "DEFAULT_CONCURRENCY", "MAX_RETRY_DELAY", "MAX_BLOB_SIZE",
]  # fmt: skip

log = logging.getLogger(__name__)

#: Connections per store when ``options.concurrency`` is 0 (desync's ``-n`` default).
DEFAULT_CONCURRENCY = 10
#: The longest wait between two attempts, in seconds.
MAX_RETRY_DELAY = 30.0
#: The largest compressed chunk accepted: the worst-case zstd/xz/gzip expansion
#: of the largest chunk casync allows.
MAX_BLOB_SIZE = CA_CHUNK_SIZE_LIMIT_MAX + CA_CHUNK_SIZE_LIMIT_MAX // 64 + (1 << 16)

_ERROR_BODY_LIMIT = 1 << 16  # bytes of an error answer read (so the connection can be kept)
_READ_STEP = 1 << 20
_SEND_BLOCK = 1 << 16  # bytes per write when a body is streamed from a file
#: A request that failed with these may have been answered early, or sent on a dropped kept connection.
_SEND_BROKEN = (*STALE, ssl.SSLEOFError)


class _Upload:
    """``size`` bytes of ``source`` as a streamed request body; sent again only if ``source`` can seek."""

    def __init__(self, source: BinaryIO, size: int, where: str) -> None:
        self.source = source
        self.size = size
        self.where = where
        self.left = size
        self.sent_once = False
        try:  # SpooledTemporaryFile has no seekable() before Python 3.11, but seeks
            seekable = source.seekable() if hasattr(source, "seekable") else True
            self.start: int | None = source.tell() if seekable else None
        except (AttributeError, OSError, ValueError):
            self.start = None

    def rewind(self) -> None:
        """Get ready to (re)send the body from its start."""
        if self.sent_once:
            if self.start is None:
                raise StoreError(f"{self.where}: the upload failed and its source cannot be read again")
            self.source.seek(self.start)
        self.sent_once = True
        self.left = self.size

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes of the body (what http.client calls to send it)."""
        if self.left <= 0:
            return b""
        block = self.source.read(self.left if n is None or n < 0 else min(n, self.left))
        if not block:
            got = self.size - self.left
            raise StoreError(f"{self.where}: the source ended after {got} of {self.size} bytes")
        self.left -= len(block)
        return block


Body = Union[bytes, _Upload, None]


class _Budget:
    """When all attempts of one request must have ended (None: no timeout, or not started)."""

    def __init__(self, timeout: float | None, attempts: int) -> None:
        self.total = None if timeout is None else timeout * attempts
        self.end: float | None = None

    def attempt_deadline(self, timeout: float | None) -> float | None:
        """The deadline of an attempt starting now (the first one starts the budget's clock)."""
        if timeout is None or self.total is None:
            return None
        now = time.monotonic()
        if self.end is None:
            self.end = now + self.total
        return min(now + timeout, self.end)

    def allows(self, delay: float) -> bool:
        """Whether an attempt after ``delay`` seconds would still have time."""
        return self.end is None or time.monotonic() + delay < self.end


class _HTTPBase:
    """Location parsing, headers, TLS, proxy, connection pool and the request loop of both stores."""

    #: What the store is called in messages.
    kind = "store"

    def __init__(self, location: str, options: StoreOptions | None = None) -> None:
        options = options if options is not None else StoreOptions()
        loc = Location.parse(location)
        self.location = loc.redacted()
        self.options = options
        self.scheme = loc.scheme
        if self.scheme not in ("http", "https"):
            raise ParameterError(f"{self.kind} {self}: not an http:// or https:// location")
        if not loc.port_valid:
            raise ParameterError(f"{self.kind} {self}: invalid port")
        if not loc.host:
            raise ParameterError(f"{self.kind} {self}: no host name")
        self.host = loc.host
        self.port = loc.port or (443 if self.scheme == "https" else 80)
        path = urllib.parse.quote(loc.path or "/", safe="/%:@!$&'()*+,;=-._~")
        self.base_path = path if path.endswith("/") else path + "/"
        self.timeout = effective_timeout(options.timeout)
        self.attempts = max(1, options.error_retry)
        self.retry_interval = max(0.0, options.error_retry_base_interval)
        self._headers = self._make_headers(loc, options)
        self._tls = tls_context(options, self.location) if self.scheme == "https" else None
        self.proxy = proxy_for(self.scheme, self.host, self.location)
        if self.proxy is not None and self._tls is None:  # plain HTTP: absolute URLs to the proxy
            netloc = f"[{self.host}]" if ":" in self.host else self.host
            self._origin = f"http://{netloc}" + (f":{self.port}" if self.port != 80 else "")
            self._headers.update(self.proxy.headers)
        else:
            self._origin = ""
        size = options.concurrency if options.concurrency > 0 else DEFAULT_CONCURRENCY
        self._pool = ConnectionPool(self._connect, size, self.location)

    def __str__(self) -> str:
        return self.location

    def close(self) -> None:
        """Close the kept connections; later requests fail."""
        self._pool.close()

    def _make_headers(self, loc: Location, options: StoreOptions) -> dict[str, str]:
        headers = {"User-Agent": "pycasync"}
        auth = options.http_auth
        if not auth and loc.user is not None:
            auth = basic_auth(loc.user, loc.password)
        for name, value in (("Authorization", auth), ("Cookie", options.http_cookie)):
            if not value:
                continue
            if any(c in value for c in "\r\n\0") or not is_latin1(value):
                # Never echo the value: it is a secret.
                raise ParameterError(f"{self.kind} {self}: the {name} value contains invalid characters")
            headers[name] = value
        return headers

    def _connect(self) -> http.client.HTTPConnection:
        proxy = self.proxy
        host, port = (proxy.host, proxy.port) if proxy is not None else (self.host, self.port)
        if self._tls is None:
            return DeadlineHTTPConnection(host, port, timeout=self.timeout, blocksize=_SEND_BLOCK)
        conn = DeadlineHTTPSConnection(host, port, timeout=self.timeout, context=self._tls,
                                       blocksize=_SEND_BLOCK)
        if proxy is not None:
            conn.set_tunnel(self.host, self.port, headers=proxy.headers)
        return conn

    def _call(
        self, method: str, path: str, what: str, body: Body = None, limit: int = _ERROR_BODY_LIMIT,
        stream: bool = False,
    ) -> tuple[int, str, bytes | BinaryIO]:
        """(status, reason, body) of the first answer that is not a 5xx, retrying failures.

        With ``stream``, a 200 answer's body is a reader over the response
        (holding its connection until closed, and its deadline until read)
        instead of bytes. Each attempt ends by its deadline; no attempt
        starts once the budget of all attempts is spent.
        """
        detail = ""
        budget = _Budget(self.timeout, self.attempts)
        tried = 0
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                delay = min(self.retry_interval * (attempt - 1), MAX_RETRY_DELAY)
                if not budget.allows(delay):
                    break
                time.sleep(delay)
            tried = attempt
            log.debug("%s %s%s (attempt %d)", method, self, path[len(self.base_path):], attempt)
            try:
                status, reason, data = self._exchange(method, path, body, limit, stream, budget)
            except OSError as exc:
                if isinstance(exc, ssl.SSLError) and not isinstance(exc, TLS_TRANSIENT):
                    raise StoreError(
                        f"{self.kind} {self}: {method} {what}: TLS error: {describe(exc, self)}"
                    ) from None
                detail = describe(exc, self)
            except http.client.HTTPException as exc:
                detail = describe(exc, self)
            else:
                if not 500 <= status <= 599:
                    return status, reason, data
                detail = f"HTTP {status} {reason}".rstrip()
                text = snippet(data)  # type: ignore[arg-type]
                detail += f": {text}" if text else ""
            log.debug("%s %s: %s", method, self, detail)
        tries = f" (gave up after {tried} attempts)" if tried > 1 else ""
        raise StoreError(f"{self.kind} {self}: {method} {what}: {detail}{tries}")

    def _exchange(
        self, method: str, path: str, body: Body, limit: int, stream: bool, budget: _Budget
    ) -> tuple[int, str, bytes | BinaryIO]:
        """One request on a pooled connection (re-opened once if the server dropped it)."""
        conn, reused = self._pool.acquire()
        # The clock starts once a connection is ours: waiting for a free one is not the server's time.
        conn.deadline = budget.attempt_deadline(self.timeout)  # type: ignore[attr-defined]
        keep = False
        owned = True
        try:
            early = None
            try:
                resp = self._send(conn, method, path, body)
            except _SEND_BROKEN:
                # A server may answer (401, 413, 400) and close before taking a whole body.
                early = self._early_answer(conn) if body is not None else None
                if early is None and not reused:
                    raise
                if early is None:
                    conn.close()  # a kept connection the server closed meanwhile: open a new one
                resp = early or self._send(conn, method, path, body)
            if stream and resp.status == 200 and method == "GET":
                owned = False  # the reader gives the connection back
                # a RawIOBase, which is the binary file interface callers of a stream use
                return resp.status, resp.reason or "", cast(BinaryIO, _BodyReader(resp, conn, self))
            status, reason, data, keep = self._read(resp, method, limit)
            return status, reason, data
        finally:
            if owned:
                self._pool.release(conn, keep)

    @staticmethod
    def _early_answer(conn: http.client.HTTPConnection) -> http.client.HTTPResponse | None:
        """The answer a server sent before it stopped reading the request body, if it is there."""
        try:
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None
        resp.will_close = True  # the body was not all sent: never reuse this connection
        return resp

    def _send(
        self, conn: http.client.HTTPConnection, method: str, path: str, body: Body
    ) -> http.client.HTTPResponse:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        if isinstance(body, _Upload):
            body.rewind()
            headers["Content-Length"] = str(body.size)
        conn.request(method, self._origin + path, body=body, headers=headers)  # type: ignore[arg-type]
        return conn.getresponse()

    def _read(self, resp: http.client.HTTPResponse, method: str, limit: int) -> tuple[int, str, bytes, bool]:
        """(status, reason, body, connection reusable) of a response.

        The body of a HEAD's 200 (empty by definition) is given as its
        Content-Length header's value instead (``b""`` without one)."""
        status, reason = resp.status, resp.reason or ""
        if method == "HEAD":
            data = resp.read()
            if status == 200:
                data = (resp.getheader("Content-Length") or "").strip().encode("ascii", "replace")
        elif status != 200:
            data = resp.read(_ERROR_BODY_LIMIT)
        elif resp.length is not None and resp.length > limit:
            raise TooLarge(resp.length)
        else:
            data = self._read_body(resp, limit)
        if not resp.isclosed():
            resp.read(0)  # an empty body: mark the response done, so the connection is free
        return status, reason, data, resp.isclosed() and not resp.will_close

    def _read_body(self, resp: http.client.HTTPResponse, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (by the connection's deadline, as every read)."""
        declared = resp.length
        parts: list[bytes] = []
        total = 0
        while resp.length is None or resp.length > 0:
            piece = resp.read(_READ_STEP if resp.length is None else min(_READ_STEP, resp.length))
            if not piece:
                if declared is not None:
                    raise ShortBody(total, declared)
                break
            total += len(piece)
            if total > limit:
                raise TooLarge(None)
            parts.append(piece)
        return b"".join(parts)

    def _denied(self, what: str) -> StoreError:
        return StoreError(f"{what} (access denied: check http-auth and the client certificate)")


class _BodyReader(io.RawIOBase):
    """A 200 response's body as a file; closing it gives the connection back to the pool."""

    def __init__(
        self, resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, owner: _HTTPBase
    ) -> None:
        super().__init__()
        self._resp = resp
        self._conn: http.client.HTTPConnection | None = conn
        self._owner = owner
        self._declared = resp.length
        self._got = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("read from a closed index stream")
        if self._done or not len(buffer):
            return 0
        try:
            n = self._resp.readinto(buffer)  # type: ignore[arg-type]
        except (OSError, http.client.HTTPException) as exc:
            self._release(False)
            owner = self._owner
            raise StoreError(f"{owner.kind} {owner}: reading the answer: {describe(exc, owner)}") from None
        if n == 0:
            if self._declared is not None and self._got < self._declared:
                self._release(False)
                raise StoreError(
                    f"{self._owner.kind} {self._owner}: {ShortBody(self._got, self._declared)}"
                )
            self._done = True
        self._got += n
        return n

    def _release(self, keep: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._owner._pool.release(conn, keep)

    def close(self) -> None:
        if not self.closed:
            resp = self._resp
            self._release(self._done and resp.isclosed() and not resp.will_close)
            resp.close()
        super().close()


class HTTPStore(_HTTPBase, WriteStore):
    """A chunk store on a web server (``http://`` or ``https://``); see the module."""

    def __init__(self, location: str, options: StoreOptions | None = None) -> None:
        super().__init__(location, options)
        self.verify = not self.options.skip_verify
        self.uncompressed = self.options.uncompressed
        self.cipher = self.options.chunk_cipher()  # desync's encryption: bodies sealed, suffix extended
        self._suffix = chunk_suffix(self.uncompressed) + (self.cipher.suffix if self.cipher else "")

    def chunk_path(self, chunk_id: bytes) -> str:
        """The request path of a chunk (base path included)."""
        return self.base_path + chunk_path(chunk_id, self._suffix)

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
        return self.check_plain(chunk_id, self._get(chunk_id, bound, invalid=True), digest, size)

    def fetch(
        self,
        chunk_id: bytes,
        digest: Digest,
        size: int | None = None,
        max_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
    ) -> tuple[bytes, Store, int]:
        """:meth:`get_chunk`, with the bytes of the answer's body (see :meth:`.base.Store.fetch`)."""
        if not self.uncompressed:
            return self.fetch_stored(chunk_id, digest, size, max_size)
        data = self.get_chunk(chunk_id, digest, size, max_size)
        return data, self, len(data)

    def has_chunk(self, chunk_id: bytes) -> bool:
        """HEAD the chunk: 200 = present, 404 = absent, anything else an error."""
        status, reason, body = self._request("HEAD", chunk_id)
        if status == 200:
            return True
        if status == 404:
            return False
        raise self._status_error("HEAD", chunk_id, status, reason, body)

    def stat_chunk(self, chunk_id: bytes) -> int | None:
        """HEAD: None for 404; a 200's Content-Length is the stored size (-1: none, or uncompressed)."""
        status, reason, body = self._request("HEAD", chunk_id)
        if status == 404:
            return None
        if status != 200:
            raise self._status_error("HEAD", chunk_id, status, reason, body)
        return int(body) if body.isdigit() and not (self.uncompressed or self.cipher) else -1

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

    # ------------------------------------------------------------------ requests

    def _get(self, chunk_id: bytes, limit: int, invalid: bool = False) -> bytes:
        limit += self.cipher.overhead if self.cipher else 0
        try:
            status, reason, body = self._request("GET", chunk_id, limit=limit)
        except TooLarge as exc:
            if invalid:
                raise ChunkInvalid(chunk_id, None, f"larger than {limit} bytes", self) from None
            size = f"{exc.size} bytes" if exc.size is not None else "a body"
            raise StoreError(
                f"store {self}: GET chunk {chunk_id.hex()}: server sent {size}, "
                f"more than a chunk can be ({limit} bytes)"
            ) from None
        if status == 200:
            return body if self.cipher is None else self.cipher.decrypt(body, chunk_id, self)
        raise self._status_error("GET", chunk_id, status, reason, body)

    def _put(self, chunk_id: bytes, body: bytes | memoryview) -> None:
        sealed = bytes(body) if self.cipher is None else self.cipher.encrypt(body)
        status, reason, answer = self._request("PUT", chunk_id, body=sealed)
        if not 200 <= status < 300:
            raise self._status_error("PUT", chunk_id, status, reason, answer)

    def _status_error(self, method: str, chunk_id: bytes, status: int, reason: str, body: bytes) -> Exception:
        """The error for a final status that is not success."""
        if status == 404 and method != "PUT":
            return ChunkMissing(chunk_id, self)
        what = f"store {self}: {method} chunk {chunk_id.hex()}: HTTP {status} {reason}".rstrip()
        if status in (401, 403):
            return self._denied(what)
        text = snippet(body)
        return StoreError(f"{what}: {text}" if text else what)

    def _request(
        self, method: str, chunk_id: bytes, body: bytes | None = None, limit: int = _ERROR_BODY_LIMIT
    ) -> tuple[int, str, bytes]:
        """(status, reason, body) of the chunk's request (see :meth:`_call`)."""
        path = self.chunk_path(chunk_id)
        return self._call(method, path, f"chunk {chunk_id.hex()}", body, limit)  # type: ignore[return-value]


class HTTPIndexStore(_HTTPBase, WriteIndexStore):
    """Index files on a web server: ``<base>/<name>`` read with GET, stored with PUT (see the module)."""

    kind = "index store"

    def index_path(self, name: str) -> str:
        """The request path of an index (base path included; the name percent-encoded)."""
        return self.base_path + urllib.parse.quote(check_index_name(name, self), safe="")

    def open_index(self, name: str) -> BinaryIO:
        """Stream the index (the caller closes the stream); 404 is :class:`IndexNotFound`."""
        status, reason, body = self._call("GET", self.index_path(name), f"index {name}", stream=True)
        if status == 200:
            return body  # type: ignore[return-value]
        raise self._status_error("GET", name, status, reason, body)  # type: ignore[arg-type]

    def has_index(self, name: str) -> bool:
        """HEAD the index: 200 = present, 404 = absent, anything else an error."""
        status, reason, body = self._call("HEAD", self.index_path(name), f"index {name}")
        if status == 200:
            return True
        if status == 404:
            return False
        raise self._status_error("HEAD", name, status, reason, body)  # type: ignore[arg-type]

    def put_index(self, name: str, source: BinaryIO, size: int) -> None:
        """PUT ``size`` bytes of ``source``, streamed (retried only when ``source`` can seek back)."""
        what = f"index {name}"
        upload = _Upload(source, size, f"{self.kind} {self}: PUT {what}")
        status, reason, answer = self._call("PUT", self.index_path(name), what, body=upload)
        if not 200 <= status < 300:
            raise self._status_error("PUT", name, status, reason, answer)  # type: ignore[arg-type]

    def _status_error(self, method: str, name: str, status: int, reason: str, body: bytes) -> StoreError:
        if status == 404 and method != "PUT":
            return IndexNotFound(f"index store {self}: index {name} not found")
        what = f"index store {self}: {method} index {name}: HTTP {status} {reason}".rstrip()
        if status in (401, 403):
            return self._denied(what)
        text = snippet(body)
        return StoreError(f"{what}: {text}" if text else what)


def open_http(location: str, options: StoreOptions) -> HTTPStore:
    """The store factory for ``http://`` and ``https://`` locations (see :data:`location.BACKENDS`)."""
    return HTTPStore(location, options)


def open_http_index_store(location: str, options: StoreOptions) -> HTTPIndexStore:
    """The index store factory for ``http://`` and ``https://`` (see :data:`.backends.BACKENDS`)."""
    return HTTPIndexStore(location, options)
