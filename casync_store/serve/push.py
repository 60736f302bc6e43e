"""The server side of casync's ssh remoting for writing: ``push`` over stdin and stdout.

``casync make host:/srv/x.caibx DIR`` (its store ``host:/srv/default.castr``
or ``--store=host:/srv/store``) runs ``ssh host casync push - ARCHIVE INDEX
WSTORE [RSTORE...]`` and speaks casync's protocol
(:mod:`casync_format.protocol`) over the pipe. :func:`receive` answers it
as casync's own ``push`` verb does: it offers a writable store, index and/or
archive in its HELLO, takes the index as it arrives, parsing and checking
it piece by piece, and asks the client (REQUEST) for every chunk the index
lists that none of the stores holds yet, once each (a client pushing chunks
without their index is refused: casync's would silently send none). Every
chunk received is decompressed, checked against its id (with the index's
digest) and the size the index gives it, and stored atomically in the
first store. Only when the
index is complete and every chunk it needs is stored is the index renamed
into place (written to a temporary file until then), and the session ends
with GOODBYE; a pushed archive is likewise renamed into place at its end. A
client that leaves early, aborts, lacks a chunk or sends a damaged one ends
the session with an error and nothing installed (chunks already stored stay:
they are valid). Needs nothing beyond the standard library and a zstd binding.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from casync_format import chunk as chunk_codec
from casync_format import compress
from casync_format import protocol as proto
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.digest import SHA256, SHA512_256, Digest
from casync_format.errors import ChunkInvalid, FormatError, ParameterError, StoreError
from casync_format.index import IndexStream

from ..plumbing.atomic import atomic_write
from ..stores.base import Store, WriteStore, require_writable

__all__ = ["PushStats", "receive"]

log = logging.getLogger(__name__)


@dataclass
class PushStats:
    """What one :func:`receive` session did."""

    client_flags: int = 0  #: the client's HELLO feature flags
    index_chunks: int = 0  #: items of the pushed index
    chunks_requested: int = 0  #: ids asked of the client (the ones no store held)
    chunks_received: int = 0  #: chunks checked and stored
    index_bytes: int = 0
    archive_bytes: int = 0
    ended_by: str = ""  #: "done" (we said goodbye), "goodbye" or "eof" (the client left)


class _Upload:
    """A file received in pieces: written to a temporary file, renamed at :meth:`commit`."""

    def __init__(self, path: str, sync: bool) -> None:
        self.path = path
        try:
            self._cm = atomic_write(path, sync=sync)
            self.file = self._cm.__enter__()
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
        self.size = 0
        self.open = True

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        self.size += len(data)

    def commit(self) -> None:
        self.open = False
        try:
            self._cm.__exit__(None, None, None)
        except OSError as exc:
            raise StoreError(f"cannot install {self.path}: {exc.strerror or exc}") from None

    def discard(self) -> None:
        if self.open:
            self.open = False
            with contextlib.suppress(Exception):
                self._cm.__exit__(StoreError, StoreError("discarded"), None)


def _make_blocking(stream: BinaryIO) -> None:
    """Clear O_NONBLOCK on a stream's descriptor (a test's BytesIO has none)."""
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        os.set_blocking(stream.fileno(), True)


class _Receiver:
    """One push session: a client's index, archive and chunks into our files and stores."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, wstore: WriteStore | None, rstores: Sequence[Store],
                 index: _Upload | None, archive: _Upload | None) -> None:  # fmt: skip
        self.stdin = stdin
        self.stdout = stdout
        self.wstore = wstore
        self.stores = ([wstore] if wstore is not None else []) + list(rstores)
        self.index = index
        self.archive = archive
        self.parser = IndexStream()
        self.sizes: dict[bytes, int] = {}  # chunk id -> size, for every item of the index
        self.pending: set[bytes] = set()  # requested, not yet received
        self.asked: set[bytes] = set()  # every id ever requested or found present
        self.archive_done = False
        self.stats = PushStats()

    # ------------------------------------------------------------------ I/O

    def read(self, n: int) -> bytes:
        while True:
            part = self.stdin.read(n)
            if part is not None:
                return part
            select.select([self.stdin], [], [])

    def send(self, msg: proto.Message) -> None:
        self.stdout.write(proto.encode(msg))

    def abort(self, error: int, reason: str) -> None:
        """Tell the client why we give up (best effort: it may be gone)."""
        with contextlib.suppress(OSError):
            self.send(proto.Abort(error, reason))
            self.stdout.flush()

    # ------------------------------------------------------------------ session

    def services(self) -> int:
        flags = proto.WRITABLE_STORE if self.wstore is not None else 0
        flags |= proto.WRITABLE_INDEX if self.index is not None else 0
        return flags | (proto.WRITABLE_ARCHIVE if self.archive is not None else 0)

    def handshake(self) -> bool:
        """Exchange HELLOs; False when the client left before saying hello."""
        local = self.services()
        self.send(proto.Hello(local))
        self.stdout.flush()
        msg = proto.read_message(self.read)
        if msg is None:
            self.stats.ended_by = "eof"
            return False
        if not isinstance(msg, proto.Hello):
            raise FormatError(f"client sent {proto.type_name(msg.TYPE)} before hello")
        try:
            proto.check_hello(local, msg.flags)
        except FormatError as exc:
            raise FormatError(f"client hello ({proto.flag_names(msg.flags)}): {exc}") from None
        self.stats.client_flags = msg.flags
        if msg.flags & proto.PUSH_CHUNKS and not msg.flags & proto.PUSH_INDEX_CHUNKS:
            # casync's client only sends the chunks the remote asks for, which needs the index here.
            raise StoreError("push: chunks can only be pushed together with their index (casync would "
                             "send none): put the index on the same host, e.g. 'casync make "
                             "--store=host:/srv/store host:/srv/x.caibx ...'")
        return True

    def wants(self, flag: int) -> bool:
        return bool(self.stats.client_flags & flag)

    def finished(self) -> bool:
        """Whether everything the client pushes is in: the index, its chunks, the archive."""
        if self.wants(proto.PUSH_INDEX) and (not self.parser.done or self.pending):
            return False
        return not (self.wants(proto.PUSH_ARCHIVE) and not self.archive_done)

    def run(self) -> None:
        if not self.handshake():
            return
        while not self.finished():
            self.stdout.flush()
            msg = proto.read_message(self.read)
            if msg is None:
                raise StoreError(f"the client left before the push was complete ({self.missing()})")
            self.dispatch(msg)
        for upload in (self.index, self.archive):
            if upload is not None and upload.open and upload.size:
                upload.commit()
        self.send(proto.Goodbye())
        self.stdout.flush()
        self.stats.ended_by = "done"

    def missing(self) -> str:
        if self.wants(proto.PUSH_INDEX) and not self.parser.done:
            return "the index is incomplete"
        if self.pending:
            return f"{len(self.pending)} chunks of the index not received"
        return "the archive is incomplete"

    def dispatch(self, msg: proto.Message) -> None:
        if isinstance(msg, proto.IndexData) and self.wants(proto.PUSH_INDEX):
            self.index_data(msg.data)
        elif isinstance(msg, proto.IndexEOF) and self.wants(proto.PUSH_INDEX):
            self.parser.finish()
        elif isinstance(msg, (proto.ArchiveData, proto.ArchiveEOF)) and self.wants(proto.PUSH_ARCHIVE):
            self.archive_data(msg)
        elif isinstance(msg, proto.Chunk) and self.wants(proto.PUSH_CHUNKS):
            self.chunk(msg)
        elif isinstance(msg, proto.Missing) and self.wants(proto.PUSH_CHUNKS):
            raise StoreError(f"the client does not have chunk {msg.chunk_id.hex()}, which its index lists")
        elif isinstance(msg, proto.Goodbye):
            raise StoreError(f"the client ended the session before the push was complete ({self.missing()})")
        elif isinstance(msg, proto.Abort):
            raise StoreError(f"client aborted the session: {msg.reason or 'no reason given'}")
        else:
            raise FormatError(f"unexpected {proto.type_name(msg.TYPE)} message from a pushing client")

    # ------------------------------------------------------------------ index and archive

    def index_data(self, data: bytes) -> None:
        assert self.index is not None
        if self.parser.done:
            raise FormatError("index data after the index's table tail")
        items = self.parser.feed(data)
        self.index.write(data)
        self.stats.index_bytes += len(data)
        self.stats.index_chunks += len(items)
        wanted: list[bytes] = []
        for item in items:
            self.sizes.setdefault(item.id, item.size)
            if item.id in self.asked:
                continue
            self.asked.add(item.id)
            if self.wants(proto.PUSH_INDEX_CHUNKS) and not self.held(item.id):
                wanted.append(item.id)
        self.pending.update(wanted)
        self.stats.chunks_requested += len(wanted)
        for request in proto.split_request(wanted):
            self.send(request)

    def held(self, chunk_id: bytes) -> bool:
        """Whether any of the stores has the chunk already."""
        for store in self.stores:
            try:
                if store.has_chunk(chunk_id):
                    return True
            except StoreError as exc:
                log.warning("cannot tell whether %s holds chunk %s: %s", store, chunk_id.hex(), exc)
        return False

    def archive_data(self, msg: proto.ArchiveData | proto.ArchiveEOF) -> None:
        assert self.archive is not None
        if self.archive_done:
            raise FormatError("archive data after the archive's end")
        if isinstance(msg, proto.ArchiveEOF):
            self.archive_done = True
            return
        self.archive.write(msg.data)
        self.stats.archive_bytes += len(msg.data)

    # ------------------------------------------------------------------ chunks

    def digests(self) -> tuple[Digest, ...]:
        """The digests a chunk id may be made with: the index's, or either without one."""
        if self.parser.header is not None:
            return (self.parser.header.digest,)
        return (SHA512_256, SHA256)

    def chunk(self, msg: proto.Chunk) -> None:
        """Check a pushed chunk against its id and index size, then store it."""
        assert self.wstore is not None
        cid = msg.chunk_id
        size = self.sizes.get(cid)
        try:
            if msg.compressed:
                data = chunk_codec.decode(msg.data, cid, None, size=size, max_size=CA_CHUNK_SIZE_LIMIT_MAX)
            else:
                data = msg.data
                if size is not None and len(data) != size:
                    raise ChunkInvalid(cid, None, f"is {len(data)} bytes, index says {size}", "the client")
            actual = [d(data) for d in self.digests()]
            if cid not in actual:
                raise ChunkInvalid(cid, actual[0], f"content hashes to {actual[0].hex()}", "the client")
        except ChunkInvalid as exc:
            raise StoreError(f"the client sent a damaged chunk: {exc}") from None
        blob = msg.data if msg.compressed and compress.detect(msg.data) == self.wstore.compression else None
        self.wstore.store_chunk(cid, data, blob)
        self.pending.discard(cid)
        self.stats.chunks_received += 1


