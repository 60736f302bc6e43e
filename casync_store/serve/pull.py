"""The server side of casync's ssh remoting: ``pull`` over stdin and stdout.

A casync or desync client runs ``ssh HOST casync pull - ARCHIVE INDEX STORE
[STORE...]`` and speaks casync's protocol (:mod:`casync_format.protocol`)
over the pipe. :func:`serve` answers it, read-only and streaming: it sends
HELLO, sends the index and/or archive file when the client asks for them
(so ``casync extract host:/path/x.caibx`` and ``casync list
host:/path/x.catar`` work), then answers every chunk id of every REQUEST,
in order, with a CHUNK or a MISSING, trying the stores in turn. Only one
chunk is in memory at a time. Chunks are sent zstd-compressed, the one form
every client reads (desync's client assumes zstd whatever the flags say):
blobs a store holds xz- or gzip-compressed are re-encoded. A client may end
the session with GOODBYE or by closing the pipe; both are a normal end.
Needs nothing beyond the standard library and a zstd binding.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import select
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from casync_format import compress
from casync_format import protocol as proto
from casync_format.constants import CA_CHUNK_SIZE_LIMIT_MAX
from casync_format.errors import ChunkInvalid, ChunkMissing, FormatError, ParameterError, StoreError

from ..stores.base import Store

__all__ = ["PullStats", "serve", "FILE_BLOCK"]

log = logging.getLogger(__name__)

#: Bytes of index or archive per INDEX/ARCHIVE frame (casync's BUFFER_SIZE).
FILE_BLOCK = 64 * 1024


@dataclass
class PullStats:
    """What one :func:`serve` session did."""

    client_flags: int = 0  #: the client's HELLO feature flags
    requests: int = 0  #: REQUEST frames received
    chunks_requested: int = 0  #: chunk ids in them
    chunks_sent: int = 0
    chunks_missing: int = 0
    chunks_reencoded: int = 0  #: xz/gzip blobs sent as zstd
    bytes_sent: int = 0  #: every byte written to the client
    index_bytes: int = 0
    archive_bytes: int = 0
    ended_by: str = ""  #: "goodbye", "eof" (client closed the pipe) or "broken-pipe"


class _Throttle:
    """Keeps the average sending rate at or below ``rate`` bytes per second."""

    def __init__(self, rate: int | None) -> None:
        if rate is not None and rate <= 0:
            raise ParameterError(f"rate limit must be a positive number of bytes per second, not {rate}")
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def delay(self, n: int) -> float:
        """Account ``n`` bytes about to be sent; returns the seconds to wait first."""
        if self.rate is None:
            return 0.0
        due = self.start + self.sent / self.rate
        self.sent += n
        return max(0.0, due - time.monotonic())


def _make_blocking(stream: BinaryIO) -> None:
    """Clear O_NONBLOCK on a stream's descriptor (casync's client passes non-blocking pipes)."""
    # Not a real descriptor (a test's BytesIO): nothing to do.
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        os.set_blocking(stream.fileno(), True)


class _Server:
    """One pull session between a client and some stores."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, stores: Sequence[Store], rate: int | None) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stores = list(stores)
        self.throttle = _Throttle(rate)
        self.stats = PullStats()

    # ------------------------------------------------------------------ I/O

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes of input (b"" at its end), waiting on a non-blocking one."""
        while True:
            part = self.stdin.read(n)
            if part is not None:
                return part
            select.select([self.stdin], [], [])

    def send(self, msg: proto.Message) -> None:
        frame = proto.encode(msg)
        wait = self.throttle.delay(len(frame))
        if wait > 0:
            self.stdout.flush()
            time.sleep(wait)
        self.stdout.write(frame)
        self.stats.bytes_sent += len(frame)

    def abort(self, error: int, reason: str) -> None:
        """Tell the client why we give up (best effort: it may be gone)."""
        with contextlib.suppress(OSError):
            self.send(proto.Abort(error, reason))
            self.stdout.flush()

    # ------------------------------------------------------------------ session

    def handshake(self, local: int) -> bool:
        """Exchange HELLOs; False when the client left before saying hello."""
        self.send(proto.Hello(local))
        self.stdout.flush()
        msg = proto.read_message(self.read)
        if msg is None:
            self.stats.ended_by = "eof"
            return False
        if not isinstance(msg, proto.Hello):
            raise FormatError(f"client sent {proto.type_name(msg.TYPE)} before hello")
        self.stats.client_flags = msg.flags
        try:
            proto.check_hello(local, msg.flags)
        except FormatError as exc:
            raise FormatError(f"client hello ({proto.flag_names(msg.flags)}): {exc}") from None
        return True

    def send_file(self, path: str, what: str, data_cls: type, eof_cls: type) -> int:
        """Stream a file as INDEX/ARCHIVE frames and their EOF; returns its size."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, errors mapped first
        except OSError as exc:
            raise StoreError(f"cannot open {what} {path}: {exc.strerror}") from None
        total = 0
        with f:
            while True:
                try:
                    block = f.read(FILE_BLOCK)
                except OSError as exc:
                    raise StoreError(f"cannot read {what} {path}: {exc.strerror}") from None
                if not block:
                    break
                self.send(data_cls(block))
                total += len(block)
        self.send(eof_cls())
        return total

    def loop(self) -> None:
        """Answer requests until GOODBYE or the end of input."""
        while True:
            self.stdout.flush()
            msg = proto.read_message(self.read)
            if msg is None:
                self.stats.ended_by = "eof"
                return
            if isinstance(msg, proto.Request):
                self.answer(msg)
            elif isinstance(msg, proto.Goodbye):
                self.stats.ended_by = "goodbye"
                return
            elif isinstance(msg, proto.Abort):
                raise StoreError(f"client aborted the session: {msg.reason or 'no reason given'}")
            else:
                raise FormatError(f"unexpected {proto.type_name(msg.TYPE)} message from a pulling client")

    def answer(self, request: proto.Request) -> None:
        """One CHUNK or MISSING per id, in the order asked."""
        self.stats.requests += 1
        for chunk_id in request.ids:
            self.stats.chunks_requested += 1
            reply = self.lookup(chunk_id)
            if isinstance(reply, proto.Missing):
                self.stats.chunks_missing += 1
            else:
                self.stats.chunks_sent += 1
            self.send(reply)

    # ------------------------------------------------------------------ chunks

    def lookup(self, chunk_id: bytes) -> proto.Chunk | proto.Missing:
        """The first usable copy of a chunk in the stores, as it goes on the wire."""
        for store in self.stores:
            try:
                blob = store.get_raw(chunk_id)
            except ChunkMissing:
                continue
            except ChunkInvalid as exc:  # no chunk file under the name (a symlink, a FIFO, ...)
                log.warning("%s, not sent", exc)
                continue
            wire = self.wire_form(chunk_id, blob, store)
            if wire is not None:
                return wire
        return proto.Missing(chunk_id)

    def wire_form(self, chunk_id: bytes, blob: bytes, store: Store) -> proto.Chunk | None:
        """A zstd CHUNK for a stored blob; None (logged) when it cannot be sent."""
        try:
            kind = compress.detect(blob)
            if kind != "zstd":
                blob = compress.compress(compress.decompress(blob, CA_CHUNK_SIZE_LIMIT_MAX), "zstd")
                self.stats.chunks_reencoded += 1
        except FormatError as exc:
            log.warning("chunk %s in store %s is damaged, not sent: %s", chunk_id.hex(), store, exc)
            return None
        if len(blob) > proto.MAX_CHUNK_DATA:
            log.warning(
                "chunk %s in store %s: %d compressed bytes do not fit in a protocol message, not sent",
                chunk_id.hex(), store, len(blob),
            )  # fmt: skip
            return None
        return proto.Chunk(chunk_id, blob, proto.CHUNK_COMPRESSED)


