"""The ``chop`` operation: store the chunks of a blob an index already describes.

Given an index and the blob it was made from (a file or block device), the
worker pool reads each chunk's bytes at the offset the index names, checks
them against the chunk id, and stores those the store does not hold yet (each
id once per run, through the shared :class:`~casync_store.pipeline.StoreOnce`). A blob that no
longer matches its index is an error naming the chunk and the offset; nothing
is stored for a mismatching chunk. A regular file whose size or modification
time changes while it is read (a short read, a mismatch, or a difference at
the end from what they were at the start) is
:class:`~casync_format.errors.InputChanged` instead; the chunks stored until
then were each checked against their id.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import asdict, dataclass

from casync_format.errors import ChunkInvalid, FormatError, InputChanged
from casync_format.index import Index, IndexChunk

from ..pipeline import Outcome, StoreOnce
from ..plumbing.fileio import pread
from ..plumbing.pool import ThreadMap
from ..plumbing.progress import Progress, phase
from ..stores.base import WriteStore, require_writable

__all__ = ["ChopStats", "chop"]

@dataclass
class ChopStats:
    """What ``chop`` did with the chunks of the index."""

    chunks_total: int = 0
    chunks_stored: int = 0
    chunks_in_store: int = 0
    chunks_duplicate: int = 0
    bytes_total: int = 0

    def to_dict(self) -> dict[str, int]:
        """The stats with desync-style dashed keys, for --print-stats."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    def count(self, outcome: Outcome, size: int) -> None:
        """Add one chunk of ``size`` bytes by its outcome."""
        self.chunks_total += 1
        self.bytes_total += size
        if outcome is Outcome.STORED:
            self.chunks_stored += 1
        elif outcome is Outcome.PRESENT:
            self.chunks_in_store += 1
        else:
            self.chunks_duplicate += 1


class _Chopper:
    """Reads, checks and stores one chunk; the function the pool maps."""

    def __init__(self, fd: int, path: str, store: WriteStore, index: Index) -> None:
        self.fd = fd
        self.path = path
        self.digest = index.digest
        self.store_once = StoreOnce(store, getattr(store, "compression", "zstd"))
        st = os.fstat(fd)
        # Size and mtime say whether the file changed while it was read (regular files only).
        self.start = st if stat.S_ISREG(st.st_mode) else None

    def changed(self) -> InputChanged | None:
        """The error to raise if the (regular) input file changed since it was opened."""
        before = self.start
        if before is None:
            return None
        now = os.fstat(self.fd)
        if now.st_size != before.st_size or now.st_mtime_ns != before.st_mtime_ns:
            return InputChanged(self.path, f"size {before.st_size} -> {now.st_size}")
        return None

    def __call__(self, item: IndexChunk) -> tuple[Outcome, int]:
        data = pread(self.fd, item.size, item.start)
        if len(data) != item.size:
            changed = self.changed()
            if changed is not None:
                raise changed
            raise FormatError(
                f"{self.path} ends at {item.start + len(data)}, the index has chunk "
                f"{item.id.hex()} up to {item.start + item.size}"
            )
        actual = self.digest(data)
        if actual != item.id:
            changed = self.changed()
            if changed is not None:
                raise changed
            raise ChunkInvalid(
                item.id, actual, f"{self.path} at offset {item.start} hashes to {actual.hex()}"
            )
        return self.store_once(item.id, data)[0], item.size


def chop(
    index: Index,
    input_path: str | os.PathLike[str],
    store: WriteStore,
    concurrency: int | None = None,
    progress: Progress | None = None,
    ignore: Collection[bytes] = (),
) -> ChopStats:
    """Store the chunks of ``input_path`` that ``index`` lists into ``store``.

    Chunks whose ids are in ``ignore`` (see :func:`~.ignore.ignored_ids`)
    are left out: neither read nor checked nor stored, nor counted.

    Raises ChunkInvalid when the input's bytes do not match a chunk id,
    FormatError when the input is shorter than the index, InputChanged when
    the input file changed while it was read, StoreError, OSError.
    """
    input_path = os.fspath(input_path)
    store = require_writable(store)
    stats = ChopStats()
    threads = store.write_workers(concurrency)
    fd = os.open(input_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        work = _Chopper(fd, input_path, store, index)
        with store.writing(), phase(progress, "Chopping", index.blob_size), ThreadMap(
            work, (item for item in index if item.id not in ignore), threads,
            in_flight=4 * threads, ordered=False
        ) as results:
            for fate, size in results:
                stats.count(fate, size)
                if progress is not None:
                    progress.add(size)
        changed = work.changed()
        if changed is not None:
            raise changed
    finally:
        os.close(fd)
    return stats
