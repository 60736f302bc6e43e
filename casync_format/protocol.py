"""casync's remote protocol: the messages casync speaks over ssh, as bytes.

A session is a stream of frames, each a little-endian header ``size`` (of
the whole frame, header included) and ``type``, then a type-specific body;
frames are at least 16 bytes and at most :data:`SIZE_MAX` (16 MiB). Both
sides send :class:`Hello` first, naming the services they offer and the
operations they want (:data:`READABLE_STORE`, :data:`PULL_CHUNKS`, ...); a
puller then sends :class:`Request` frames of one or more chunk ids and gets
one :class:`Chunk` or :class:`Missing` per id, an index or archive travels as
:class:`IndexData`/:class:`ArchiveData` frames closed by
:class:`IndexEOF`/:class:`ArchiveEOF`, and :class:`Goodbye` or
:class:`Abort` ends the session. This module owns the frame layout, the
validation casync applies to each frame (sizes, flags, abort reasons) and
the HELLO compatibility rules; it does no I/O beyond calling a ``read``
function it is given. Everything malformed raises :class:`FormatError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Callable, ClassVar, TypeVar, Union

from .constants import CA_CHUNK_ID_SIZE
from .errors import FormatError

__all__ = [
    "MSG_HELLO", "MSG_INDEX", "MSG_INDEX_EOF", "MSG_ARCHIVE", "MSG_ARCHIVE_EOF", "MSG_REQUEST",
    "MSG_CHUNK", "MSG_MISSING", "MSG_GOODBYE", "MSG_ABORT",
    "READABLE_STORE", "WRITABLE_STORE", "READABLE_INDEX", "WRITABLE_INDEX", "READABLE_ARCHIVE",
    "WRITABLE_ARCHIVE", "PULL_CHUNKS", "PULL_INDEX", "PULL_ARCHIVE", "PUSH_CHUNKS", "PUSH_INDEX",
    "PUSH_INDEX_CHUNKS", "PUSH_ARCHIVE", "FEATURE_FLAGS_MAX", "REQUEST_HIGH_PRIORITY",
    "CHUNK_COMPRESSED", "HEADER_SIZE", "SIZE_MAX", "MAX_REQUEST_IDS", "MAX_CHUNK_DATA",
    "Hello", "IndexData", "IndexEOF", "ArchiveData", "ArchiveEOF", "Request", "Chunk", "Missing",
    "Goodbye", "Abort", "Message", "encode", "decode", "read_message", "split_request",
    "check_hello", "flag_names", "type_name",
]  # fmt: skip

# Frame types (caprotocol.h).
MSG_HELLO = 0x3C71D0948CA5FBEE
MSG_INDEX = 0xB32A91DD2B3E27F8
MSG_INDEX_EOF = 0x4F0932F1043718F5
MSG_ARCHIVE = 0x95D6428A69EDDCC5
MSG_ARCHIVE_EOF = 0x450BEF663F24CBAD
MSG_REQUEST = 0x8AB427E0F89D9210
MSG_CHUNK = 0x5213DD180A84BC8C
MSG_MISSING = 0xD010F9FAC82B7B6C
MSG_GOODBYE = 0xAD205DBF1A3686C3
MSG_ABORT = 0xE7D9136B7EFEA352

# HELLO feature flags: services a side offers ...
READABLE_STORE = 0x1
WRITABLE_STORE = 0x2
READABLE_INDEX = 0x4
WRITABLE_INDEX = 0x8
READABLE_ARCHIVE = 0x10
WRITABLE_ARCHIVE = 0x20
# ... and operations it wants the other side to serve.
PULL_CHUNKS = 0x40
PULL_INDEX = 0x80
PULL_ARCHIVE = 0x100
PUSH_CHUNKS = 0x200
PUSH_INDEX = 0x400
PUSH_INDEX_CHUNKS = 0x800
PUSH_ARCHIVE = 0x1000
FEATURE_FLAGS_MAX = 0x1FFF

REQUEST_HIGH_PRIORITY = 0x1  # the only REQUEST flag
CHUNK_COMPRESSED = 0x1  # the only CHUNK flag: data is a compressed (.cacnk) blob

HEADER_SIZE = 16
SIZE_MAX = 16 * 1024 * 1024  # CA_PROTOCOL_SIZE_MAX: no frame may be larger
_REQUEST_HEAD = HEADER_SIZE + 8
_CHUNK_HEAD = HEADER_SIZE + 8 + CA_CHUNK_ID_SIZE
#: Most chunk ids one REQUEST frame can carry.
MAX_REQUEST_IDS = (SIZE_MAX - _REQUEST_HEAD) // CA_CHUNK_ID_SIZE
#: Largest chunk blob a CHUNK frame can carry (chunks may be larger: those cannot travel).
MAX_CHUNK_DATA = SIZE_MAX - _CHUNK_HEAD
_ABORT_REASON_MAX = 4096  # what we send; what we accept is bounded by SIZE_MAX
_INT32_MAX = 0x7FFFFFFF

_HEADER = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")

_FLAG_NAMES = (
    (READABLE_STORE, "readable-store"), (WRITABLE_STORE, "writable-store"),
    (READABLE_INDEX, "readable-index"), (WRITABLE_INDEX, "writable-index"),
    (READABLE_ARCHIVE, "readable-archive"), (WRITABLE_ARCHIVE, "writable-archive"),
    (PULL_CHUNKS, "pull-chunks"), (PULL_INDEX, "pull-index"), (PULL_ARCHIVE, "pull-archive"),
    (PUSH_CHUNKS, "push-chunks"), (PUSH_INDEX, "push-index"),
    (PUSH_INDEX_CHUNKS, "push-index-chunks"), (PUSH_ARCHIVE, "push-archive"),
)  # fmt: skip
# Each operation and the service the other side must offer for it.
_NEEDS = (
    (PULL_CHUNKS, READABLE_STORE), (PULL_INDEX, READABLE_INDEX), (PULL_ARCHIVE, READABLE_ARCHIVE),
    (PUSH_CHUNKS, WRITABLE_STORE), (PUSH_INDEX, WRITABLE_INDEX), (PUSH_ARCHIVE, WRITABLE_ARCHIVE),
)  # fmt: skip
_OPERATIONS = PULL_CHUNKS | PULL_INDEX | PULL_ARCHIVE | PUSH_CHUNKS | PUSH_INDEX | PUSH_ARCHIVE
_SERVICES = sum(service for _, service in _NEEDS)


def flag_names(flags: int) -> str:
    """HELLO feature flags as ``readable-store|pull-chunks`` (``none`` for 0)."""
    names = [name for bit, name in _FLAG_NAMES if flags & bit]
    unknown = flags & ~FEATURE_FLAGS_MAX
    if unknown:
        names.append(f"{unknown:#x}")
    return "|".join(names) or "none"


def _check_id(chunk_id: bytes) -> bytes:
    chunk_id = bytes(chunk_id)
    if len(chunk_id) != CA_CHUNK_ID_SIZE:
        raise FormatError(f"chunk id must be {CA_CHUNK_ID_SIZE} bytes, not {len(chunk_id)}")
    return chunk_id


def _check_size(name: str, body: bytes, exact: int | None = None, minimum: int = 0) -> None:
    size = HEADER_SIZE + len(body)
    if exact is not None and size != exact:
        raise FormatError(f"{name} message of {size} bytes, must be {exact}")
    if size < minimum:
        raise FormatError(f"{name} message of {size} bytes, must be at least {minimum}")


@dataclass(frozen=True)
class Hello:
    """HELLO: the services this side offers and the operations it wants."""

    flags: int
    TYPE: ClassVar[int] = MSG_HELLO

    def body(self) -> bytes:
        """The frame body."""
        _check_hello_flags(self.flags)
        return _U64.pack(self.flags)

    @classmethod
    def parse(cls, body: bytes) -> Hello:
        """Validate and parse a frame body."""
        _check_size("hello", body, exact=HEADER_SIZE + 8)
        flags = _U64.unpack(body)[0]
        _check_hello_flags(flags)
        return cls(flags)


def _check_hello_flags(flags: int) -> None:
    if flags == 0:
        raise FormatError("hello with no feature flags (the peer offers and wants nothing)")
    if flags < 0 or flags & ~FEATURE_FLAGS_MAX:
        raise FormatError(f"hello with unknown feature flags {flags:#x}")


_F = TypeVar("_F", bound="_FileData")
_E = TypeVar("_E", bound="_Empty")


@dataclass(frozen=True)
class _FileData:
    """A piece of an index or archive file (never empty)."""

    data: bytes
    NAME: ClassVar[str] = "file"

    def body(self) -> bytes:
        """The frame body."""
        if not self.data:
            raise FormatError(f"{self.NAME} message without data")
        if len(self.data) > SIZE_MAX - HEADER_SIZE:
            raise FormatError(f"{self.NAME} message of {len(self.data)} bytes exceeds the protocol limit")
        return bytes(self.data)

    @classmethod
    def parse(cls: type[_F], body: bytes) -> _F:
        """Validate and parse a frame body."""
        _check_size(cls.NAME, body, minimum=HEADER_SIZE + 1)
        return cls(bytes(body))


@dataclass(frozen=True)
class IndexData(_FileData):
    """INDEX: the next bytes of the index file."""

    TYPE: ClassVar[int] = MSG_INDEX
    NAME: ClassVar[str] = "index"


@dataclass(frozen=True)
class ArchiveData(_FileData):
    """ARCHIVE: the next bytes of the archive file."""

    TYPE: ClassVar[int] = MSG_ARCHIVE
    NAME: ClassVar[str] = "archive"


@dataclass(frozen=True)
class _Empty:
    """A frame with no body."""

    NAME: ClassVar[str] = "empty"

    def body(self) -> bytes:
        """The frame body (none)."""
        return b""

    @classmethod
    def parse(cls: type[_E], body: bytes) -> _E:
        """Validate and parse a frame body."""
        _check_size(cls.NAME, body, exact=HEADER_SIZE)
        return cls()


@dataclass(frozen=True)
class IndexEOF(_Empty):
    """INDEX_EOF: the index file is complete."""

    TYPE: ClassVar[int] = MSG_INDEX_EOF
    NAME: ClassVar[str] = "index-eof"


@dataclass(frozen=True)
class ArchiveEOF(_Empty):
    """ARCHIVE_EOF: the archive file is complete."""

    TYPE: ClassVar[int] = MSG_ARCHIVE_EOF
    NAME: ClassVar[str] = "archive-eof"


@dataclass(frozen=True)
class Goodbye(_Empty):
    """GOODBYE: the sender ends the session cleanly."""

    TYPE: ClassVar[int] = MSG_GOODBYE
    NAME: ClassVar[str] = "goodbye"


@dataclass(frozen=True)
class Request:
    """REQUEST: please send these chunks (one answer per id, in order)."""

    ids: tuple[bytes, ...]
    flags: int = 0
    TYPE: ClassVar[int] = MSG_REQUEST

    def body(self) -> bytes:
        """The frame body."""
        if not self.ids:
            raise FormatError("request message without chunk ids")
        if len(self.ids) > MAX_REQUEST_IDS:
            raise FormatError(f"request of {len(self.ids)} ids exceeds the protocol limit")
        if self.flags & ~REQUEST_HIGH_PRIORITY or self.flags < 0:
            raise FormatError(f"request with unknown flags {self.flags:#x}")
        return _U64.pack(self.flags) + b"".join(_check_id(i) for i in self.ids)

    @classmethod
    def parse(cls, body: bytes) -> Request:
        """Validate and parse a frame body."""
        _check_size("request", body, minimum=_REQUEST_HEAD + CA_CHUNK_ID_SIZE)
        if (len(body) - 8) % CA_CHUNK_ID_SIZE:
            raise FormatError(f"request message of {HEADER_SIZE + len(body)} bytes: not whole chunk ids")
        flags = _U64.unpack_from(body)[0]
        if flags & ~REQUEST_HIGH_PRIORITY:
            raise FormatError(f"request with unknown flags {flags:#x}")
        view = memoryview(body)
        ids = tuple(bytes(view[i : i + CA_CHUNK_ID_SIZE]) for i in range(8, len(body), CA_CHUNK_ID_SIZE))
        return cls(ids, flags)


@dataclass(frozen=True)
class Chunk:
    """CHUNK: a chunk's bytes, compressed (a .cacnk blob) when ``flags & CHUNK_COMPRESSED``."""

    chunk_id: bytes
    data: bytes
    flags: int = CHUNK_COMPRESSED
    TYPE: ClassVar[int] = MSG_CHUNK

    @property
    def compressed(self) -> bool:
        """Whether ``data`` is compressed."""
        return bool(self.flags & CHUNK_COMPRESSED)

    def body(self) -> bytes:
        """The frame body."""
        if not self.data:
            raise FormatError(f"chunk {bytes(self.chunk_id).hex()} message without data")
        if len(self.data) > MAX_CHUNK_DATA:
            raise FormatError(
                f"chunk {bytes(self.chunk_id).hex()} of {len(self.data)} bytes exceeds the protocol's "
                f"{SIZE_MAX}-byte message limit"
            )
        if self.flags & ~CHUNK_COMPRESSED or self.flags < 0:
            raise FormatError(f"chunk message with unknown flags {self.flags:#x}")
        return _U64.pack(self.flags) + _check_id(self.chunk_id) + bytes(self.data)

    @classmethod
    def parse(cls, body: bytes) -> Chunk:
        """Validate and parse a frame body."""
        _check_size("chunk", body, minimum=_CHUNK_HEAD + 1)
        flags = _U64.unpack_from(body)[0]
        if flags & ~CHUNK_COMPRESSED:
            raise FormatError(f"chunk message with unknown flags {flags:#x}")
        return cls(bytes(body[8:_CHUNK_HEAD - HEADER_SIZE]), bytes(body[_CHUNK_HEAD - HEADER_SIZE :]), flags)


