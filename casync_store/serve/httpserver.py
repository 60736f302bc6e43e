"""A small threaded HTTP/1.1 server (stdlib only) that the chunk and index servers plug routes into.

:class:`Server` listens on one or more addresses written the way desync takes
them (``:8080``, ``127.0.0.1:8080``, ``[::1]:8080``, ``:http``), optionally
over TLS (:class:`TLSOptions`, with mutual TLS: a client certificate signed by
the given CA is required), and hands every request to an *app*: a callable
taking a :class:`Request` and returning a :class:`Response` (or raising
:class:`HTTPError`). The server owns what is the same for every route: an
optional required ``Authorization`` value (compared in constant time, never
logged), bounded request lines, headers and bodies (read whole, or streamed
to a file by :meth:`Request.copy_body`), keep-alive, ``100 Continue`` sent
only when the app reads the body, file bodies of responses closed once sent,
a request log (a file, or ``-`` for stdout) whose lines never carry header
values, TLS handshakes in the connection's own thread (a slow client never
stalls accepting), and a graceful stop: stop accepting, close idle
keep-alive connections, let requests in flight finish (up to a grace period).

Slow and greedy clients (slowloris) are bounded by :class:`Limits`: a client
must send its complete request head (after the TLS handshake, when there is
one) within ``head_timeout`` of the connection's accept, one deadline for the
whole head, not a timeout per read, so trickling a byte at a time never
extends it; a keep-alive connection may wait ``idle_timeout`` for its next
request, whose head must then be complete within ``head_timeout`` of its
first byte; a body's reads each wait at most ``io_timeout``. At most
``max_client_connections`` connections are open per client address (an
IPv4 address, an IPv6 /64): one more is answered 503 and closed at once,
without taking a worker. At most ``max_connections`` are open in all; when
every one is taken, the connection that has waited longest (at least a
second) for a request head is closed to make room, otherwise accepting waits.
:meth:`Server.serve_until_signal` runs until SIGTERM or SIGINT and returns.
The app-facing message types live in :mod:`.httpmessage` and are re-exported
here.
"""

from __future__ import annotations

import hmac
import io
import logging
import re
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, Callable, TextIO

from casync_format.errors import ParameterError

from ._httpconn import Connection, Connections, DeadlineReader, shut
from ._listen import TLSOptions, bind, parse_listen, server_context
from .httpmessage import App, HTTPError, Request, Response, text_response

__all__ = [
    "TLSOptions", "Request", "Response", "HTTPError", "App", "Server", "RequestLog", "ResourceRoutes",
    "text_response",
    "parse_listen", "server_context", "MAX_REQUEST_LINE", "IDLE_TIMEOUT", "MAX_CONNECTIONS", "Limits",
    "HEAD_TIMEOUT", "MAX_CLIENT_CONNECTIONS",
]

logger = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8192  # bytes in "METHOD target HTTP/1.1" (414 beyond)
IDLE_TIMEOUT = 60.0  # seconds a connection may stay silent (idle keep-alive or mid-body)
HEAD_TIMEOUT = 20.0  # seconds from accept (or a later request's first byte) to a complete request head
MAX_CONNECTIONS = 512  # open connections in all
MAX_CLIENT_CONNECTIONS = 64  # open connections per client address (IPv4 address, IPv6 /64)
_EVICT_AFTER = 1.0  # seconds a connection must have waited for its head before it may be evicted
_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Length: 40\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
             b"too many connections from your address\r\n")
_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


@dataclass
class Limits:
    """Bounds on connections and on slow clients (see the module doc); seconds and counts."""

    head_timeout: float = HEAD_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    io_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    max_client_connections: int = MAX_CLIENT_CONNECTIONS

    def check(self) -> None:
        """Raise ParameterError unless every bound is positive."""
        for name, value in vars(self).items():
            if not value > 0:
                raise ParameterError(f"{name.replace('_', ' ')} must be positive, not {value}")


