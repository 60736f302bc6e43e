"""Byte-level input of the catar decoder: a buffered, offset-aware reader and payload readers.

:class:`CatarInput` reads a catar source (a binary file or a ``read(n)``
callable) in blocks, keeps the archive offset of everything it hands out so
every :class:`~casync_format.errors.FormatError` can name a byte offset, and
skips unread bytes without buffering them. :class:`PayloadReader` is the
file-like view of one regular file's payload that
:mod:`casync_format.catar_read` gives its consumers; it is invalidated when
the decoder moves on. Record parsing and validation live in ``catar_read``.
"""

from __future__ import annotations

import io
import struct
from typing import Callable, Protocol, Union

from .errors import FormatError

__all__ = ["CatarInput", "PayloadReader", "Readable", "Source", "BLOCK", "HEADER", "show_path"]



class Readable(Protocol):
    """What the decoder reads from: anything with a binary ``read(size)`` (a file, a raw stream)."""

    def read(self, size: int = ..., /) -> bytes: ...


Source = Union[Readable, Callable[[int], bytes]]

BLOCK = 256 * 1024  # bytes read from the source at a time
HEADER = struct.Struct("<QQ")


def show_path(path: bytes) -> str:
    """An archive path for messages: ``"."`` for the root, undecodable bytes escaped."""
    return path.decode("utf-8", "backslashreplace") if path else "."


class CatarInput:
    """A buffered reader over the source that knows its archive offset.

    ``buf[pos:]`` is what is read but not consumed; ``base`` is the archive
    offset of ``buf[0]``. A block the source returns is used as it is (no copy)
    unless a record straddles two blocks.
    """

    __slots__ = ("_read", "_view", "base", "buf", "pos")

    def __init__(self, source: Source) -> None:
        read = getattr(source, "read", None)
        self._read: Callable[[int], bytes] = read if callable(read) else source  # type: ignore[assignment]
        self.buf = b""
        self.pos = 0
        self.base = 0
        self._view: memoryview | None = None  # of ``buf``, made when first needed

    @property
    def offset(self) -> int:
        """Archive offset of the next unread byte."""
        return self.base + self.pos

    def _truncated(self, what: str | Callable[[], str], start: int) -> FormatError:
        end = self.base + len(self.buf)
        if not isinstance(what, str):
            what = what()
        return FormatError(f"archive truncated at byte {end}: {what} starting at byte {start} is incomplete")

    def _fill(self, n: int, what: str | Callable[[], str], start: int) -> bool:
        """Make ``n`` bytes available; False at a clean end (nothing left), else truncation."""
        pos = self.pos
        avail = len(self.buf) - pos
        if avail >= n:
            return True
        self.base += pos
        parts = [self.buf[pos:]] if avail else []
        self.buf, self.pos, self._view = b"", 0, None
        while avail < n:
            chunk = self._read(max(n - avail, BLOCK))
            if not chunk:
                self.buf = b"".join(parts)
                if avail == 0:
                    return False
                raise self._truncated(what, start)
            parts.append(chunk)
            avail += len(chunk)
        first = parts[0]
        self.buf = first if len(parts) == 1 and type(first) is bytes else b"".join(parts)
        return True

    def header(self, what: str) -> tuple[int, int] | None:
        """The next record's ``(size, type)`` without consuming it; None at the end."""
        if len(self.buf) - self.pos < 16 and not self._fill(16, what, self.base + self.pos):
            return None
        return HEADER.unpack_from(self.buf, self.pos)  # type: ignore[return-value]

    def need(self, n: int, what: str, start: int) -> None:
        """Make the next ``n`` bytes available in ``buf`` (FormatError if the archive ends first)."""
        if len(self.buf) - self.pos < n and not self._fill(n, what, start):
            raise self._truncated(what, start)

    def take(self, n: int, what: str, start: int) -> bytes:
        """The next ``n`` bytes (FormatError if the archive ends first)."""
        pos = self.pos
        if len(self.buf) - pos < n:
            if not self._fill(n, what, start):
                raise self._truncated(what, start)
            pos = 0
        self.pos = pos + n
        return self.buf[pos : pos + n]

    def _direct(self, n: int, what: str | Callable[[], str], start: int) -> bytes | None:
        """With nothing buffered: a large read straight from the source, or None after refilling."""
        if n >= BLOCK:  # large reads bypass the buffer
            data = self._read(n)
            if not data:
                raise self._truncated(what, start)
            if len(data) > n:
                raise ValueError(f"source returned {len(data)} bytes for read({n})")
            self.base += len(data)
            return data
        if not self._fill(1, what, start):
            raise self._truncated(what, start)
        return None

    def some(self, n: int, what: str | Callable[[], str], start: int) -> bytes:
        """Between 1 and ``n`` bytes (FormatError at the end)."""
        pos = self.pos
        avail = len(self.buf) - pos
        if avail == 0:
            data = self._direct(n, what, start)
            if data is not None:
                return bytes(data)
            pos, avail = 0, len(self.buf)
        k = n if n < avail else avail
        self.pos = pos + k
        return self.buf[pos : pos + k]

    def view(self, n: int, what: str | Callable[[], str], start: int) -> memoryview:
        """Like :meth:`some`, as a view of the buffer (no copy); valid until the next read."""
        pos = self.pos
        avail = len(self.buf) - pos
        if avail == 0:
            data = self._direct(n, what, start)
            if data is not None:
                return memoryview(data)
            pos, avail = 0, len(self.buf)
        k = n if n < avail else avail
        self.pos = pos + k
        view = self._view
        if view is None:
            view = self._view = memoryview(self.buf)
        return view[pos : pos + k]

    def skip(self, n: int, what: str | Callable[[], str], start: int) -> None:
        """Consume ``n`` bytes unseen (FormatError at the end)."""
        while n:
            avail = len(self.buf) - self.pos
            if avail >= n:
                self.pos += n
                return
            n -= avail
            self.base += len(self.buf)
            self.buf, self.pos, self._view = b"", 0, None
            while n >= BLOCK:
                data = self._read(BLOCK if n > 4 * BLOCK else n)
                if not data:
                    raise self._truncated(what, start)
                if len(data) > n:
                    raise ValueError(f"source returned {len(data)} bytes for read({n})")
                self.base += len(data)
                n -= len(data)
            if n and not self._fill(1, what, start):
                raise self._truncated(what, start)

    def at_end(self) -> bool:
        """Whether the source holds no more bytes."""
        return len(self.buf) - self.pos == 0 and not self._fill(1, "", self.base + self.pos)


