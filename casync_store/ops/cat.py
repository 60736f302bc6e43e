"""The ``cat`` operation: stream a byte range of the blob an index describes.

:func:`cat` writes the bytes ``[offset, offset + length)`` of the blob (to the
end when no length is given) to any binary stream, in order, so a pipe, a
FIFO or a socket is as good a target as a file. Only the chunks the range
touches are fetched, several at a time through the shared
:class:`~casync_store.plumbing.pool.ThreadMap` (ordered, with a bounded number
in flight, so memory stays flat), each verified against its id by the
:class:`~casync_store.pipeline.ChunkReader`; the all-zero chunk is never
fetched. A range that starts beyond the end of the blob is an error, one that
ends beyond it is cut short at the end, as desync's ``cat`` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from casync_format.errors import ParameterError
from casync_format.index import Index, IndexChunk

from ..pipeline import ChunkReader
from ..plumbing.pool import ThreadMap, io_workers
from ..stores.base import Store

__all__ = ["cat", "chunks_in_range"]


def chunks_in_range(index: Index, offset: int, end: int) -> Iterator[IndexChunk]:
    """The items of ``index`` holding any byte of ``[offset, end)``, in blob order."""
    if offset >= end or offset >= index.blob_size:
        return
    for item in index.iter_from(index.find(offset)):
        if item.start >= end:
            return
        yield item


def cat(
    index: Index,
    store: Store,
    output: BinaryIO,
    offset: int = 0,
    length: int | None = None,
    concurrency: int | None = None,
) -> int:
    """Write blob bytes ``offset`` .. ``offset + length`` of ``index`` to ``output``; returns the count.

    ``length`` None (or 0, as desync's ``-l 0``) reads to the end of the blob.
    Raises :class:`ParameterError` for a negative offset or length or an
    offset past the end of the blob, ChunkMissing / ChunkInvalid /
    StoreError naming the chunk and the store, OSError from ``output``.
    """
    if offset < 0 or (length is not None and length < 0):
        raise ParameterError("offset and length must not be negative")
    size = index.blob_size
    if offset > size:
        raise ParameterError(f"offset {offset} is beyond the end of the blob ({size} bytes)")
    end = size if not length else min(size, offset + length)
    reader = ChunkReader(store, index)
    threads = io_workers(concurrency)
    written = 0

    def fetch(item: IndexChunk) -> tuple[IndexChunk, bytes]:
        return item, reader.data(item)

    with ThreadMap(fetch, chunks_in_range(index, offset, end), threads, in_flight=2 * threads) as results:
        for item, data in results:
            lo = max(offset, item.start) - item.start
            hi = min(end, item.start + item.size) - item.start
            output.write(memoryview(data)[lo:hi])
            written += hi - lo
    output.flush()
    return written
