"""Index stores: where index files (.caibx/.caidx) live, locally or remotely.

An index location is a store location plus a file name, as desync splits it:
``https://host/indexes/blob.caibx`` is the index store ``https://host/indexes``
holding ``blob.caibx``; ``s3+http://host/bucket/dir/x.caibx?lookup=path`` keeps
its query on the store. An :class:`IndexStore` opens indexes by name as byte
streams; a :class:`WriteIndexStore` also stores them, atomically (a reader
sees the whole new index or the old one). Backends are looked up in the one
backend table, :data:`~.backends.BACKENDS` (its ``index`` factories, imported
only when used, so paramiko and boto3 are needed only for sftp:// and s3+…://
indexes); a factory is called as ``factory(base_location, options)``. Names are
checked by :func:`valid_index_name` before any backend sees them, so no name
from a request or a command line can leave its store.
"""

from __future__ import annotations

import os
import stat
import urllib.parse
from abc import ABC, abstractmethod
from typing import BinaryIO, Callable

from casync_format.errors import IndexNotFound, ParameterError, StoreError

from ..plumbing.atomic import atomic_write
from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location
from .backends import BACKENDS, load_factory

__all__ = [
    "IndexStore",
    "WriteIndexStore",
    "LocalIndexStore",
    "valid_index_name",
    "check_index_name",
    "split_index_location",
    "open_index_store",
    "is_remote_location",
    "open_local_index_store",
    "copy_stream",
    "copy_exactly",
]

_COPY = 1024 * 1024


def valid_index_name(name: str) -> bool:
    """Whether ``name`` is a safe index file name: one path component, no
    ``.``/``..``, no separator (``/`` or ``\\``), no NUL or control character."""
    if not name or name in (".", "..") or len(name.encode("utf-8", "surrogateescape")) > 255:
        return False
    return not any(c in "/\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in name)


def check_index_name(name: str, store: object) -> str:
    """Return ``name`` or raise :class:`ParameterError` naming the store."""
    if not valid_index_name(name):
        raise ParameterError(f"index store {store}: invalid index name {name!r}")
    return name


class IndexStore(ABC):
    """A place index files can be read from, by name."""

    @abstractmethod
    def open_index(self, name: str) -> BinaryIO:
        """A readable stream of the index's bytes (the caller closes it).

        Raises :class:`IndexNotFound` when the store has no such index and
        :class:`StoreError` when it cannot tell.
        """

    def has_index(self, name: str) -> bool:
        """Whether the store holds an index of that name."""
        try:
            self.open_index(name).close()
        except IndexNotFound:
            return False
        return True

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        return None

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def __str__(self) -> str:
        """The store's location, for messages."""


class WriteIndexStore(IndexStore):
    """An index store that can also take new indexes."""

    @abstractmethod
    def put_index(self, name: str, source: BinaryIO, size: int) -> None:
        """Store ``size`` bytes read from ``source`` as ``name``, atomically."""


class LocalIndexStore(WriteIndexStore):
    """Index files in a local directory."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)

    def __str__(self) -> str:
        return self.path

    def _file(self, name: str) -> str:
        return os.path.join(self.path, check_index_name(name, self))

    def open_index(self, name: str) -> BinaryIO:
        path = self._file(name)
        try:
            # Symlinks are followed (``latest.caibx -> v3.caibx``, as desync does):
            # they are the store owner's; names from requests never hold a "/".
            # O_NONBLOCK: a fifo in the directory must not hang the open (no effect on files).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise IndexNotFound(f"index {path} does not exist") from None
        except OSError as exc:
            raise StoreError(f"index {path}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(f"index {path} is not a regular file")
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def put_index(self, name: str, source: BinaryIO, size: int) -> None:
        path = self._file(name)
        with atomic_write(path) as out:
            copy_exactly(source, out, size)


def copy_exactly(source: BinaryIO, out: BinaryIO, size: int) -> int:
    """Copy exactly ``size`` bytes; raises StoreError when ``source`` ends early."""
    left = size
    while left:
        block = source.read(min(left, _COPY))
        if not block:
            raise StoreError(f"index source ended after {size - left} of {size} bytes")
        out.write(block)
        left -= len(block)
    return size


def open_local_index_store(location: str, options: StoreOptions) -> LocalIndexStore:
    """A :class:`LocalIndexStore` for a directory path or ``file://`` URL."""
    loc = Location.parse(location)
    if loc.scheme == "file":
        if loc.netloc not in ("", "localhost"):
            raise StoreError(f"index store {loc}: file:// URLs must name a local path")
        location = urllib.parse.unquote(loc.path) or "/"
    return LocalIndexStore(location or ".")


def is_remote_location(location: str) -> bool:
    """Whether an index location names a URL (anything but a local path, ``file://`` or ``-``)."""
    return Location.parse(location).is_remote


def split_index_location(location: str) -> tuple[str, str]:
    """Split an index location into (store location, index name).

    The name is the last component of the path (URL-decoded for URLs); a
    URL's query (``?lookup=path``) stays with the store. Raises
    :class:`ParameterError` when no valid name can be taken from it.
    """
    loc = Location.parse(location)
    if not loc.is_url:
        base, name = os.path.split(location)
        return base or ".", check_index_name(name, loc)
    path = loc.path
    slash = path.rfind("/")
    if slash < 0:
        raise ParameterError(f"index location {loc}: no index name in the path")
    name = urllib.parse.unquote(path[slash + 1 :])
    return loc.with_path(path[:slash] or "/"), check_index_name(name, loc)


def open_index_store(
    location: str,
    options_for: Callable[[str], StoreOptions] | None = None,
    must_exist: bool = False,
) -> IndexStore:
    """Open the index store at a store location (not an index location).

    ``options_for(location)`` supplies the store's options (config file and
    flags); default options otherwise. Raises :class:`StoreError` for a
    scheme that cannot hold indexes (``ssh://``: casync's protocol serves
    them, but desync and pycasync store indexes elsewhere). ``must_exist``
    refuses a local index store whose directory is missing (for servers,
    where an empty answer would hide a typo).
    """
    loc = Location.parse(location)
    scheme = loc.scheme
    backend = BACKENDS.get(scheme)
    if backend is None or backend.index is None:
        if scheme == "ssh":
            raise StoreError(f"index location {loc}: ssh:// stores cannot hold indexes (use sftp://)")
        raise StoreError(f"index location {loc}: scheme {scheme!r} cannot hold indexes")
    factory = load_factory(backend.index, f"index location {loc}")
    options = options_for(location) if options_for else StoreOptions()
    if options.encryption_configured:  # as desync: indexes are never encrypted, nor silently plain
        raise StoreError(f"store options for {loc}: encryption is not supported by index stores")
    store: IndexStore = factory(location, options)
    if must_exist and isinstance(store, LocalIndexStore) and not os.path.isdir(store.path):
        store.close()
        raise StoreError(f"index store {loc} is not a directory")
    return store


def copy_stream(source: BinaryIO, out: BinaryIO) -> int:
    """Copy ``source`` to its end into ``out``; returns the byte count."""
    total = 0
    while True:
        block = source.read(_COPY)
        if not block:
            return total
        out.write(block)
        total += len(block)