@dataclass(frozen=True)
class Missing:
    """MISSING: the sender's stores do not hold this chunk."""

    chunk_id: bytes
    TYPE: ClassVar[int] = MSG_MISSING

    def body(self) -> bytes:
        """The frame body."""
        return _check_id(self.chunk_id)

    @classmethod
    def parse(cls, body: bytes) -> Missing:
        """Validate and parse a frame body."""
        _check_size("missing", body, exact=HEADER_SIZE + CA_CHUNK_ID_SIZE)
        return cls(bytes(body))


@dataclass(frozen=True)
class Abort:
    """ABORT: the sender gives up; ``error`` is an errno value or 0."""

    error: int
    reason: str
    TYPE: ClassVar[int] = MSG_ABORT

    def body(self) -> bytes:
        """The frame body (the reason cleaned of control characters, bounded, NUL-terminated)."""
        if not 0 <= self.error < _INT32_MAX:
            raise FormatError(f"abort error code {self.error} out of range")
        text = "".join(c if c >= " " else " " for c in self.reason)
        raw = text.encode("utf-8", "replace")[:_ABORT_REASON_MAX]
        return _U64.pack(self.error) + raw + b"\0"

    @classmethod
    def parse(cls, body: bytes) -> Abort:
        """Validate and parse a frame body (casync's rules: printable, NUL-terminated)."""
        _check_size("abort", body, minimum=HEADER_SIZE + 8 + 1)
        error = _U64.unpack_from(body)[0]
        if error >= _INT32_MAX:
            raise FormatError(f"abort message with error code {error} out of range")
        reason = bytes(body[8:])
        if reason[-1] != 0:
            raise FormatError("abort message whose reason is not NUL-terminated")
        if any(b < 0x20 for b in reason[:-1]):
            raise FormatError("abort message whose reason holds control characters")
        return cls(error, reason[:-1].decode("utf-8", "replace"))


