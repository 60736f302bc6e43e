"""What an extract did, chunk by chunk: :class:`ExtractStats` (desync's numbers, ours) and its summary.

Every chunk is counted once, by where its bytes came from: in place, a seed
(the null-chunk seed and the output itself included, as desync counts), the
cache, or a store. The fetched chunks are split by the store that held them
(:class:`SourceStats`, in the order :func:`~..stores.router.sources` lists
them), with their stored (compressed) bytes: what was downloaded. Kept apart
from :mod:`.extract` so that the operation stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..pipeline import Outcome
from ..plumbing.progress import counted, format_bytes, timed
from ..stores.base import Store
from ..stores.local import LocalStore
from ..stores.router import sources

__all__ = ["ExtractStats", "SourceStats"]


@dataclass
class SourceStats:
    """What one store (or the cache) gave an extract: chunks, their bytes, the stored bytes read."""

    location: str
    cache: bool = False
    remote: bool = False  # not a local directory: bytes_read crossed the network
    chunks: int = 0
    bytes: int = 0  # data bytes of the chunks
    bytes_read: int = 0  # stored (compressed) bytes read: what was downloaded from a remote store

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "cache": self.cache, "remote": self.remote, "chunks": self.chunks,
                "bytes": self.bytes, "bytes-read": self.bytes_read}


@dataclass
class ExtractStats:
    """What ``extract`` did with each chunk of the index (desync's numbers, plus ours).

    Every chunk is counted once: in place, from seeds (the null-chunk seed
    and the output itself included, as desync counts them), from the cache,
    or from a store; ``sources`` splits the last two by store.
    """

    chunks_total: int = 0
    chunks_from_seeds: int = 0  # from seeds, the self-seed or known zero (as desync counts its null seed)
    chunks_from_store: int = 0  # fetched from a store (not the cache) and verified
    chunks_in_place: int = 0  # the output held the right bytes already
    chunks_from_cache: int = 0  # read from the cache (-c) and verified
    chunks_zero: int = 0  # all-zero chunks known by id: never fetched (part of chunks_from_seeds)
    chunks_from_self_seed: int = 0  # copied from the output itself (part of chunks_from_seeds)
    bytes_total: int = 0  # blob size
    bytes_written: int = 0  # bytes actually written (holes and chunks in place are not)
    bytes_in_place: int = 0  # bytes of the chunks in place
    bytes_from_seeds: int = 0  # bytes of the chunks from seeds (copied, cloned, or known zero)
    bytes_zero: int = 0  # bytes of the all-zero chunks (part of bytes_from_seeds)
    bytes_from_self_seed: int = 0  # bytes copied from the output itself (part of bytes_from_seeds)
    bytes_copied_from_seeds: int = 0  # seed and self-seed bytes copied into the output
    bytes_cloned_from_seeds: int = 0  # seed and self-seed bytes cloned (blocks shared, nothing copied)
    bytes_from_cache: int = 0  # bytes of the chunks from the cache
    bytes_from_store: int = 0  # bytes of the chunks from the stores
    bytes_read_from_store: int = 0  # stored (compressed) bytes read from the stores: downloaded
    blocksize: int = 0  # the output filesystem's block size (what clones align to)
    seeds: int = 0  # seeds used, plus the null-chunk seed (as desync counts)
    seconds: float = 0.0  # how long the extract took
    sources: list[SourceStats] = field(default_factory=list)  # the cache, then each store, in order
    _by_store: dict[int, SourceStats] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The stats for --print-stats: desync's keys in desync's order, then ours."""
        return {
            "chunks-from-seeds": self.chunks_from_seeds,
            "chunks-from-store": self.chunks_from_store,
            "chunks-in-place": self.chunks_in_place,
            "bytes-copied-from-seeds": self.bytes_copied_from_seeds,
            "bytes-cloned-from-seeds": self.bytes_cloned_from_seeds,
            "blocksize": self.blocksize,
            "bytes-total": self.bytes_total,
            "chunks-total": self.chunks_total,
            "seeds": self.seeds,
            "chunks-from-cache": self.chunks_from_cache,
            "chunks-zero": self.chunks_zero,
            "chunks-from-self-seed": self.chunks_from_self_seed,
            "bytes-in-place": self.bytes_in_place,
            "bytes-from-seeds": self.bytes_from_seeds,
            "bytes-zero": self.bytes_zero,
            "bytes-from-self-seed": self.bytes_from_self_seed,
            "bytes-from-cache": self.bytes_from_cache,
            "bytes-from-store": self.bytes_from_store,
            "bytes-read-from-store": self.bytes_read_from_store,
            "bytes-written": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "stores": [source.to_dict() for source in self.sources],
        }

    def add_sources(self, store: Store) -> None:
        """Count each source of ``store`` (:func:`~..stores.router.sources`) separately."""
        for role, member in sources(store):
            self._source(member, role == "cache")

    def _source(self, store: Store | None, cache: bool = False) -> SourceStats:
        found = self._by_store.get(id(store))
        if found is None:
            remote = store is not None and not isinstance(store, LocalStore)
            found = SourceStats(str(store) if store is not None else "store", cache, remote)
            self._by_store[id(store)] = found
            self.sources.append(found)
        return found

    def count(
        self, outcome: Outcome, size: int, written: int, source: Store | None = None, read: int = 0
    ) -> None:
        """Add one chunk of ``size`` bytes by its outcome; ``written`` of them written to the output,
        ``source`` the store it was fetched from, ``read`` the stored bytes read there."""
        self.chunks_total += 1
        self.bytes_written += written
        if outcome is Outcome.IN_PLACE:
            self.chunks_in_place += 1
            self.bytes_in_place += size
        elif outcome is Outcome.FETCHED:
            tally = self._source(source)
            tally.chunks += 1
            tally.bytes += size
            tally.bytes_read += read
            if tally.cache:
                self.chunks_from_cache += 1
                self.bytes_from_cache += size
            else:
                self.chunks_from_store += 1
                self.bytes_from_store += size
                self.bytes_read_from_store += read
        else:
            self.chunks_from_seeds += 1
            self.bytes_from_seeds += size
            if outcome is Outcome.ZERO:
                self.chunks_zero += 1
                self.bytes_zero += size
            elif outcome is Outcome.SELF_SEED:
                self.chunks_from_self_seed += 1
                self.bytes_from_self_seed += size

    def summary(self) -> str:
        """One line for people: size, time, throughput, and where the chunks came from."""
        seeded = self.chunks_from_seeds - self.chunks_zero - self.chunks_from_self_seed
        seeded_bytes = self.bytes_from_seeds - self.bytes_zero - self.bytes_from_self_seed
        parts = [
            counted(self.chunks_in_place, "in place", self.bytes_in_place),
            counted(seeded, "from seeds", seeded_bytes),
            counted(self.chunks_from_self_seed, "repeats copied", self.bytes_from_self_seed),
            counted(self.chunks_zero, "all-zero", self.bytes_zero),
        ]
        for source in self.sources:
            where = "from the cache" if source.cache else f"from {source.location}"
            downloaded = source.remote and source.bytes_read
            extra = f"{format_bytes(source.bytes_read)} downloaded" if downloaded else ""
            parts.append(counted(source.chunks, where, source.bytes, extra))
        done = ", ".join(part for part in parts if part)
        head = f"{timed(self.bytes_total, self.seconds)}: {self.chunks_total} chunks"
        return head + (f": {done}" if done else "")