class ResourceRoutes:
    """An app serving one kind of named resource (chunks, indexes) by GET, HEAD and PUT.

    A subclass turns the request target into a key (None: 400 with
    :attr:`bad_target`) and implements ``_get``, ``_head`` and ``_put``; any
    other method is a 405 naming those allowed. :meth:`_failed` answers a
    store failure with a 500 and logs it, naming the resource.
    """

    #: the resource's name in messages ("chunk", "index")
    kind = "resource"
    writable = False

    def key(self, target: str) -> Any:
        """The resource a target names, or None when the target is malformed."""
        raise NotImplementedError

    def bad_target(self) -> str:
        """The 400 answer's text for a malformed target."""
        return f"invalid {self.kind} name"

    def __call__(self, request: Request) -> Response:
        key = self.key(request.target)
        if key is None:
            return text_response(400, self.bad_target())
        if request.method == "GET":
            return self._get(key)
        if request.method == "HEAD":
            return self._head(key)
        if request.method == "PUT":
            return self._put(key, request)
        allow = "GET, HEAD, PUT" if self.writable else "GET, HEAD"
        return text_response(405, "only GET, PUT and HEAD are supported", [("Allow", allow)])

    def _get(self, key: Any) -> Response:
        raise NotImplementedError

    def _head(self, key: Any) -> Response:
        raise NotImplementedError

    def _put(self, key: Any, request: Request) -> Response:
        raise NotImplementedError

    def _failed(self, doing: str, name: str, exc: BaseException) -> Response:
        logging.getLogger(type(self).__module__).error("failed to %s %s %s: %s", doing, self.kind, name, exc)
        return text_response(500, f"internal server error: cannot {doing} {self.kind} {name}")


