"""The index server: any index store served over HTTP(S) the way desync's ``index-server`` serves it.

Routes (on :mod:`.httpserver`): ``GET /<name>`` streams the index file's
bytes, ``HEAD /<name>`` tells whether it exists, and ``PUT /<name>`` stores a
new index when the server is writable. The name is the last segment of the
target's path, as desync's server takes it (``/indexes/x.caibx`` names
``x.caibx``; a query is ignored), taken from the request target as sent (an
absolute-form target ``http://host/...`` is reduced to its path first): no
fragment, no empty segment; percent escapes are decoded strictly (``%`` must
be followed by two hex digits, the result must be UTF-8) and every decoded
segment must pass :func:`~.indexstore.valid_index_name` (no ``/``, ``\\``,
``.``, ``..``, NUL or control characters), so no request can name a file
outside the store, and the name must end in ``.caibx`` or ``.caidx``
(:data:`INDEX_SUFFIXES`): the server serves index files only, never another
file that sits in its directory (a TLS key, a config). In a local store the
entry must also be a regular file, or a symbolic link resolving to a regular
file inside the store's directory (its bytes are served as they are: a
damaged index is the client's to report). Anything else is a 400 (for GET, HEAD and PUT alike; a PUT
to such a name writes nothing). A PUT body (with a
Content-Length, or ``Transfer-Encoding: chunked`` as desync's Go client sends
a piped index; at most ``max_index_size`` bytes) is streamed to a spool, never
held whole in memory, parsed as an index (415 when it is not one, and
nothing is stored), then handed to the store's atomic
:meth:`~.indexstore.WriteIndexStore.put_index`. Status codes follow desync:
401 wrong or missing authorization (checked by the server), 400 malformed or non-index
name or a write to a read-only server, 404 missing index, 405 another
method, 500 store failure (logged, a short body). Indexes from a remote
store are spooled before they are served, so the answer has a length.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
import urllib.parse
from collections.abc import Sequence
from typing import BinaryIO, Callable

from casync_format.errors import CasyncError, FormatError, IndexNotFound, StoreError
from casync_format.index import Index

from ..stores.indexstore import IndexStore, LocalIndexStore, WriteIndexStore, copy_stream, valid_index_name
from .httpserver import (
    HTTPError,
    Limits,
    Request,
    ResourceRoutes,
    Response,
    Server,
    TLSOptions,
    text_response,
)

__all__ = [
    "IndexRoutes",
    "IndexServer",
    "serve_indexes",
    "index_name_from_target",
    "DEFAULT_MAX_INDEX_SIZE",
    "INDEX_SUFFIXES",
    "is_index_file_name",
]

#: The only names an index server serves: blob and archive indexes.
INDEX_SUFFIXES = (".caibx", ".caidx")


#: The largest index a PUT may carry by default (about 27 million chunks).
DEFAULT_MAX_INDEX_SIZE = 1 << 30

_ABSOLUTE = re.compile(r"[hH][tT][tT][pP][sS]?://[^/?#]*(?=/)")
_TARGET = re.compile(r"((?:/(?:[^/?#%]|%[0-9A-Fa-f]{2})+)+)(?:\?[^#]*)?")
_OCTETS = ("Content-Type", "application/octet-stream")
_SPOOL_MEMORY = 1 << 20  # bytes of a PUT or remote index kept in memory before spilling to disk


def is_index_file_name(name: str) -> bool:
    """Whether ``name`` is a safe index name with an index suffix and something before it."""
    return valid_index_name(name) and any(name.endswith(s) and len(name) > len(s) for s in INDEX_SUFFIXES)


def index_name_from_target(target: str) -> str | None:
    """The index name a request target names, or None unless it is well-formed (see the module doc)."""
    absolute = _ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end():]
    m = _TARGET.fullmatch(target)
    if m is None:
        return None
    try:
        names = [urllib.parse.unquote_to_bytes(s).decode("utf-8") for s in m.group(1).split("/")[1:]]
    except UnicodeDecodeError:
        return None
    return names[-1] if all(valid_index_name(name) for name in names) else None


def _spool() -> BinaryIO:
    return tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # type: ignore[return-value]


def _file_size(f: BinaryIO) -> int | None:
    """The size of a regular file behind ``f``, or None when it is not one."""
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


class IndexRoutes(ResourceRoutes):
    """The index server's app: maps requests to index store calls (usable with any :class:`Server`)."""

    kind = "index"

    def __init__(self, store: IndexStore, *, writable: bool = False,
                 max_index_size: int = DEFAULT_MAX_INDEX_SIZE) -> None:
        if writable and not isinstance(store, WriteIndexStore):
            raise StoreError(f"index store {store} is read-only")
        self.store = store
        self.writable = writable
        self.max_index_size = max_index_size

    def key(self, target: str) -> str | None:
        name = index_name_from_target(target)
        return name if name is not None and is_index_file_name(name) else None

    def bad_target(self) -> str:
        return "invalid index name (expected /NAME.caibx or /NAME.caidx)"

    def _local_path(self, name: str) -> str | None:
        """The real path of ``name`` in a local store, or None when it does not exist.

        Raises HTTPError 400 when the entry resolves outside the store's
        directory or to something other than a regular file.
        """
        assert isinstance(self.store, LocalIndexStore)
        root = os.path.realpath(self.store.path)
        entry = os.path.join(root, name)
        try:
            os.lstat(entry)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HTTPError(400, f"index {name}: {exc.strerror}") from None
        real = os.path.realpath(entry)
        if real == root or os.path.commonpath([root, real]) != root:
            raise HTTPError(400, f"index {name} is outside the index store")
        try:
            st = os.stat(real)
        except FileNotFoundError:  # a dangling link inside the store: as if missing
            return None
        except OSError as exc:
            raise HTTPError(400, f"index {name}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise HTTPError(400, f"index {name} is not a regular file")
        return real

    def _open_local(self, name: str) -> tuple[BinaryIO, int]:
        real = self._local_path(name)
        if real is None:
            raise IndexNotFound(f"index {name} not found")
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(real, flags)
        except FileNotFoundError:
            raise IndexNotFound(f"index {name} not found") from None
        except OSError as exc:  # replaced by a link or a special file since the check
            raise HTTPError(400, f"index {name}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HTTPError(400, f"index {name} is not a regular file")
            return os.fdopen(fd, "rb"), st.st_size
        except BaseException:
            os.close(fd)
            raise

    def _open(self, name: str) -> tuple[BinaryIO, int]:
        """The index as a file with its length (a non-file stream is spooled first)."""
        if isinstance(self.store, LocalIndexStore):
            return self._open_local(name)
        source = self.store.open_index(name)
        size = _file_size(source)
        if size is not None:
            return source, size
        spool = _spool()
        try:
            with source:
                size = copy_stream(source, spool)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool, size

    def _get(self, name: str) -> Response:
        try:
            body, size = self._open(name)
        except IndexNotFound:
            return text_response(404, f"index {name} not found")
        except (CasyncError, OSError) as exc:
            return self._failed("read", name, exc)
        return Response(200, body, [_OCTETS], length=size)

    def _head(self, name: str) -> Response:
        try:
            if isinstance(self.store, LocalIndexStore):  # a file: answer its length too
                body, size = self._open(name)
                body.close()
                return Response(200, b"", [_OCTETS, ("Content-Length", str(size))])
            present = self.store.has_index(name)
        except IndexNotFound:
            present = False
        except (CasyncError, OSError) as exc:
            return self._failed("look up", name, exc)
        if not present:
            return text_response(404, f"index {name} not found")
        return Response(200, b"", [_OCTETS])

    def _put(self, name: str, request: Request) -> Response:
        if not self.writable or not isinstance(self.store, WriteIndexStore):
            return text_response(400, "writing to the index store is not enabled")
        if isinstance(self.store, LocalIndexStore):
            self._local_path(name)  # no write through a link out, over a non-file
        with _spool() as spool:
            try:
                size = request.copy_body(spool, self.max_index_size)
            except OSError as exc:
                return self._failed("receive", name, exc)
            try:
                Index(spool, validate=True)
            except FormatError as exc:
                raise HTTPError(415, f"invalid index: {exc}") from None
            spool.seek(0)
            try:
                self.store.put_index(name, spool, size)
            except (CasyncError, OSError) as exc:
                return self._failed("store", name, exc)
        return Response(200)


class IndexServer(Server):
    """An index server running in background threads (for library users and tests).

    ``start()`` binds every ``listen`` address and returns; :attr:`addresses`
    gives the bound (host, port) pairs (port 0 picks a free port);
    ``shutdown()`` stops it gracefully; ``with`` starts and stops it. The
    caller keeps ownership of ``store``.
    """

    def __init__(self, store: IndexStore, listen: Sequence[str] = ("127.0.0.1:0",), *,
                 writable: bool = False, tls: TLSOptions | None = None, authorization: str | None = None,
                 log: str | None = None, max_index_size: int = DEFAULT_MAX_INDEX_SIZE,
                 limits: Limits | None = None) -> None:
        self.store = store
        self.routes = IndexRoutes(store, writable=writable, max_index_size=max_index_size)
        super().__init__(self.routes, listen, tls=tls, authorization=authorization, log=log, limits=limits)


def serve_indexes(
    store: IndexStore,
    listen: Sequence[str],
    *,
    writable: bool = False,
    tls: TLSOptions | None = None,
    authorization: str | None = None,
    log: str | None = None,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve ``store`` on ``listen`` until SIGTERM or SIGINT, then return after a graceful stop.

    ``ready`` is called with the bound addresses once every listener is up;
    ``limits`` bounds connections and slow clients (:class:`~.httpserver.Limits`).
    Raises ParameterError for an unusable address, certificate or log file
    and StoreError when ``writable`` is asked of a read-only store.
    """
    server = IndexServer(store, listen, writable=writable, tls=tls, authorization=authorization, log=log,
                         limits=limits)
    server.serve_until_signal(ready)
