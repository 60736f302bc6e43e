"""The local directory store: casync's layout ``<dir>/xxxx/<id>.cacnk``.

Chunks are filed under the first four hex digits of their id. Writes go to a
temporary file in the chunk's directory, are fsynced and then renamed, so a
chunk is visible under its final name only when it is complete, and any
number of processes may write the same store at once. Reads of a store used as
a cache refresh the chunk's mtime (:meth:`LocalStore.touch`), so age-based
cache cleaning keeps what is in use.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator

from casync_format.errors import ChunkMissing, StoreError

from ._atomic import TEMP_PREFIX, write_file_atomic
from .store import PruneStore

__all__ = ["LocalStore", "CHUNK_SUFFIX"]

CHUNK_SUFFIX = ".cacnk"
STALE_TEMP_AGE = 3600.0  # seconds after which an unfinished chunk write is abandoned
_NAME = re.compile(r"^([0-9a-f]{64})\.cacnk$")
_PREFIX = re.compile(r"^[0-9a-f]{4}$")


class LocalStore(PruneStore):
    """A chunk store in a local directory (created on first write)."""

    def __init__(self, path: str, verify: bool = True, sync: bool = True, compression: str = "zstd") -> None:
        self.path = path
        self.verify = verify
        self.sync = sync
        self.compression = compression
        if os.path.exists(path) and not os.path.isdir(path):
            raise StoreError(f"store {path} is not a directory")

    def __str__(self) -> str:
        return self.path

    def chunk_path(self, chunk_id: bytes) -> str:
        """Where the chunk's file lives."""
        name = chunk_id.hex()
        return os.path.join(self.path, name[:4], name + CHUNK_SUFFIX)

    def get_raw(self, chunk_id: bytes) -> bytes:
        try:
            with open(self.chunk_path(chunk_id), "rb", buffering=0) as f:
                return f.readall()
        except FileNotFoundError:
            # A miss in a directory that is not there is most likely a typo: say so.
            detail = "" if os.path.isdir(self.path) else "no such directory"
            raise ChunkMissing(chunk_id, self, detail) from None
        except OSError as exc:
            raise StoreError(f"store {self}: cannot read chunk {chunk_id.hex()}: {exc.strerror}") from None

    def has_chunk(self, chunk_id: bytes) -> bool:
        return os.path.exists(self.chunk_path(chunk_id))

    def check(self) -> None:
        if not os.path.isdir(self.path):
            raise StoreError(f"store {self} does not exist")

    def touch(self, chunk_id: bytes) -> None:
        """Set the chunk's mtime to now (a cache hit keeps it fresh)."""
        with contextlib.suppress(OSError):  # a read-only cache still serves reads
            os.utime(self.chunk_path(chunk_id))

    def put_raw(self, chunk_id: bytes, blob: bytes) -> None:
        path = self.chunk_path(chunk_id)
        try:
            try:
                # No directory fsync: a lost rename loses the chunk, never shows garbage.
                write_file_atomic(path, blob, sync=self.sync, sync_dir=False)
            except FileNotFoundError:  # the first chunk of its prefix directory
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_file_atomic(path, blob, sync=self.sync, sync_dir=False)
        except OSError as exc:
            raise StoreError(f"store {self}: cannot write chunk {chunk_id.hex()}: {exc.strerror}") from None

    def iter_chunk_ids(self) -> Iterator[bytes]:
        try:
            top = sorted(e.name for e in os.scandir(self.path) if _PREFIX.match(e.name) and e.is_dir())
        except FileNotFoundError:
            raise StoreError(f"store {self} does not exist") from None
        except OSError as exc:
            raise StoreError(f"store {self}: cannot list: {exc.strerror}") from None
        for prefix in top:
            # One sub-directory at a time: at most ~1/65536 of the store in memory.
            try:
                names = sorted(e.name for e in os.scandir(os.path.join(self.path, prefix)))
            except FileNotFoundError:  # removed since the top level was listed
                continue
            except OSError as exc:
                raise StoreError(f"store {self}: cannot list {prefix}: {exc.strerror}") from None
            for name in names:
                m = _NAME.match(name)
                if m and m.group(1).startswith(prefix):
                    yield bytes.fromhex(m.group(1))

    def prune(self, keep: set[bytes] | frozenset[bytes]) -> int:
        """Remove unreferenced chunks, and temp files that crashed writers left behind."""
        count = super().prune(keep)
        self.remove_stale_temps()
        return count

    def remove_stale_temps(self, max_age: float = STALE_TEMP_AGE) -> int:
        """Delete our temp files older than ``max_age`` seconds; returns how many.

        A writer killed mid-chunk (power cut, SIGKILL, an input file that
        shrank under its mmap) leaves ``.pycasync-tmp-*`` files that no chunk
        listing shows; anything that old is no write still in progress.
        """
        removed = 0
        cutoff = time.time() - max_age
        for directory in self._prefix_dirs():
            with contextlib.suppress(OSError):
                for entry in os.scandir(directory):
                    if entry.name.startswith(TEMP_PREFIX) and entry.stat().st_mtime < cutoff:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.path)
                            removed += 1
        return removed

    def _prefix_dirs(self) -> list[str]:
        try:
            names = [e.name for e in os.scandir(self.path) if _PREFIX.match(e.name) and e.is_dir()]
        except OSError:
            return []
        return [os.path.join(self.path, name) for name in sorted(names)]

    def remove_chunk(self, chunk_id: bytes) -> None:
        try:
            os.unlink(self.chunk_path(chunk_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StoreError(f"store {self}: cannot remove chunk {chunk_id.hex()}: {exc.strerror}") from None
