"""Connection bookkeeping for :mod:`.httpserver`: read deadlines, per-client limits, slow-client eviction.

A slowloris client opens many connections and sends each request head a
byte at a time, so that a server bounding only the silence between two
reads keeps every worker busy for ever. The pieces here let the server
bound what matters instead:

- :class:`DeadlineReader`, the raw stream under a connection's buffered
  reader: in *head* mode every read waits at most until one fixed deadline
  (so trickling bytes never extends it), in *idle* mode (a keep-alive
  connection waiting for its next request) until the idle deadline, and
  the first byte that arrives starts the head deadline; in *body* mode each
  read waits at most the ordinary I/O timeout.
- :func:`client_key`: the address a per-client limit counts by (an IPv4
  address; an IPv6 address by its /64, the block one host or one home
  usually gets; an IPv4-mapped IPv6 address as the IPv4 address).
- :class:`Connections`: every open connection, the count per client key
  (:meth:`Connections.admit` refuses one over the cap), which connections
  are still waiting for a request head and since when (the oldest one is
  evicted when every slot is taken), and rate-limited warnings that say
  how many connections were refused or cut.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import logging
import socket
import threading
import time
from collections import Counter

__all__ = ["DeadlineReader", "client_key", "Connection", "Connections", "shut"]

logger = logging.getLogger("casync_store.serve.httpserver")

_REPORT_EVERY = 10.0  # seconds between two warnings of the same kind


def client_key(host: str) -> str:
    """The per-client limit's key of a peer address (see the module doc)."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


def shut(sock: socket.socket, how: int = socket.SHUT_RD) -> None:
    """Wake a thread blocked reading ``sock`` (on the raw socket, below any TLS layer)."""
    with contextlib.suppress(OSError):  # already closed by its own thread
        socket.socket.shutdown(sock, how)


class DeadlineReader(io.RawIOBase):
    """A socket's receive side whose reads wait until a deadline, not per read (see the module doc)."""

    def __init__(self, sock: socket.socket, io_timeout: float, head_timeout: float) -> None:
        super().__init__()
        self.sock = sock
        self.io_timeout = io_timeout
        self.head_timeout = head_timeout
        self._deadline: float | None = None
        self._idle = False
        #: "head" or "idle" once a read gave up at that deadline
        self.expired: str | None = None

    def expect_head(self, deadline: float) -> None:
        """The complete request head must arrive before ``deadline`` (a monotonic time)."""
        self._deadline, self._idle = deadline, False

    def expect_idle(self, idle_timeout: float) -> None:
        """Wait up to ``idle_timeout`` for the next request; its first byte starts the head deadline."""
        self._deadline, self._idle = time.monotonic() + idle_timeout, True

    def expect_body(self) -> None:
        """The head is in: each read waits at most the I/O timeout."""
        self._deadline, self._idle = None, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._deadline is None:
            return self.sock.recv_into(buffer)  # the socket's timeout is the I/O timeout
        mode = "idle" if self._idle else "head"
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.expired = mode
            raise socket.timeout("idle connection closed" if self._idle else "request head timed out")
        self.sock.settimeout(left)
        try:
            n = self.sock.recv_into(buffer)
        except socket.timeout:
            self.expired = mode
            raise
        finally:
            self.sock.settimeout(self.io_timeout)  # writes (error answers) never inherit the deadline
        if n and self._idle:  # the next request has begun: its head must now come in time
            self.expect_head(time.monotonic() + self.head_timeout)
        return n


class Connection:
    """One open connection: its socket (the TLS one once wrapped) and its head-waiting state."""

    __slots__ = ("evicted", "key", "sock", "waiting_since")

    def __init__(self, sock: socket.socket, key: str, since: float) -> None:
        self.sock = sock
        self.key = key
        self.waiting_since: float | None = since  # None while a request is being served
        self.evicted = False  # closed to make room: what it sent so far is not answered


class _Report:
    """A warning logged at most every few seconds, with the number of events it stands for."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self.last = 0.0
        self.lock = threading.Lock()

    def event(self, *args: object) -> None:
        now = time.monotonic()
        with self.lock:
            self.count += 1
            if now - self.last < _REPORT_EVERY:
                return
            count, self.count, self.last = self.count, 0, now
        logger.warning(self.message, count, *args)


class Connections:
    """Every open connection of one server, counted per client key (see the module doc)."""

    def __init__(self, max_connections: int, max_client_connections: int, evict_after: float) -> None:
        self.max_connections = max_connections
        self.max_client_connections = max_client_connections
        self.evict_after = evict_after
        self.lock = threading.Lock()
        self.open: set[Connection] = set()
        self.per_client: Counter[str] = Counter()
        self.refused = _Report("refused %d connections over the limit of %d per client address "
                               "(last from %s)")
        self.cut = _Report("closed %d connections that sent no complete request head in time "
                           "(last from %s)")
        self.evictions = _Report("closed %d connections still waiting for a request head: all %d connection "
                               "slots were taken")

    def admit(self, sock: socket.socket, host: str, since: float) -> Connection | None:
        """Count a new connection, or None when its client already has the most allowed."""
        key = client_key(host)
        with self.lock:
            if self.per_client[key] >= self.max_client_connections:
                refused = True
            else:
                refused = False
                self.per_client[key] += 1
                conn = Connection(sock, key, since)
                self.open.add(conn)
        if refused:
            self.refused.event(self.max_client_connections, host)
            return None
        return conn

    def release(self, conn: Connection) -> None:
        with self.lock:
            if conn in self.open:
                self.open.discard(conn)
                self.per_client[conn.key] -= 1
                if self.per_client[conn.key] <= 0:
                    del self.per_client[conn.key]

    def set_waiting(self, conn: Connection, since: float | None) -> None:
        with self.lock:
            conn.waiting_since = since

    def evict_oldest_waiting(self) -> bool:
        """Close the connection that has waited longest for a request head (at least ``evict_after``)."""
        now = time.monotonic()
        with self.lock:
            waiting = [c for c in self.open if c.waiting_since is not None]
            oldest = min(waiting, key=lambda c: c.waiting_since or now, default=None)
            if oldest is None or now - (oldest.waiting_since or now) < self.evict_after:
                return False
            oldest.waiting_since = None  # not chosen twice
            oldest.evicted = True
            shut(oldest.sock, socket.SHUT_RDWR)
        self.evictions.event(self.max_connections)
        return True

    def waiting(self) -> list[Connection]:
        with self.lock:
            return [c for c in self.open if c.waiting_since is not None]

    def all(self) -> list[Connection]:
        with self.lock:
            return list(self.open)
