"""casync's index files (``.caibx`` for blobs, ``.caidx`` for archives).

Layout, all little-endian (``src/caformat.h``)::

    CaFormatIndex   size=48, type=CA_FORMAT_INDEX, feature_flags,
                    chunk_size_min, chunk_size_avg, chunk_size_max
    CaFormatTable   size=UINT64_MAX, type=CA_FORMAT_TABLE
    item * N        end offset of the chunk in the blob, 32-byte chunk id
    tail            0, 0, index_offset=48, table size=16+40*N+40,
                    CA_FORMAT_TABLE_TAIL_MARKER

:class:`Index` reads an index from a seekable binary file without loading the
chunk table: it validates the whole file in one streaming pass, then iterates
or looks up items on demand, so the index of a terabyte blob costs a few
kilobytes of memory. :class:`IndexWriter` writes one item at a time;
:class:`IndexStream` parses and checks an index arriving in pieces (over a
pipe), handing out each item as soon as its bytes are in. None of them opens
files; callers hand them file objects or bytes.
"""

from __future__ import annotations

import bisect
import io
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from .constants import (
    CA_CHUNK_ID_SIZE,
    CA_CHUNK_SIZE_LIMIT_MAX,
    CA_FORMAT_FEATURE_FLAGS_MAX,
    CA_FORMAT_INDEX,
    CA_FORMAT_TABLE,
    CA_FORMAT_TABLE_TAIL_MARKER,
)
from .digest import Digest, digest_from_flags
from .errors import FormatError

__all__ = ["IndexHeader", "IndexChunk", "Index", "IndexWriter", "IndexStream", "read_index", "write_index"]

HEADER = struct.Struct("<6Q")  # CaFormatIndex
TABLE_HEADER = struct.Struct("<2Q")  # CaFormatTable (header part)
TABLE_ITEM = struct.Struct("<Q32s")  # CaFormatTableItem
TABLE_TAIL = struct.Struct("<5Q")  # CaFormatTableTail
_TABLE_SIZE_UNKNOWN = 0xFFFFFFFFFFFFFFFF
_BATCH = 4096  # table items read per block


