"""The one exception tree of pycasync.

Everything pycasync raises on purpose derives from :class:`CasyncError`, so a
caller (and the CLI, which maps classes to exit codes) can catch the whole
family at once and branch on the precise kind when it matters: malformed bytes
(:class:`FormatError`), bad arguments (:class:`ParameterError`), a chunk that a
store does not hold (:class:`ChunkMissing`) or holds damaged
(:class:`ChunkInvalid`), a store that cannot be reached or used
(:class:`StoreError`), an output another process is writing
(:class:`OutputBusy`), an input file that changed while it was read
(:class:`InputChanged`), a seed that cannot be used (:class:`SeedError`),
and an optional extra that is not installed
(:class:`MissingDependency`).
"""

from __future__ import annotations

__all__ = [
    "CasyncError",
    "FormatError",
    "ParameterError",
    "ChunkMissing",
    "ChunkInvalid",
    "StoreError",
    "MissingDependency",
    "IndexNotFound",
    "OutputBusy",
    "InputChanged",
    "SeedError",
]


class CasyncError(Exception):
    """Root of every error pycasync raises deliberately."""


class FormatError(CasyncError, ValueError):
    """Bytes that do not follow casync's formats (index, chunk, archive)."""


class ParameterError(CasyncError, ValueError):
    """An argument or setting that cannot be used (bad chunk sizes, digest, flag)."""


class StoreError(CasyncError):
    """A store that cannot be reached, opened or written, or lacks a capability."""


class IndexNotFound(StoreError):
    """An index store does not hold the named index (a local file, an HTTP 404, a missing key)."""


class ChunkMissing(CasyncError):
    """The store does not hold the chunk.

    ``chunk_id`` is the 32-byte id, ``store`` the store (printable), ``detail``
    an optional hint for the message.
    """

    def __init__(self, chunk_id: bytes, store: object = None, detail: str = "") -> None:
        self.chunk_id = chunk_id
        self.store = store
        where = f" in store {store}" if store is not None else ""
        why = f" ({detail})" if detail else ""
        super().__init__(f"chunk {chunk_id.hex()} missing{where}{why}")


class ChunkInvalid(CasyncError):
    """A chunk's content does not match its id, size or encoding.

    ``actual`` is the id the data hashes to (``None`` when it could not even be
    decoded), ``cause`` a short human reason.
    """

    def __init__(
        self,
        chunk_id: bytes,
        actual: bytes | None = None,
        cause: str = "",
        store: object = None,
    ) -> None:
        self.chunk_id = chunk_id
        self.actual = actual
        self.cause = cause
        self.store = store
        where = f" in store {store}" if store is not None else ""
        reason = cause or (f"content hashes to {actual.hex()}" if actual else "invalid")
        super().__init__(f"chunk {chunk_id.hex()}{where} is invalid: {reason}")


class OutputBusy(CasyncError):
    """Another process holds the lock on an output (``extract`` writes each output alone).

    ``path`` is the output, ``pid`` the holder's process id when it could be
    found (``None`` otherwise).
    """

    def __init__(self, path: str, pid: int | None = None) -> None:
        self.path = path
        self.pid = pid
        who = f"another process (pid {pid})" if pid is not None else "another process"
        super().__init__(f"output {path} is being written by {who}")


class InputChanged(CasyncError):
    """An input file changed (shrank, grew or was rewritten) while it was being read.

    Raised by ``make``, ``chop`` and ``tar`` when the file's size or
    modification time differs after reading from what it was before, or a
    read comes back short: what was read is not a consistent picture of the
    file, so nothing (no index, no archive) is written from it. ``path`` is
    the file, ``detail`` what was seen (for a caller; not in the message,
    which is always ``"PATH changed while it was read"``).
    """

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"{path} changed while it was read")


class SeedError(CasyncError):
    """A seed of ``extract`` that cannot be used: its index or data missing, unreadable or not matching.

    ``seed`` names the seed (its index, or its data for a seed without one).
    """

    def __init__(self, seed: str, reason: str) -> None:
        self.seed = seed
        super().__init__(f"seed {seed}: {reason}")


class MissingDependency(CasyncError):
    """A Python package this operation needs is not installed.

    ``extra`` is the pycasync extra that installs ``module`` (the message
    says ``pip install 'pycasync[extra]'``); None for a package that is no
    extra's (the message says ``pip install module``). ``purpose`` opens the
    message (default ``"this"``); ``message``, when given, is the whole
    message instead (for a need several packages can meet, such as zstd).
    """

    def __init__(
        self, extra: str | None, module: str, *, purpose: str = "this", message: str | None = None
    ) -> None:
        self.extra = extra
        self.module = module
        install = f"pip install 'pycasync[{extra}]'" if extra else f"pip install {module}"
        super().__init__(message or f"{purpose} needs the Python package {module!r}: {install}")
