"""Index files on disk: opening them (or stdin) and writing them atomically.

:func:`open_index` gives an operation a validated :class:`~casync_format.index.Index`
for a path, where ``-`` means stdin (spooled to a temporary file, since an
index is read with seeks). :func:`index_writer` streams a new index into a
temporary file next to its final name and renames it into place only when the
table is complete, so a failed ``make`` never leaves a truncated index; ``-``
writes to stdout. Format errors are re-raised naming the file.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from casync_format.errors import FormatError
from casync_format.index import Index, IndexHeader, IndexWriter

from ._atomic import atomic_write

__all__ = ["open_index", "index_writer", "write_index_file", "STDIO"]

STDIO = "-"
_SPOOL = 16 * 1024 * 1024  # stdin indexes up to this size stay in memory


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


def _stdout() -> BinaryIO:
    return sys.stdout.buffer


@contextlib.contextmanager
def open_index(path: str, validate: bool = True) -> Iterator[Index]:
    """Yield the validated index stored at ``path`` (``-`` reads stdin).

    The file stays open for the ``with`` block; the index reads it lazily.
    Raises :class:`FormatError` (naming the file) for a damaged index and
    :class:`OSError` when the file cannot be opened.
    """
    with contextlib.ExitStack() as stack:
        if path == STDIO:
            f: BinaryIO = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=_SPOOL))  # type: ignore[arg-type]
            shutil.copyfileobj(_stdin(), f)
            f.seek(0)
            name = "index on stdin"
        else:
            f = stack.enter_context(open(path, "rb"))
            name = path
        try:
            index = Index(f, validate=validate)
        except FormatError as exc:
            raise FormatError(f"{name}: {exc}") from None
        yield index


@contextlib.contextmanager
def index_writer(path: str, header: IndexHeader) -> Iterator[IndexWriter]:
    """Yield an :class:`IndexWriter` whose index replaces ``path`` on success.

    The table is streamed to a temporary file in the same directory, finished,
    fsynced and renamed over ``path`` when the block ends cleanly; on an
    exception the temporary file is removed and ``path`` is untouched. ``-``
    spools the index (in memory up to a limit, then in a temporary file) and
    copies it to stdout only once complete, so a failure writes nothing there.
    """
    if path == STDIO:
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL) as spool:
            writer = IndexWriter(spool, header)  # type: ignore[arg-type]
            yield writer
            writer.finish()
            spool.seek(0)
            out = _stdout()
            shutil.copyfileobj(spool, out)
            out.flush()
        return
    with atomic_write(path) as f:
        writer = IndexWriter(f, header)
        yield writer
        writer.finish()


def write_index_file(path: str, header: IndexHeader, chunks: Iterable[tuple[bytes, int]]) -> int:
    """Write a whole index of ``(chunk_id, size)`` pairs to ``path``; returns the blob size."""
    with index_writer(path, header) as writer:
        for chunk_id, size in chunks:
            writer.add(chunk_id, size)
    return writer.blob_size