class PayloadReader(io.RawIOBase):
    """The content of one regular file: exactly ``size`` bytes, read in any steps.

    Valid until the decoder moves to the next item; then the unread rest is
    skipped and further reads raise ValueError. A truncated archive raises
    FormatError naming the offset.
    """

    def __init__(self, source: CatarInput, size: int, path: bytes) -> None:
        self._done = False
        self._in = source
        self.size = size
        self.path = path
        self._left = size
        self._start = source.base + source.pos

    @property
    def closed(self) -> bool:  # type: ignore[override]
        """True once closed or once the decoder has moved on."""
        return self._done

    def close(self) -> None:
        """Invalidate the reader (the decoder skips the unread rest when it moves on)."""
        self._done = True

    @property
    def remaining(self) -> int:
        """Bytes not read yet."""
        return self._left

    def readable(self) -> bool:
        """Always True (a payload is for reading)."""
        return True

    def _what(self) -> str:
        return f"PAYLOAD of {show_path(self.path)}"

    def _check(self) -> None:
        if self._done:
            raise ValueError(f"payload of {show_path(self.path)} read after the decoder moved on")

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all that is left for -1/None); ``b""`` at the end."""
        self._check()
        if size is None or size < 0:
            parts = []
            while self._left:
                parts.append(self.read(min(self._left, 1 << 20)))
            return b"".join(parts)
        n = min(size, self._left)
        if n == 0:
            return b""
        data = self._in.some(n, self._what, self._start)
        self._left -= len(data)
        return data

    def read_view(self, size: int) -> memoryview:
        """Like ``read(size)`` for ``size`` >= 0, but a view of the decoder's buffer (no copy).

        The view is valid until the next read or until the decoder moves on;
        an empty view means the end of the payload.
        """
        self._check()
        n = min(size, self._left)
        if n <= 0:
            return memoryview(b"")
        data = self._in.view(n, self._what, self._start)
        self._left -= len(data)
        return data

    def readall(self) -> bytes:
        """All that is left."""
        return self.read(-1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Read into ``buffer``; the number of bytes read (0 at the end)."""
        data = self.read_view(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _finish(self) -> None:
        """Skip whatever the consumer did not read and invalidate the reader."""
        if self._left:
            self._in.skip(self._left, self._what, self._start)
            self._left = 0
        self._done = True