Message = Union[Hello, IndexData, IndexEOF, ArchiveData, ArchiveEOF, Request, Chunk, Missing, Goodbye, Abort]

_PARSERS: dict[int, Callable[[bytes], Message]] = {
    Hello.TYPE: Hello.parse, IndexData.TYPE: IndexData.parse, IndexEOF.TYPE: IndexEOF.parse,
    ArchiveData.TYPE: ArchiveData.parse, ArchiveEOF.TYPE: ArchiveEOF.parse, Request.TYPE: Request.parse,
    Chunk.TYPE: Chunk.parse, Missing.TYPE: Missing.parse, Goodbye.TYPE: Goodbye.parse,
    Abort.TYPE: Abort.parse,
}  # fmt: skip
_NAMES = {
    MSG_HELLO: "hello", MSG_INDEX: "index", MSG_INDEX_EOF: "index-eof", MSG_ARCHIVE: "archive",
    MSG_ARCHIVE_EOF: "archive-eof", MSG_REQUEST: "request", MSG_CHUNK: "chunk",
    MSG_MISSING: "missing", MSG_GOODBYE: "goodbye", MSG_ABORT: "abort",
}  # fmt: skip


def type_name(msg_type: int) -> str:
    """casync's name of a frame type (``chunk``), or its hex value when unknown."""
    return _NAMES.get(msg_type, f"{msg_type:#x}")


