"""Opening and writing index files wherever they live: a local path, stdin/stdout, or an index store URL.

:func:`open_index` gives an operation a validated :class:`~casync_format.index.Index`
for a location: a local path (opened in place), ``-`` (stdin), or a remote
location (``http(s)://``, ``sftp://``, ``s3+http(s)://``, also ``file://``),
which :func:`~.indexstore.split_index_location` splits into an index store and
a name; a remote index is copied into a spool (memory up to 16 MiB, then a
temporary file), since an index is read with seeks. :func:`index_writer`
streams a new index into a temporary file next to its final name and renames
it into place only when the table is complete; for ``-`` and remote
locations the index goes to a spool first and is written to stdout or
uploaded with :meth:`~.indexstore.WriteIndexStore.put_index` (atomic on
every backend) only once complete, so a failed ``make`` never leaves a
truncated index anywhere. Store options for remote locations come from
``options_for(store_location)``. Format errors are re-raised naming the
location (credentials in URLs are never shown).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO, Callable

from casync_format.errors import FormatError, IndexNotFound, StoreError
from casync_format.index import Index, IndexHeader, IndexWriter

from ..plumbing.atomic import atomic_write
from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location, redact
from .indexstore import (
    IndexStore,
    LocalIndexStore,
    WriteIndexStore,
    copy_stream,
    open_index_store,
    open_local_index_store,
    split_index_location,
)

__all__ = ["open_index", "index_writer", "write_index_file", "display_location", "STDIO"]

STDIO = "-"
_SPOOL = 16 * 1024 * 1024  # stdin and remote indexes up to this size stay in memory

OptionsFor = Callable[[str], StoreOptions]


def _stdin() -> BinaryIO:
    return sys.stdin.buffer


def _stdout() -> BinaryIO:
    return sys.stdout.buffer


def display_location(location: str) -> str:
    """``location`` as messages show it: passwords in URLs masked (by ``plumbing.locparse.redact``)."""
    return redact(location)


def _local_file(location: str) -> str:
    """The local path of a ``file://`` index location."""
    base, name = split_index_location(location)
    return os.path.join(open_local_index_store(base, StoreOptions()).path, name)


def _spool() -> BinaryIO:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # type: ignore[return-value]


def _fetch(location: str, options_for: OptionsFor | None, stack: contextlib.ExitStack) -> BinaryIO:
    """A seekable stream of the remote index at ``location`` (closed with ``stack``)."""
    base, name = split_index_location(location)
    store = open_index_store(base, options_for)
    try:
        try:
            source = store.open_index(name)
        except IndexNotFound:
            raise IndexNotFound(f"index {display_location(location)} does not exist") from None
        if isinstance(store, LocalIndexStore):  # a regular file: read in place
            return stack.enter_context(source)
        spool = stack.enter_context(_spool())
        with source:
            copy_stream(source, spool)
        spool.seek(0)
        return spool
    finally:
        store.close()


@contextlib.contextmanager
def open_index(
    location: str | os.PathLike[str], validate: bool = True, options_for: OptionsFor | None = None
) -> Iterator[Index]:
    """Yield the validated index stored at ``location`` (``-`` reads stdin).

    The file stays open for the ``with`` block; the index reads it lazily.
    Raises :class:`FormatError` (naming the location) for a damaged index,
    :class:`IndexNotFound` for a missing remote index, :class:`StoreError`
    when a remote store fails, and :class:`OSError` when a local file cannot
    be opened.
    """
    location = os.fspath(location)
    with contextlib.ExitStack() as stack:
        if location == STDIO:
            f = stack.enter_context(_spool())
            shutil.copyfileobj(_stdin(), f)
            f.seek(0)
            name = "index on stdin"
        elif Location.parse(location).is_url:
            f = _fetch(location, options_for, stack)
            name = display_location(location)
        else:
            f = stack.enter_context(open(location, "rb"))
            name = location
        try:
            index = Index(f, validate=validate)
        except FormatError as exc:
            raise FormatError(f"{name}: {exc}") from None
        yield index


def _writable_store(location: str, options_for: OptionsFor | None) -> tuple[WriteIndexStore, str]:
    """The index store and name an index location is written to (checked before any work)."""
    base, name = split_index_location(location)
    store: IndexStore = open_index_store(base, options_for)
    if not isinstance(store, WriteIndexStore):
        store.close()
        raise StoreError(f"index store {display_location(base)} is read-only: cannot write {name}")
    return store, name


@contextlib.contextmanager
def index_writer(
    location: str | os.PathLike[str], header: IndexHeader, options_for: OptionsFor | None = None
) -> Iterator[IndexWriter]:
    """Yield an :class:`IndexWriter` whose index replaces ``location`` on success.

    A local index is streamed to a temporary file in the same directory,
    finished, fsynced and renamed over the path when the block ends cleanly;
    on an exception the temporary file is removed and the path is untouched.
    ``-`` and remote locations spool the index (in memory up to a limit, then
    in a temporary file) and copy it to stdout, or upload it, only once
    complete, so a failure writes nothing there. The remote store is opened
    (and the name checked) before the block runs, so a bad location fails
    before any chunking.
    """
    location = os.fspath(location)
    if location == STDIO:
        with _spool() as spool:
            writer = IndexWriter(spool, header)
            yield writer
            writer.finish()
            spool.seek(0)
            out = _stdout()
            shutil.copyfileobj(spool, out)
            out.flush()
        return
    loc = Location.parse(location)
    if loc.scheme == "file":
        location = _local_file(location)
    elif loc.is_remote:
        store, name = _writable_store(location, options_for)
        with contextlib.closing(store), _spool() as spool:
            writer = IndexWriter(spool, header)
            yield writer
            writer.finish()
            size = spool.tell()
            spool.seek(0)
            store.put_index(name, spool, size)
        return
    with atomic_write(location) as f:
        writer = IndexWriter(f, header)
        yield writer
        writer.finish()


def write_index_file(
    location: str | os.PathLike[str],
    header: IndexHeader,
    chunks: Iterable[tuple[bytes, int]],
    options_for: OptionsFor | None = None,
) -> int:
    """Write a whole index of ``(chunk_id, size)`` pairs to ``location``; returns the blob size."""
    with index_writer(location, header, options_for) as writer:
        for chunk_id, size in chunks:
            writer.add(chunk_id, size)
    return writer.blob_size
