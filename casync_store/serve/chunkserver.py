"""The chunk server: any store served over HTTP(S) the way desync's ``chunk-server`` serves it.

Routes (on :mod:`.httpserver`): ``GET``/``HEAD /<4 hex>/<64 hex>.cacnk``
serve a chunk's stored bytes as they are (casync's and desync's clients read
zstd, xz and gzip chunks), or with ``verify`` (the CLI's
``--skip-verify-read=false``) only after checking that they decode to data
hashing to the id (a 500 otherwise, as desync answers); with ``uncompressed`` the path is
``/<4 hex>/<64 hex>`` (no suffix) and the body is the decompressed, verified
data. ``PUT`` on the same paths stores a chunk when the server is writable,
after checking the body against the id with the server's digest. A
well-formed path is exactly ``/`` + the first four hex digits of the id +
``/`` + the 64 lowercase hex digits of the id (+ ``.cacnk`` unless
uncompressed), taken from the request target as sent (no decoding, no
normalization, no query); an absolute-form target (``http://host/...``) is
reduced to its path first. Anything else is a 400, so no request can name a
file outside the store. Status codes follow desync: 401 wrong or missing
authorization, 400 malformed path, rejected body or a write to a read-only
server, 405 another method, 404 missing chunk, 500 store failure (logged, a
short body; a local store's entry that is no chunk file, such as a symbolic
link, is never served). Concurrent GETs of one chunk are served by a single store read,
and a store may do more for a server through :meth:`~.base.Store.serve_raw`:
behind a cache (:class:`~.router.CachedStore`) a chunk fetched upstream is
verified with the server's digest and stored in the cache (a caching proxy).
With a ``cipher`` (desync's ``--encryption``) every path takes its suffix
after ``.cacnk`` (or the bare id) and every body is sealed on the wire,
whatever the store holds: GETs encrypt, PUTs decrypt before checking.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Callable

from casync_format import chunk as chunk_codec
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import SHA512_256, Digest
from casync_format.encrypt import ChunkCipher
from casync_format.errors import CasyncError, ChunkInvalid, ChunkMissing

from ..plumbing.singleflight import SingleFlight
from ..stores.base import Store, require_writable
from ..stores.layout import chunk_suffix, parse_chunk_path
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

__all__ = ["ChunkServer", "ChunkRoutes", "serve_chunks", "chunk_id_from_target", "max_body_size"]


_ABSOLUTE = re.compile(r"[hH][tT][tT][pP][sS]?://[^/?#]*(?=/)")
_OCTETS = ("Content-Type", "application/octet-stream")
_BODY_BUDGET = 1 << 30  # bytes of PUT bodies held in memory at once, over all connections


def chunk_id_from_target(target: str, uncompressed: bool = False, suffix: str | None = None) -> bytes | None:
    """The chunk id a request target names, or None unless it is well-formed (see the module doc).

    ``suffix`` (an encrypting server's) replaces the one ``uncompressed`` implies.
    """
    absolute = _ABSOLUTE.match(target)
    if absolute:
        target = target[absolute.end():]
    if not target.startswith("/"):
        return None
    return parse_chunk_path(target, chunk_suffix(uncompressed) if suffix is None else suffix, start=1)


def max_body_size(max_chunk_size: int = CA_CHUNK_SIZE_LIMIT_MAX) -> int:
    """The largest PUT body accepted: a chunk's size plus the worst compression overhead."""
    return chunk_codec.max_encoded_size(max_chunk_size)


class _Budget:
    """A bound on bytes held at once; a single request larger than the total takes all of it."""

    def __init__(self, total: int) -> None:
        self.total = self.free = total
        self._cond = threading.Condition()

    def acquire(self, n: int) -> int:
        n = min(n, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.free >= n)
            self.free -= n
        return n

    def release(self, n: int) -> None:
        with self._cond:
            self.free += n
            self._cond.notify_all()


class ChunkRoutes(ResourceRoutes):
    """The chunk server's app: maps requests to store calls (usable with any :class:`Server`)."""

    kind = "chunk"

    def __init__(self, store: Store, *, digest: Digest = SHA512_256, writable: bool = False,
                 uncompressed: bool = False, max_chunk_size: int = CA_CHUNK_SIZE_LIMIT_MAX,
                 verify: bool = False, cipher: ChunkCipher | None = None) -> None:
        self.store = store
        self.cipher = cipher  # desync's --encryption: bodies sealed on the wire, whatever the store holds
        self.digest = digest
        self.verify = verify  # check compressed chunks before serving them
        self.writable = writable
        self.uncompressed = uncompressed
        self.max_chunk_size = max_chunk_size
        if writable:
            require_writable(store)
        self._flights: SingleFlight[bytes] = SingleFlight()
        self._budget = _Budget(_BODY_BUDGET)
        self._suffix = chunk_suffix(uncompressed) + (cipher.suffix if cipher else "")
        self._overhead = cipher.overhead if cipher else 0

    def key(self, target: str) -> bytes | None:
        return chunk_id_from_target(target, self.uncompressed, self._suffix)

    def bad_target(self) -> str:
        return f"expected /<prefix>/<chunkid>{self._suffix}"

    def _get(self, chunk_id: bytes) -> Response:
        if self.uncompressed:
            def read() -> bytes:
                return self.store.get_chunk(chunk_id, self.digest, max_size=self.max_chunk_size)
        else:
            def read() -> bytes:
                return self._get_raw(chunk_id)
        try:
            body = self._flights.run((self.uncompressed, chunk_id), read)
        except ChunkMissing:
            return text_response(404, f"chunk {chunk_id.hex()} not found")
        except (CasyncError, OSError) as exc:
            return self._failed("read", chunk_id.hex(), exc)
        return Response(200, body if self.cipher is None else self.cipher.encrypt(body), [_OCTETS])

    def _get_raw(self, chunk_id: bytes) -> bytes:
        """The stored bytes (checked with ``verify``), as the store serves them
        (:meth:`~.base.Store.serve_raw`: behind a cache, a chunk fetched from
        upstream is verified and cached)."""
        return self.store.serve_raw(chunk_id, self.digest, self.max_chunk_size, verify=self.verify)

    def _head(self, chunk_id: bytes) -> Response:
        try:
            found = self.store.stat_chunk(chunk_id)
        except (CasyncError, OSError) as exc:
            return self._failed("look up", chunk_id.hex(), exc)
        if found is None:
            return text_response(404, f"chunk {chunk_id.hex()} not found")
        # The size a GET would send, where the store tells it (a local store: the file's size).
        known = found >= 0 and not self.uncompressed and self.cipher is None
        return Response(200, b"", [_OCTETS, *([("Content-Length", str(found))] if known else [])])

    def _put(self, chunk_id: bytes, request: Request) -> Response:
        if not self.writable:
            return text_response(400, "writing to upstream chunk store is not enabled")
        limit = self.max_chunk_size if self.uncompressed else max_body_size(self.max_chunk_size)
        limit += self._overhead
        declared = request.content_length
        if declared is None or declared > limit:
            request.read_body(limit)  # raises the 411 / 413 it deserves
        held = self._budget.acquire(declared or 0)
        try:
            body = request.read_body(limit)
            try:
                if self.cipher is not None:
                    body = self.cipher.decrypt(body, chunk_id)
                self._check(chunk_id, body)
            except ChunkInvalid as exc:
                raise HTTPError(400, f"chunk {chunk_id.hex()} rejected: {exc.cause}") from None
            return self._store(chunk_id, body)
        finally:
            self._budget.release(held)

    def _check(self, chunk_id: bytes, body: bytes) -> None:
        if self.uncompressed:
            chunk_codec.verify(chunk_id, body, self.digest)
        else:
            chunk_codec.decode(body, chunk_id, self.digest, max_size=self.max_chunk_size)

    def _store(self, chunk_id: bytes, body: bytes) -> Response:
        store = require_writable(self.store)
        try:
            if self.uncompressed:
                store.store_chunk(chunk_id, body)
            else:
                store.put_raw(chunk_id, body)
        except (CasyncError, OSError) as exc:
            return self._failed("store", chunk_id.hex(), exc)
        return Response(200)


class ChunkServer(Server):
    """A chunk server running in background threads (for library users and tests).

    ``start()`` binds every ``listen`` address and returns; :attr:`addresses`
    gives the bound (host, port) pairs (port 0 picks a free port);
    ``shutdown()`` stops it gracefully; ``with`` starts and stops it. The
    caller keeps ownership of ``store``.
    """

    def __init__(self, store: Store, listen: Sequence[str] = ("127.0.0.1:0",), *,
                 digest: Digest = SHA512_256, writable: bool = False, uncompressed: bool = False,
                 tls: TLSOptions | None = None, authorization: str | None = None,
                 log: str | None = None, verify: bool = False, limits: Limits | None = None,
                 cipher: ChunkCipher | None = None) -> None:
        self.store = store
        self.routes = ChunkRoutes(store, digest=digest, writable=writable, uncompressed=uncompressed,
                                  verify=verify, cipher=cipher)
        super().__init__(self.routes, listen, tls=tls, authorization=authorization, log=log, limits=limits)


def serve_chunks(
    store: Store,
    listen: Sequence[str],
    *,
    digest: Digest,
    writable: bool = False,
    uncompressed: bool = False,
    tls: TLSOptions | None = None,
    authorization: str | None = None,
    log: str | None = None,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
    verify: bool = False,
    limits: Limits | None = None,
    hangup: Callable[[], None] | None = None,
    cipher: ChunkCipher | None = None,
) -> None:
    """Serve ``store`` on ``listen`` until SIGTERM or SIGINT, then return after a graceful stop.

    ``ready`` is called with the bound addresses once every listener is up;
    ``hangup`` on each SIGHUP (e.g. to swap a :class:`~..stores.swap.SwapStore`'s store);
    ``verify`` checks each compressed chunk before it is served; ``limits``
    bounds connections and slow clients (:class:`~.httpserver.Limits`); ``cipher``
    serves and accepts chunks encrypted (desync's ``--encryption``).
    Raises ParameterError for an unusable address, certificate or log file
    and StoreError when ``writable`` is asked of a read-only store.
    """
    server = ChunkServer(store, listen, digest=digest, writable=writable, uncompressed=uncompressed,
                         tls=tls, authorization=authorization, log=log, verify=verify, limits=limits,
                         cipher=cipher)
    server.serve_until_signal(ready, hangup=hangup)
