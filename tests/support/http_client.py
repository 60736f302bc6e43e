"""Requests to a test server, over http.client or as raw bytes on a socket.

:func:`request` sends one request with :mod:`http.client` (HTTPS when given
an SSL context) and returns the status, the response and its body;
:func:`raw_request` writes raw bytes, half-closes the connection and returns
the status and the whole reply. Both take any server with ``addresses``
(the chunk-server's and index-server's ``Server``).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from casync_store.serve.httpserver import Server

__all__ = ["request", "raw_request"]


def request(server: Server, method: str, target: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None,
            ) -> tuple[int, http.client.HTTPResponse, bytes]:
    """One request to ``server.addresses[0]``: ``(status, response, body)``."""
    host, port = server.addresses[0]
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=10)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    with contextlib.closing(conn):
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response, response.read()


def raw_request(server: Server, data: bytes) -> tuple[int, bytes]:
    """Send raw bytes, return (status, whole response); the server must close or answer one request."""
    with socket.create_connection(server.addresses[0], timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            block = sock.recv(65536)
            if not block:
                break
            reply += block
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, reply
