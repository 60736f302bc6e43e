"""A misbehaving HTTP chunk server for fault-injection tests of the HTTP store client.

:class:`FaultyServer` is a real HTTP/1.1 server (``http.server`` in a thread on
``127.0.0.1`` with an ephemeral port, keep-alive) that serves the bodies in
:attr:`FaultyServer.chunks` by request path (404 for others, PUT stores the
body and answers 201) unless a *plan* says otherwise: :meth:`FaultyServer.plan`
queues actions for a path (or for any path), taken one per request:

- :class:`Status` answers a status (``Status(500)``, ``Status(401)``, ...);
- :class:`Reset` aborts the connection with a TCP reset, answering nothing;
- :class:`Drop` closes the connection without answering;
- :class:`Short` declares a Content-Length, sends fewer bytes and closes;
- :class:`Slow` waits before acting (a client timeout);
- :class:`CloseAfter` answers normally as if keeping the connection, then closes it;
- :class:`Drip` sends the normal answer a byte at a time (a server that is slow on purpose).

It is also a forward proxy for proxy tests: a request for an absolute URL is
served like any other (the recorded path is the whole URL), and ``CONNECT
host:port`` opens a tunnel to 127.0.0.1 at that port, whatever the host.

Every request is recorded (:attr:`FaultyServer.requests`, :meth:`FaultyServer.count`)
so tests can assert exactly how often a client asked. Use it as a context
manager; leaving stops the server and closes every connection.
"""

from __future__ import annotations

import collections
import contextlib
import io
import select
import socket
import struct
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Union

from tests.support import free_port

__all__ = [
    "FaultyServer",
    "Recorded",
    "Status",
    "Reset",
    "Drop",
    "Short",
    "Slow",
    "CloseAfter",
    "Drip",
    "free_port",
]


@dataclass
class Status:
    """Answer ``code`` with ``body``."""

    code: int
    body: bytes = b""


@dataclass
class Reset:
    """Abort the connection (RST) without answering."""


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class Short:
    """Answer 200 declaring ``declared`` bytes, send ``body`` (fewer), close."""

    body: bytes
    declared: int


@dataclass
class Slow:
    """Wait ``seconds`` (or until the server stops), then do ``then`` (None = the normal answer)."""

    seconds: float
    then: Action | None = None


@dataclass
class CloseAfter:
    """Answer normally (keep-alive) and then close the connection silently."""


@dataclass
class Drip:
    """Send the normal answer one byte every ``interval`` s (from its status line when ``head``)."""

    interval: float
    head: bool = False


Action = Union[Status, Reset, Drop, Short, Slow, CloseAfter, Drip]


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: The client's (host, port): one value per connection.
    client: tuple[str, int] = ("", 0)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_HEAD = do_GET
    do_PUT = do_GET

    def do_CONNECT(self) -> None:
        self.server.owner.tunnel(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FaultyServer

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        self.owner.track(request)
        super().process_request(request, client_address)


class FaultyServer:
    """See the module."""

    def __init__(self) -> None:
        self.chunks: dict[str, bytes] = {}
        self.requests: list[Recorded] = []
        self._plans: dict[str | None, collections.deque[Action]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="faulty-http", daemon=True
        )

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyServer:
        """Start serving (in a thread)."""
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving and close every connection."""
        self._stop.set()
        self._httpd.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> FaultyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def track(self, sock: socket.socket) -> None:
        """Remember an accepted connection (closed at shutdown)."""
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body: no Nagle wait
        with self._lock:
            self._sockets.add(sock)

    def plan(self, path: str | None, *actions: Action) -> None:
        """Queue ``actions`` for requests of ``path`` (``None``: any path without its own plan)."""
        with self._lock:
            self._plans.setdefault(path, collections.deque()).extend(actions)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests (of ``method``, for ``path``) arrived."""
        with self._lock:
            return sum(
                1 for r in self.requests
                if (method is None or r.method == method) and (path is None or r.path == path)
            )

    # ------------------------------------------------------------------ serving

    def _next_action(self, path: str) -> Action | None:
        with self._lock:
            for key in (path, None):
                queue = self._plans.get(key)
                if queue:
                    return queue.popleft()
        return None

    def handle(self, h: _Handler) -> None:
        """Record the request and act on it."""
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(
                Recorded(h.command, h.path, dict(h.headers.items()), body, tuple(h.client_address[:2]))
            )
        self._act(h, self._next_action(h.path), body)

    def tunnel(self, h: _Handler) -> None:
        """Relay bytes between the client and 127.0.0.1:<the requested port>."""
        with self._lock:
            self.requests.append(
                Recorded(h.command, h.path, dict(h.headers.items()), b"", tuple(h.client_address[:2]))
            )
        h.close_connection = True
        port = int(h.path.rpartition(":")[2])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as upstream, \
                contextlib.suppress(OSError):
            h.send_response(200, "Connection established")
            h.end_headers()
            ends = [h.connection, upstream]
            while not self._stop.is_set():
                ready, _, _ = select.select(ends, [], [], 0.05)
                for end in ready:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is h.connection else h.connection).sendall(data)

    def _act(self, h: _Handler, action: Action | None, body: bytes) -> None:
        if isinstance(action, Slow):
            if self._stop.wait(action.seconds):
                h.close_connection = True
                return
            action = action.then
        if isinstance(action, Status):
            self._answer(h, action.code, action.body)
        elif isinstance(action, Reset):
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            h.wfile.close()  # the socket closes (with a reset) only once its files are closed
            h.rfile.close()
            h.connection.close()
            h.wfile = io.BytesIO()  # what the handler still flushes
        elif isinstance(action, Drop):
            h.close_connection = True
        elif isinstance(action, Short):
            h.send_response(200)
            h.send_header("Content-Length", str(action.declared))
            h.end_headers()
            h.wfile.write(action.body)
            h.close_connection = True
        elif isinstance(action, Drip):
            self._drip(h, action)
        else:
            self._normal(h, body)
            if isinstance(action, CloseAfter):
                h.close_connection = True

    def _normal(self, h: _Handler, body: bytes) -> None:
        if h.command == "PUT":
            with self._lock:
                self.chunks[h.path] = body
            self._answer(h, 201)
            return
        with self._lock:
            data = self.chunks.get(h.path)
        if data is None:
            self._answer(h, 404, b"not found")
        else:
            self._answer(h, 200, data)

    def _drip(self, h: _Handler, drip: Drip) -> None:
        """The answer (the stored body, or 404), a byte per interval, until sent or the server stops."""
        with self._lock:
            data = self.chunks.get(h.path)
        code, data = (200, data) if data is not None else (404, b"not found")
        head = f"HTTP/1.1 {code} X\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        h.close_connection = True
        start = 0
        if not drip.head:
            start = len(head)
        answer = head + data
        with contextlib.suppress(OSError):
            if start:
                h.connection.sendall(answer[:start])
            for i in range(start, len(answer)):
                if self._stop.wait(drip.interval):
                    return
                h.connection.sendall(answer[i : i + 1])

    @staticmethod
    def _answer(h: _Handler, code: int, body: bytes = b"") -> None:
        try:
            h.send_response(code)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(body)
        except OSError:  # the client went away (it timed out)
            h.close_connection = True