class RequestLog:
    """Request log lines (common-log-like) to a file, appended, or to stdout for ``-``."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        self._file: TextIO | None = None
        if path != "-":
            try:
                self._file = open(path, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            except OSError as exc:
                raise ParameterError(f"cannot open request log {path}: {exc.strerror}") from None

    def write(self, client: str, what: str, status: object, size: object, seconds: float) -> None:
        """Write one line; ``what`` is escaped (no control characters, at most 300 characters)."""
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        line = f'{client} - - [{stamp}] "{_printable(what)}" {status} {size} {seconds * 1000:.1f}ms\n'
        out = self._file if self._file is not None else sys.stdout
        with self._lock:
            out.write(line)
            out.flush()

    def close(self) -> None:
        """Close the log file (stdout stays open)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _printable(text: str, limit: int = 300) -> str:
    """``text`` with spaces kept and every other non-printable as an escape, truncated."""
    words = [_UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", w) for w in text.split(" ")]
    out = " ".join(words)
    return out if len(out) <= limit else out[:limit] + "..."


class _Shared:
    """State every listener and connection of one :class:`Server` shares."""

    def __init__(self, app: App, authorization: str | None, log: RequestLog | None,
                 ssl_context: ssl.SSLContext | None, limits: Limits) -> None:
        self.app = app
        self.authorization = authorization.encode("utf-8") if authorization is not None else None
        self.log = log
        self.ssl_context = ssl_context
        self.limits = limits
        self.timeout = limits.io_timeout
        self.slots = threading.BoundedSemaphore(limits.max_connections)
        self.connections = Connections(limits.max_connections, limits.max_client_connections, _EVICT_AFTER)
        self.lock = self.connections.lock  # guards stopping and every connection's waiting state
        self.stopping = False
        self.threads: set[threading.Thread] = set()


class _Handler(BaseHTTPRequestHandler):
    """One connection: reads requests in a loop and hands them to the app."""

    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so that errors to version-less requests get a status line
    server_version = "pycasync"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Listener

    def __init__(self, request: socket.socket, client_address: tuple[str, int], server: _Listener,
                 record: Connection, accepted: float) -> None:
        self.record = record
        self.accepted = accepted
        self.first = True
        super().__init__(request, client_address, server)

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        limits = self.server.shared.limits
        self.connection.settimeout(limits.io_timeout)
        self.reader = DeadlineReader(self.connection, limits.io_timeout, limits.head_timeout)
        self.rfile.close()
        self.rfile = io.BufferedReader(self.reader, 1 << 16)

    def handle(self) -> None:
        self.close_connection = True
        try:
            self.handle_one_request()
            while not self.close_connection:
                self.handle_one_request()
        except (OSError, ValueError) as exc:  # resets, timeouts, TLS errors, I/O on a closed file
            if self.reader.expired == "head":
                self.server.shared.connections.cut.event(self.client_address[0])
            logger.debug("client %s: connection ended: %s", self.client_address[0], exc)

    def _next_request_line(self) -> bytes:
        shared = self.server.shared
        with shared.lock:
            if shared.stopping:
                return b""
            self.record.waiting_since = self.accepted if self.first else time.monotonic()
        if self.first:
            self.reader.expect_head(self.accepted + shared.limits.head_timeout)
        else:
            self.reader.expect_idle(shared.limits.idle_timeout)
        self.first = False
        return self.rfile.readline(MAX_REQUEST_LINE + 1)

    def _head_read(self) -> None:
        """The head is in (or refused): body reads wait the I/O timeout, and no eviction."""
        self.reader.expect_body()
        self.server.shared.connections.set_waiting(self.record, None)

    def parse_request(self) -> bool:
        try:
            return super().parse_request()
        finally:
            self._head_read()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if self.record.evicted:  # a head cut short by eviction: nothing to answer
            self.close_connection = True
            return
        super().send_error(code, message, explain)

    def handle_one_request(self) -> None:
        self.close_connection = True
        self.raw_requestline = self._next_request_line()
        if not self.raw_requestline or self.record.evicted:  # closed, or evicted mid-head
            return
        self.started = time.monotonic()
        self.status: object = "-"
        self.sent = 0
        self.expect_continue = False
        try:
            if len(self.raw_requestline) > MAX_REQUEST_LINE:
                self._head_read()
                self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
                self.send_error(414)
            elif not self.parse_request():
                self.close_connection = True
            elif len(self.requestline.split()) != 3:  # HTTP/0.9: answered in HTTP/1.0, then closed
                self.send_error(400, "HTTP/0.9 requests are not supported")
            else:
                self._dispatch(self.requestline.split()[1])
        finally:
            self._log()
        if self.server.shared.stopping:
            self.close_connection = True

    def handle_expect_100(self) -> bool:
        self.expect_continue = True  # sent when the app reads the body, never before checks
        return True

    def send_continue(self) -> None:
        """Tell a client waiting on ``Expect: 100-continue`` to send its body."""
        self.expect_continue = False
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _authorized(self) -> bool:
        expected = self.server.shared.authorization
        if expected is None:
            return True
        values = self.headers.get_all("Authorization") or []
        got = str(values[0]).strip(" \t").encode("latin-1", "replace") if len(values) == 1 else b""
        return hmac.compare_digest(got, expected) and len(values) == 1

    def _dispatch(self, target: str) -> None:
        request = Request(self, target)
        authorized = self._authorized()
        response = self._call_app(request) if authorized else text_response(401, "Unauthorized")
        if self.expect_continue or (request.has_body and not request.body_read):
            self.close_connection = True  # an unread body would be taken for the next request
        self._send(response)

    def _call_app(self, request: Request) -> Response:
        try:
            return self.server.shared.app(request)
        except HTTPError as exc:
            if exc.status in (400, 411, 413):
                self.close_connection = True
            return text_response(exc.status, exc.message, exc.headers)
        except Exception:  # a bug in a route: logged with its traceback, answered 500
            logger.exception("%s %s failed", request.method, _printable(request.target))
            return text_response(500, "internal server error")

    def _send(self, response: Response) -> None:
        try:
            self._send_response(response)
        finally:
            if not isinstance(response.body, bytes):
                response.body.close()

    def _send_response(self, response: Response) -> None:
        body = response.body
        length = len(body) if isinstance(body, bytes) else response.length
        if self.server.shared.stopping:
            self.close_connection = True
        self.send_response(response.status)
        has_length = False
        for name, value in response.headers:
            has_length = has_length or name.lower() == "content-length"
            self.send_header(name, value)
        if not has_length and length is not None and not (self.command == "HEAD" and not length):
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        if isinstance(body, bytes):
            self.wfile.write(body)
            self.sent = len(body)
        else:
            self._copy_file(body, length or 0)

    def _copy_file(self, body: BinaryIO, length: int) -> None:
        remaining = length
        while remaining > 0:
            block = body.read(min(remaining, 1 << 20))
            if not block:
                self.close_connection = True  # the file shrank: the client sees a short body
                return
            self.wfile.write(block)
            remaining -= len(block)
            self.sent += len(block)

    def log_request(self, code: object = "-", size: object = "-") -> None:
        self.status = int(code) if isinstance(code, int) else code

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("client %s: %s", self.client_address[0], _printable(format % args))

    def _log(self) -> None:
        log = self.server.shared.log
        if log is not None:
            what = self.requestline if self.requestline else self.raw_requestline.decode("latin-1")[:300]
            log.write(self.client_address[0], what.rstrip("\r\n"), self.status, self.sent,
                      time.monotonic() - self.started)


class _Listener(socketserver.TCPServer):
    """Accepts connections on one socket and serves each in its own daemon thread."""

    def __init__(self, sock: socket.socket, shared: _Shared) -> None:
        # BaseServer never calls the class (process_request is overridden and _connection builds each
        # _Handler with its two extra arguments), so its three-argument contract does not apply.
        socketserver.BaseServer.__init__(self, sock.getsockname(), _Handler)  # type: ignore[arg-type]
        self.socket = sock
        self.shared = shared

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        shared = self.shared
        accepted = time.monotonic()
        record = shared.connections.admit(request, client_address[0], accepted)
        if record is None:  # over the client's cap: answered at once, no worker taken
            self._refuse(request)
            return
        if not shared.slots.acquire(blocking=False):
            while True:
                shared.connections.evict_oldest_waiting()
                if shared.slots.acquire(timeout=0.1):
                    break
                if shared.stopping:
                    shared.connections.release(record)
                    self.shutdown_request(request)
                    return
        thread = threading.Thread(target=self._connection, args=(request, client_address, record, accepted),
                                  daemon=True, name=f"http-{client_address[0]}:{client_address[1]}")
        with shared.lock:
            shared.threads.add(thread)
        thread.start()

    def _refuse(self, request: socket.socket) -> None:
        """Answer 503 (plain HTTP only: no handshake is spent on it) and close, never blocking."""
        try:
            if self.shared.ssl_context is None:
                request.setblocking(False)
                request.send(_TOO_MANY)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def _connection(self, request: socket.socket, client_address: tuple[str, int], record: Connection,
                    accepted: float) -> None:
        shared = self.shared
        conn: socket.socket | None = request
        try:
            if shared.ssl_context is not None:
                conn = self._handshake(shared.ssl_context, request, client_address, accepted)
                with shared.lock:  # the raw socket is detached once wrapped: track the TLS one
                    record.sock = conn or request
            if conn is not None:
                _Handler(conn, client_address, self, record, accepted)
        except OSError as exc:
            logger.debug("client %s: %s", client_address[0], exc)
        finally:
            self.shutdown_request(conn if conn is not None else request)
            shared.connections.release(record)
            with shared.lock:
                shared.threads.discard(threading.current_thread())
            shared.slots.release()

    def _handshake(self, context: ssl.SSLContext, sock: socket.socket,
                   client_address: tuple[str, int], accepted: float) -> ssl.SSLSocket | None:
        started = time.monotonic()
        # CPython's handshake timeout is one deadline for the whole handshake, part of the head's
        sock.settimeout(max(0.001, accepted + self.shared.limits.head_timeout - started))
        try:
            return context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc.__class__.__name__
            logger.info("client %s: TLS handshake failed: %s", client_address[0], reason)
            if self.shared.log is not None:
                self.shared.log.write(client_address[0], f"TLS handshake failed: {reason}", "-", 0,
                                      time.monotonic() - started)
            return None

    def handle_error(self, request: object, client_address: object) -> None:
        logger.exception("error serving %s", client_address)


class Server:
    """An HTTP(S) server for one app on several listen addresses.

    ``listen``: desync addresses (see :func:`parse_listen`); ``authorization``:
    the exact ``Authorization`` header value every request must carry (401
    otherwise); ``log``: request log path or ``-`` (stdout); ``limits``: the
    bounds on connections and slow clients (:class:`Limits`, defaults when None).
    """

    def __init__(self, app: App, listen: Sequence[str], *, tls: TLSOptions | None = None,
                 authorization: str | None = None, log: str | None = None,
                 limits: Limits | None = None) -> None:
        if isinstance(listen, str):
            listen = [listen]
        if not listen:
            raise ParameterError("no listen address")
        for address in listen:
            parse_listen(address)
        if authorization is not None and (not authorization or re.search(r"[\r\n\x00]", authorization)):
            raise ParameterError("the required Authorization value must be one non-empty line")
        self.listen = list(listen)
        limits = limits if limits is not None else Limits()
        limits.check()
        context = server_context(tls) if tls is not None else None
        request_log = RequestLog(log) if log else None
        self._shared = _Shared(app, authorization, request_log, context, limits)
        self._listeners: list[_Listener] = []
        self._addresses: list[tuple[str, int]] = []
        self._threads: list[threading.Thread] = []
        self._stop_requested = threading.Event()
        self._state_lock = threading.Lock()
        self._stopped = False

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The bound (host, port) of every listener, in ``listen`` order (after :meth:`start`)."""
        return list(self._addresses)

    def start(self) -> list[tuple[str, int]]:
        """Bind every address and serve in background threads; returns :attr:`addresses`."""
        with self._state_lock:
            if self._listeners or self._stopped:
                raise ParameterError("server already started")
            try:
                for address in self.listen:
                    self._listeners.append(_Listener(bind(address), self._shared))
            except ParameterError:
                for listener in self._listeners:
                    listener.server_close()
                self._listeners = []
                raise
            self._addresses = [(str(s.socket.getsockname()[0]), int(s.socket.getsockname()[1]))
                               for s in self._listeners]
            for listener in self._listeners:
                thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2},
                                          daemon=True, name=f"http-accept-{listener.server_address[1]}")
                thread.start()
                self._threads.append(thread)
        return self.addresses

    def shutdown(self, grace: float = 30.0) -> None:
        """Stop accepting, close idle connections, wait up to ``grace`` s for requests in flight."""
        with self._state_lock:
            if self._stopped:
                return
            self._stopped = True
            shared = self._shared
            with shared.lock:
                shared.stopping = True
                for conn in shared.connections.open:
                    if conn.waiting_since is not None:
                        shut(conn.sock)
            for listener in self._listeners:
                listener.shutdown()
                listener.server_close()
            self._wait_connections(time.monotonic() + grace)
            if shared.log is not None:
                shared.log.close()
        self._stop_requested.set()

    def _wait_connections(self, deadline: float) -> None:
        shared = self._shared
        while True:
            with shared.lock:
                threads = list(shared.threads)
            if not threads:
                return
            if time.monotonic() >= deadline:
                break
            threads[0].join(max(0.0, min(0.2, deadline - time.monotonic())))
        logger.warning("closing %d connections still busy after the grace period", len(threads))
        with shared.lock:
            for conn in shared.connections.open:
                shut(conn.sock, socket.SHUT_RDWR)
        for thread in threads:
            thread.join(1.0)

    def serve_until_signal(self, ready: Callable[[list[tuple[str, int]]], None] | None = None,
                           grace: float = 30.0, hangup: Callable[[], None] | None = None) -> None:
        """Start, call ``ready(addresses)``, block until SIGTERM/SIGINT (or :meth:`shutdown`), stop.

        With ``hangup``, each SIGHUP calls it (in this thread, while the
        connections go on being served; it must not raise). Signal handlers
        are installed only when called from the main thread and are restored
        on return.
        """
        previous = {}
        hangups = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: self._stop_requested.set())
            if hangup is not None:
                previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, lambda *_: hangups.set())
        try:
            addresses = self.start()
            if ready is not None:
                ready(addresses)
            while not self._stop_requested.wait(0.1 if hangup is not None else 0.5):
                if hangup is not None and hangups.is_set():
                    hangups.clear()
                    hangup()
        finally:
            self.shutdown(grace)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