def _services(stores: Sequence[Store], index_path: str | None, archive_path: str | None) -> int:
    flags = proto.READABLE_STORE if stores else 0
    flags |= proto.READABLE_INDEX if index_path else 0
    flags |= proto.READABLE_ARCHIVE if archive_path else 0
    return flags


def _run(server: _Server, local: int, index_path: str | None, archive_path: str | None) -> None:
    if not server.handshake(local):
        return
    wants = server.stats.client_flags
    if wants & proto.PULL_INDEX and index_path:
        server.stats.index_bytes = server.send_file(index_path, "index", proto.IndexData, proto.IndexEOF)
    if wants & proto.PULL_ARCHIVE and archive_path:
        server.stats.archive_bytes = server.send_file(
            archive_path, "archive", proto.ArchiveData, proto.ArchiveEOF
        )
    server.loop()


def serve(
    stdin: BinaryIO,
    stdout: BinaryIO,
    stores: Sequence[Store],
    index_path: str | None = None,
    archive_path: str | None = None,
    rate_limit_bps: int | None = None,
) -> PullStats:
    """Answer one casync-protocol client on ``stdin``/``stdout`` until it leaves.

    ``stores`` are tried in order for each chunk; ``index_path`` and
    ``archive_path`` are the files a client may pull (``PULL_INDEX``,
    ``PULL_ARCHIVE``). ``rate_limit_bps`` caps the average sending rate.
    A client that closes the pipe, even mid-session, ends the session
    normally (as with casync). Raises :class:`FormatError` when the client
    speaks garbage or wants what is not offered, :class:`StoreError` when a
    store or file fails (or the client aborts); the client is sent an ABORT
    saying why first, where it still listens.
    """
    local = _services(stores, index_path, archive_path)
    if not local:
        raise ParameterError("pull: nothing to serve (give a chunk store, an index or an archive)")
    _make_blocking(stdin)
    _make_blocking(stdout)
    server = _Server(stdin, stdout, stores, rate_limit_bps)
    try:
        _run(server, local, index_path, archive_path)
        server.stdout.flush()
    except BrokenPipeError:
        server.stats.ended_by = "broken-pipe"  # the client went away: its choice
    except FormatError as exc:
        server.abort(errno.EBADMSG, f"protocol error: {exc}")
        raise
    except StoreError as exc:
        server.abort(errno.EIO, str(exc))
        raise
    log.debug("pull session ended (%s): %s", server.stats.ended_by, server.stats)
    return server.stats
