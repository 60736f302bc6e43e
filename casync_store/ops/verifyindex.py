"""The ``verify-index`` operation: does a file hold exactly the blob an index describes?

:func:`verify_index` reads the file at every chunk's offset, hashes the piece
with the index's digest and compares it with the chunk id, several chunks at
a time through the shared :class:`~casync_store.plumbing.pool.ThreadMap`
(ordered, so the first chunk that differs is the first in blob order). It
stops at that chunk and returns a :class:`Mismatch` naming it (offset, id and
what the file holds there); a file longer than the blob is a mismatch too,
at the blob's end. Block devices may be larger than the blob (their size is
not compared). Nothing is written anywhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from casync_format.index import Index, IndexChunk

from ..plumbing.fileio import pread
from ..plumbing.pool import ThreadMap, io_workers

__all__ = ["Mismatch", "verify_index"]


@dataclass(frozen=True)
class Mismatch:
    """Where a file first differs from its index."""

    offset: int  # blob offset of the chunk (or of the end, for a longer file)
    chunk_id: bytes | None  # the index's chunk there (None: the file goes on past the blob)
    reason: str  # what the file holds instead

    def __str__(self) -> str:
        if self.chunk_id is None:
            return f"at offset {self.offset}: {self.reason}"
        return f"chunk {self.chunk_id.hex()} at offset {self.offset}: {self.reason}"


def verify_index(
    index: Index, path: str | os.PathLike[str], concurrency: int | None = None
) -> Mismatch | None:
    """None when the file at ``path`` matches ``index`` chunk by chunk, else the first :class:`Mismatch`.

    Raises OSError when the file cannot be opened or read.
    """
    path = os.fspath(path)
    digest = index.digest
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)

        def check(item: IndexChunk) -> Mismatch | None:
            data = pread(fd, item.size, item.start)
            if len(data) != item.size:
                return Mismatch(item.start, item.id, f"the file ends at {item.start + len(data)}, "
                                                     f"the chunk at {item.start + item.size}")
            actual = digest(data)
            if actual != item.id:
                return Mismatch(item.start, item.id, f"the file's bytes hash to {actual.hex()}")
            return None

        threads = io_workers(concurrency)
        with ThreadMap(check, iter(index), threads, in_flight=4 * threads) as results:
            for found in results:
                if found is not None:
                    return found
        size = index.blob_size
        if stat.S_ISREG(st.st_mode) and os.fstat(fd).st_size > size:
            return Mismatch(size, None, f"the file is {os.fstat(fd).st_size} bytes, the index {size}")
        return None
    finally:
        os.close(fd)
