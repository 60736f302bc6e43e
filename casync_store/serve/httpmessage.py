"""What an app of :mod:`.httpserver` sees: its Request, the Response it returns, HTTPError.

A :class:`Request` carries the method, the target exactly as sent, the
headers and the client address, and reads the body on demand: whole into
memory (:meth:`Request.read_body`, Content-Length required) or streamed to a
file (:meth:`Request.copy_body`, which also decodes ``Transfer-Encoding:
chunked`` as Go clients send piped bodies); both enforce a size limit (413)
and send ``100 Continue`` only when the body is wanted. A :class:`Response`
is a status, headers and a body of bytes or a file of known length; an app
may raise :class:`HTTPError` to answer with a one-line text instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable

__all__ = ["Request", "Response", "HTTPError", "App", "text_response"]

_BODY_BLOCK = 1 << 20  # bytes per read when a body is streamed
_CHUNK_LINE = 8192  # longest chunk-size or trailer line of a chunked body
_CHUNK_TRAILERS = 64


@dataclass
class Response:
    """What an app answers: a status, headers, and a body (bytes, or a file of ``length`` bytes).

    A file body is closed by the server once sent (or once the request ended
    without sending it).
    """

    status: int
    body: bytes | BinaryIO = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    length: int | None = None  # required when body is a file


class HTTPError(Exception):
    """Raised by an app (or :meth:`Request.read_body`) to answer ``status`` with a short text."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


def text_response(status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> Response:
    """A ``text/plain`` response carrying one line."""
    content_type = ("Content-Type", "text/plain; charset=utf-8")
    return Response(status, (message + "\n").encode(), [content_type, *headers])


class Request:
    """One parsed request, as an app sees it.

    ``target`` is the request target exactly as the client sent it (not
    decoded, not normalized); ``headers`` an :class:`email.message.Message`.
    """

    def __init__(self, handler: Any, target: str) -> None:
        #: the server's BaseHTTPRequestHandler for this connection

        self._handler = handler
        self.method: str = handler.command
        self.target = target
        self.headers = handler.headers
        self.client: tuple[str, int] = handler.client_address[:2]
        self.body_read = False

    @property
    def content_length(self) -> int | None:
        """The declared body length; None when absent. HTTPError 400 when malformed."""
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return None
        if len(set(values)) != 1 or not re.fullmatch(r"[0-9]{1,19}", values[0].strip()):
            raise HTTPError(400, "invalid Content-Length")
        return int(values[0])

    @property
    def has_body(self) -> bool:
        """Whether the client announced a body (a non-zero length or a transfer coding)."""
        if "Transfer-Encoding" in self.headers:
            return True
        try:
            return bool(self.content_length)
        except HTTPError:
            return True

    def _start_body(self, limit: int, chunked_ok: bool = False) -> int | None:
        """Check the declared length (411, 413) or coding, then let the client send.

        Returns the body's length, or None for a ``Transfer-Encoding: chunked``
        body (accepted only when ``chunked_ok``; any other coding is 501).
        """
        codings = self.headers.get_all("Transfer-Encoding") or []
        if codings:
            if not chunked_ok:
                raise HTTPError(411, "a body needs Content-Length (no transfer coding)")
            if [c.strip().lower() for c in codings] != ["chunked"] or "Content-Length" in self.headers:
                self._handler.close_connection = True
                raise HTTPError(501, "only Transfer-Encoding: chunked (without Content-Length) is supported")
            length = None
        else:
            length = self.content_length
            if length is None:
                raise HTTPError(411, "Content-Length required")
            if length > limit:
                raise HTTPError(413, f"body of {length} bytes exceeds the limit of {limit}")
        self.body_read = True
        if self._handler.expect_continue:
            self._handler.send_continue()
        return length

    def read_body(self, limit: int) -> bytes:
        """Read the whole body: Content-Length required (411) and at most ``limit`` (413)."""
        length = self._start_body(limit)
        assert length is not None
        data = self._handler.rfile.read(length)
        if len(data) != length:
            self._handler.close_connection = True
            raise HTTPError(400, f"body ended after {len(data)} of {length} bytes")
        return data

    def copy_body(self, out: BinaryIO, limit: int) -> int:
        """Stream the whole body into ``out``; returns its length.

        The body has a Content-Length (at most ``limit``, else 413) or is sent
        with ``Transfer-Encoding: chunked`` (as Go clients send a piped body;
        decoded here, 413 as soon as it passes ``limit``). Memory stays bounded
        (one block at a time). If the body is malformed or ends early (400) or
        writing ``out`` fails, the connection is closed after the answer, since
        the rest of the body cannot be told from a next request.
        """
        length = self._start_body(limit, chunked_ok=True)
        try:
            if length is None:
                return self._copy_chunked(out, limit)
            self._copy_exactly(out, length, length)
        except BaseException:
            self._handler.close_connection = True
            raise
        return length

    def _copy_exactly(self, out: BinaryIO, n: int, total: int) -> None:
        left = n
        while left:
            block = self._handler.rfile.read(min(left, _BODY_BLOCK))
            if not block:
                raise HTTPError(400, f"body ended after {total - left} of {total} bytes")
            out.write(block)
            left -= len(block)

    def _line(self) -> bytes:
        line = self._handler.rfile.readline(_CHUNK_LINE + 1)
        if len(line) > _CHUNK_LINE or not line.endswith(b"\n"):
            raise HTTPError(400, "malformed chunked body")
        return line.rstrip(b"\r\n")

    def _copy_chunked(self, out: BinaryIO, limit: int) -> int:
        total = 0
        while True:
            size_text = self._line().split(b";", 1)[0].strip()
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise HTTPError(400, "malformed chunk size in a chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            if total + size > limit:
                raise HTTPError(413, f"body exceeds the limit of {limit} bytes")
            self._copy_exactly(out, size, total + size)
            total += size
            if self._line():
                raise HTTPError(400, "malformed chunked body")
        for _ in range(_CHUNK_TRAILERS):  # trailer fields, ignored, up to the empty line
            if not self._line():
                return total
        raise HTTPError(400, "too many trailer fields in a chunked body")


App = Callable[[Request], Response]