def receive(
    stdin: BinaryIO,
    stdout: BinaryIO,
    wstore: Store | None,
    rstores: Sequence[Store] = (),
    index_path: str | None = None,
    archive_path: str | None = None,
    sync: bool = True,
) -> PushStats:
    """Take what one casync-protocol client pushes on ``stdin``/``stdout``.

    ``wstore`` is where received chunks go (it must be writable); a chunk in
    it or in one of ``rstores`` is not asked for.
    ``index_path`` and ``archive_path`` are where a pushed index or archive
    is installed, atomically, once complete (``sync`` makes them durable
    first). Returns when the push is complete and GOODBYE sent. Raises
    :class:`FormatError` when the client speaks garbage or pushes what is
    not offered, :class:`StoreError` when it leaves early, lacks or damages
    a chunk, or a store fails; the client is sent an ABORT first, where it
    still listens, and no index or archive is installed.
    """
    if wstore is None and not index_path and not archive_path:
        raise ParameterError("push: nowhere to write (give a chunk store, an index or an archive)")
    writable = require_writable(wstore) if wstore is not None else None
    _make_blocking(stdin)
    _make_blocking(stdout)
    with contextlib.ExitStack() as stack:
        index = _Upload(index_path, sync) if index_path else None
        if index is not None:
            stack.callback(index.discard)
        archive = _Upload(archive_path, sync) if archive_path else None
        if archive is not None:
            stack.callback(archive.discard)
        server = _Receiver(stdin, stdout, writable, rstores, index, archive)
        try:
            server.run()
        except BrokenPipeError:
            raise StoreError("the client went away before the push was complete") from None
        except FormatError as exc:
            server.abort(errno.EBADMSG, f"protocol error: {exc}")
            raise
        except StoreError as exc:
            server.abort(errno.EIO, str(exc))
            raise
    log.debug("push session ended (%s): %s", server.stats.ended_by, server.stats)
    return server.stats