@dataclass(frozen=True)
class IndexHeader:
    """The header of an index: feature flags and the chunker's size limits."""

    feature_flags: int
    chunk_size_min: int
    chunk_size_avg: int
    chunk_size_max: int

    @property
    def digest(self) -> Digest:
        """The digest the chunk ids of this index were made with."""
        return digest_from_flags(self.feature_flags)

    def pack(self) -> bytes:
        """The 48 bytes of the header record."""
        return HEADER.pack(
            HEADER.size,
            CA_FORMAT_INDEX,
            self.feature_flags,
            self.chunk_size_min,
            self.chunk_size_avg,
            self.chunk_size_max,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> IndexHeader:
        """Parse and check the 48-byte header record."""
        if len(raw) < HEADER.size:
            raise FormatError("index is truncated: no complete header")
        size, kind, flags, cmin, cavg, cmax = HEADER.unpack_from(raw)
        if size != HEADER.size or kind != CA_FORMAT_INDEX:
            raise FormatError("not a casync index (bad header magic)")
        if flags & ~CA_FORMAT_FEATURE_FLAGS_MAX:
            raise FormatError(f"index has unknown feature flags {flags:#x}")
        if not 1 <= cmin <= cavg <= cmax <= CA_CHUNK_SIZE_LIMIT_MAX:
            raise FormatError(f"index has invalid chunk sizes {cmin}:{cavg}:{cmax}")
        return cls(flags, cmin, cavg, cmax)


class IndexChunk(NamedTuple):
    """One chunk of the blob: where it starts, how long it is, its id."""

    start: int
    size: int
    id: bytes


def _table_size(count: int) -> int:
    return TABLE_HEADER.size + count * TABLE_ITEM.size + TABLE_TAIL.size


class Index:
    """A validated, lazily read index over a seekable binary file.

    The file must stay open while the index is used. Iteration yields
    :class:`IndexChunk` in blob order; ``index[i]`` reads one item;
    :meth:`find` locates the chunk holding a blob offset. Not thread-safe:
    give each thread its own file object.
    """

    def __init__(self, fileobj: BinaryIO, validate: bool = True) -> None:
        self._f = fileobj
        self.header = IndexHeader.unpack(self._read_at(0, HEADER.size))
        total = self._f.seek(0, io.SEEK_END)
        body = total - HEADER.size - TABLE_HEADER.size - TABLE_TAIL.size
        if body < 0 or body % TABLE_ITEM.size:
            raise FormatError(f"index is truncated or has trailing bytes ({total} bytes)")
        self.count = body // TABLE_ITEM.size
        size, kind = TABLE_HEADER.unpack(self._read_at(HEADER.size, TABLE_HEADER.size))
        if size != _TABLE_SIZE_UNKNOWN or kind != CA_FORMAT_TABLE:
            raise FormatError("index has no chunk table where one belongs")
        tail = TABLE_TAIL.unpack(self._read_at(total - TABLE_TAIL.size, TABLE_TAIL.size))
        if tail != (0, 0, HEADER.size, _table_size(self.count), CA_FORMAT_TABLE_TAIL_MARKER):
            raise FormatError("index is truncated or damaged (bad table tail)")
        self.blob_size = self[self.count - 1].start + self[self.count - 1].size if self.count else 0
        if validate:
            for _ in self:  # iteration checks every item
                pass

    @property
    def digest(self) -> Digest:
        """The digest of this index's chunk ids."""
        return self.header.digest

    def __len__(self) -> int:
        return self.count

    def _read_at(self, offset: int, length: int) -> bytes:
        self._f.seek(offset)
        raw = self._f.read(length)
        if len(raw) != length:
            raise FormatError("index is truncated")
        return raw

    def _end(self, i: int) -> int:
        if i < 0:
            return 0
        return TABLE_ITEM.unpack(self._item_bytes(i, 1))[0]

    def _item_bytes(self, first: int, n: int) -> bytes:
        return self._read_at(HEADER.size + TABLE_HEADER.size + first * TABLE_ITEM.size, n * TABLE_ITEM.size)

    def __getitem__(self, i: int) -> IndexChunk:
        if i < 0:
            i += self.count
        if not 0 <= i < self.count:
            raise IndexError(i)
        start = self._end(i - 1)
        end, cid = TABLE_ITEM.unpack(self._item_bytes(i, 1))
        return IndexChunk(start, end - start, cid)

    def __iter__(self) -> Iterator[IndexChunk]:
        return self.iter_from(0)

    def iter_from(self, first: int) -> Iterator[IndexChunk]:
        """Iterate items from number ``first`` on, checking each as it goes."""
        if not 0 <= first <= self.count:
            raise IndexError(first)
        start = self._end(first - 1)
        limit = self.header.chunk_size_max
        i = first
        while i < self.count:
            n = min(_BATCH, self.count - i)
            raw = self._item_bytes(i, n)
            for end, cid in TABLE_ITEM.iter_unpack(raw):
                size = end - start
                if size <= 0:
                    raise FormatError(f"index item {i} goes backwards or is empty (offset {end})")
                if size > limit:
                    raise FormatError(f"index item {i} is {size} bytes, above the maximum {limit}")
                yield IndexChunk(start, size, cid)
                start = end
                i += 1

    def find(self, offset: int) -> int:
        """The number of the item that holds blob byte ``offset``."""
        if not 0 <= offset < self.blob_size:
            raise IndexError(offset)
        ends = _EndView(self)
        return bisect.bisect_right(ends, offset)


class _EndView:
    """A sequence view of the items' end offsets, for bisect."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> int:
        return self._index._end(i)


def read_index(fileobj: BinaryIO, validate: bool = True) -> Index:
    """Open an index from a seekable binary file (see :class:`Index`)."""
    return Index(fileobj, validate)


class IndexWriter:
    """Writes an index one chunk at a time to a binary file.

    Call :meth:`add` for each chunk in blob order, then :meth:`finish` to
    write the tail. The writer never seeks, so it can write to a pipe.
    """

    def __init__(self, fileobj: BinaryIO, header: IndexHeader) -> None:
        self._f = fileobj
        self.header = header
        self.count = 0
        self.blob_size = 0
        self._buf: list[bytes] = []
        IndexHeader.unpack(header.pack())  # never write a header no reader accepts
        fileobj.write(header.pack() + TABLE_HEADER.pack(_TABLE_SIZE_UNKNOWN, CA_FORMAT_TABLE))

    def add(self, chunk_id: bytes, size: int) -> None:
        """Append the next chunk of the blob."""
        if not 0 < size <= self.header.chunk_size_max:
            raise FormatError(f"chunk of {size} bytes does not fit the index's size limits")
        if len(chunk_id) != CA_CHUNK_ID_SIZE:  # struct would pad or cut it silently
            raise FormatError(f"chunk id of {len(chunk_id)} bytes, expected {CA_CHUNK_ID_SIZE}")
        self.blob_size += size
        self.count += 1
        self._buf.append(TABLE_ITEM.pack(self.blob_size, chunk_id))
        if len(self._buf) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        self._f.write(b"".join(self._buf))
        self._buf.clear()

    def finish(self) -> None:
        """Write the table tail. The file object is left open."""
        self._flush()
        self._f.write(
            TABLE_TAIL.pack(0, 0, HEADER.size, _table_size(self.count), CA_FORMAT_TABLE_TAIL_MARKER)
        )


def write_index(fileobj: BinaryIO, header: IndexHeader, chunks: Iterable[tuple[bytes, int]]) -> int:
    """Write a whole index from ``(chunk_id, size)`` pairs; returns the blob size."""
    writer = IndexWriter(fileobj, header)
    for chunk_id, size in chunks:
        writer.add(chunk_id, size)
    writer.finish()
    return writer.blob_size


class IndexStream:
    """Parses an index fed in pieces of any size, checking it as :class:`Index` does.

    :meth:`feed` returns the items completed by the new bytes; :attr:`header`
    is set once its 48 bytes are in; :meth:`finish` checks that the input
    ended exactly after a valid table tail. Raises :class:`FormatError` at the
    first byte that cannot belong to an index. Holds at most one item of
    unparsed input.
    """

    def __init__(self) -> None:
        self.header: IndexHeader | None = None
        self.count = 0
        self.blob_size = 0
        self.done = False  #: the table tail has been read
        self._buf = bytearray()
        self._table = False  # the table header has been read

    def feed(self, data: bytes | memoryview) -> list[IndexChunk]:
        """Take the next bytes; the items they complete, in order."""
        if self.done and data:
            raise FormatError("index has trailing bytes after its table tail")
        self._buf += data
        if self.header is None:
            if len(self._buf) < HEADER.size:
                return []
            self.header = IndexHeader.unpack(bytes(self._buf[: HEADER.size]))
            del self._buf[: HEADER.size]
        if not self._table:
            if len(self._buf) < TABLE_HEADER.size:
                return []
            if TABLE_HEADER.unpack_from(self._buf) != (_TABLE_SIZE_UNKNOWN, CA_FORMAT_TABLE):
                raise FormatError("index has no chunk table where one belongs")
            del self._buf[: TABLE_HEADER.size]
            self._table = True
        return self._items()

    def _items(self) -> list[IndexChunk]:
        assert self.header is not None
        items: list[IndexChunk] = []
        pos = 0
        while len(self._buf) - pos >= TABLE_ITEM.size:
            end, cid = TABLE_ITEM.unpack_from(self._buf, pos)
            if end == 0:  # an item never ends at 0: this is the tail
                self._tail(TABLE_TAIL.unpack_from(self._buf, pos), len(self._buf) - pos)
                break
            size = end - self.blob_size
            if size <= 0:
                raise FormatError(f"index item {self.count} goes backwards or is empty (offset {end})")
            if size > self.header.chunk_size_max:
                raise FormatError(
                    f"index item {self.count} is {size} bytes, above the maximum {self.header.chunk_size_max}"
                )
            items.append(IndexChunk(self.blob_size, size, bytes(cid)))
            self.blob_size = end
            self.count += 1
            pos += TABLE_ITEM.size
        del self._buf[:pos]
        return items

    def _tail(self, tail: tuple[int, ...], available: int) -> None:
        if tail != (0, 0, HEADER.size, _table_size(self.count), CA_FORMAT_TABLE_TAIL_MARKER):
            raise FormatError("index is damaged (bad table tail)")
        if available > TABLE_TAIL.size:
            raise FormatError("index has trailing bytes after its table tail")
        self.done = True
        self._buf.clear()

    def finish(self) -> None:
        """Check that the index is complete (its tail read, nothing after it)."""
        if not self.done:
            raise FormatError("index is truncated (it ends before its table tail)")


def index_path_kind(path: str) -> str:
    """``"blob"`` for a .caibx name, ``"archive"`` for .caidx, else ``""``."""
    ext = os.path.splitext(path)[1].lower()
    return {".caibx": "blob", ".caidx": "archive"}.get(ext, "")