def encode(msg: Message) -> bytes:
    """The complete frame (header and body) of a message."""
    body = msg.body()
    size = HEADER_SIZE + len(body)
    if size > SIZE_MAX:
        raise FormatError(f"{type_name(msg.TYPE)} message of {size} bytes exceeds the protocol limit")
    return _HEADER.pack(size, msg.TYPE) + body


def decode(msg_type: int, body: bytes) -> Message:
    """Parse and validate the body of a frame of type ``msg_type``."""
    parse = _PARSERS.get(msg_type)
    if parse is None:
        raise FormatError(f"unknown message type {msg_type:#018x}")
    return parse(body)


def _read_exactly(read: Callable[[int], bytes], n: int) -> bytes:
    """Up to ``n`` bytes; fewer only at end of input."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        part = read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_message(read: Callable[[int], bytes], max_size: int = SIZE_MAX) -> Message | None:
    """Read one frame with ``read(n)`` (returns up to n bytes, b"" at end) and parse it.

    Returns None at a clean end of input (before a frame's first byte).
    Raises :class:`FormatError` for a truncated frame, a size outside
    ``16..max_size`` (never more than :data:`SIZE_MAX`) or an invalid body.
    """
    head = _read_exactly(read, HEADER_SIZE)
    if not head:
        return None
    if len(head) < HEADER_SIZE:
        raise FormatError(f"truncated message header ({len(head)} of {HEADER_SIZE} bytes)")
    size, msg_type = _HEADER.unpack(head)
    if size < HEADER_SIZE or size > min(max_size, SIZE_MAX):
        if msg_type not in _NAMES:  # text on stdout (a shell's complaint) lands here
            raise FormatError(f"not a casync protocol message: {head!r}")
        raise FormatError(f"{type_name(msg_type)} message with invalid size {size}")
    body = _read_exactly(read, size - HEADER_SIZE)
    if len(body) < size - HEADER_SIZE:
        got = HEADER_SIZE + len(body)
        raise FormatError(f"truncated {type_name(msg_type)} message ({got} of {size} bytes)")
    return decode(msg_type, body)


def split_request(
    ids: Iterable[bytes], flags: int = 0, per_frame: int = MAX_REQUEST_IDS
) -> Iterator[Request]:
    """REQUEST messages asking for ``ids`` in order, at most ``per_frame`` ids each."""
    per_frame = max(1, min(per_frame, MAX_REQUEST_IDS))
    batch: list[bytes] = []
    for chunk_id in ids:
        batch.append(_check_id(chunk_id))
        if len(batch) == per_frame:
            yield Request(tuple(batch), flags)
            batch = []
    if batch:
        yield Request(tuple(batch), flags)


def check_hello(local: int, remote: int) -> None:
    """Check that two HELLOs make a working session, as casync does.

    Every operation one side wants needs the matching service on the other
    side, PUSH_INDEX_CHUNKS needs PUSH_INDEX and PUSH_CHUNKS, and at least one
    operation must be wanted. Raises :class:`FormatError` saying what is amiss.
    """
    _check_hello_flags(remote)
    if remote & PUSH_INDEX_CHUNKS and remote & (PUSH_INDEX | PUSH_CHUNKS) != PUSH_INDEX | PUSH_CHUNKS:
        raise FormatError("peer wants push-index-chunks without push-index and push-chunks")
    sides = (("peer", "this side", remote, local), ("this side", "peer", local, remote))
    for who, other, ops, services in sides:
        for op, service in _NEEDS:
            if ops & op and not services & service:
                offered = flag_names(services & _SERVICES) if services & _SERVICES else "no service"
                raise FormatError(
                    f"{who} wants {flag_names(op)}, which needs {flag_names(service)}, "
                    f"but {other} offers {offered}"
                )
    if not (local | remote) & _OPERATIONS:
        raise FormatError("neither side wants anything (no pull or push operation in the hellos)")
