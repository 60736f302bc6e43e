"""Seeds: chunk sources on the local machine that ``extract`` copies from before it fetches.

A seed is a data file (or block device) and the chunks it holds: an
:class:`IndexSeed` has an index (``.caibx``) saying so, checked against the
data before use as desync does; a :class:`RawSeed` has none and is chunked on
the fly with the target index's chunk sizes and digest (in parallel, with
make's chunker), as casync's seeds are. :class:`SeedSet` maps chunk ids to
seed positions and :meth:`SeedSet.plan` cuts the target index into jobs: runs
of consecutive chunks that are also consecutive in one seed (copied, or cloned
where the filesystem can, as one range; the longest run wins, the first seed
on a tie), and single chunks left to the output itself or the store.
:class:`SelfSeed` remembers where a chunk was already written in the output,
so a repeat is copied from there once that write has finished (desync's
self-seed). :func:`prepare` opens and validates seeds and applies the
``fail``/``skip``/``regenerate`` policy for invalid ones; :func:`parse_seed`
reads desync's ``INDEX[:DATA[:OPTIONS]]`` syntax (and a bare path of data
without an index); :func:`seed_dir` lists the seeds of a ``--seed-dir``.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from casync_format.chunker import ChunkerParams
from casync_format.errors import FormatError, InputChanged, ParameterError, SeedError
from casync_format.index import HEADER, Index, IndexChunk, IndexHeader

from ..pipeline import ZeroChunk
from ..plumbing.fileio import pread
from ..plumbing.pool import ThreadMap, default_workers
from ..plumbing.progress import Progress, phase
from ..stores.indexio import open_index
from .make import iter_chunk_ids

_log = logging.getLogger(__name__)
ATTEMPT = "Attempt 1: "  # desync's progress labels begin so (RAUC parses its lines)

__all__ = [
    "Seed", "IndexSeed", "RawSeed", "SeedSet", "SelfSeed", "Job", "INVALID_SEED_ACTIONS",
    "split_seed_spec", "parse_seed", "seed_dir", "prepare",
]  # fmt: skip

INDEX_SUFFIX = ".caibx"
INVALID_SEED_ACTIONS = ("fail", "skip", "regenerate")
_RUN_CHUNKS = 128  # chunks in one run at most, so jobs stay balanced between workers
_RUN_BYTES = 16 << 20  # bytes in one run at most
_CANDIDATES = 16  # positions of one chunk id remembered over all seeds
_SELF_LIMIT = 1 << 18  # chunk ids the self-seed tracks (~25 MB); later ones go to seeds/store


class Seed:
    """A data file and its chunks (``start, size, id`` in order): the base of both kinds."""

    def __init__(self, data_path: str, name: str) -> None:
        self.data_path = data_path
        self.name = name  # how messages name it
        self.chunks: list[IndexChunk] = []
        self.fresh = False  # chunks were computed from the data just now: no validation needed
        self.problem = ""  # why the seed cannot be used as is ("" : none known)
        self.blob_size = 0  # bytes its chunks cover
        self.fd = -1

    def __iter__(self) -> Iterator[IndexChunk]:
        return iter(self.chunks)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def open(self) -> None:
        """Open the data for reading; SeedError naming the seed when it cannot be."""
        try:
            self.fd = os.open(self.data_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            if stat.S_ISDIR(os.fstat(self.fd).st_mode):
                raise IsADirectoryError(21, "Is a directory")
        except OSError as exc:
            self.close()
            raise SeedError(self.name, f"cannot read its data {self.data_path}: {exc.strerror}") from None

    def data_size(self) -> int:
        """Bytes in the data (a device's size too)."""
        return os.lseek(self.fd, 0, os.SEEK_END)

    def load(self, index: Index, concurrency: int | None = None, progress: Progress | None = None,
             label: str = "Chunking seed") -> None:
        """Read or compute the chunk list, for a target ``index`` (chunking shown as ``label``)."""
        raise NotImplementedError

    def regenerate(self, index: Index, concurrency: int | None = None, progress: Progress | None = None,
                   label: str = "Chunking seed") -> None:
        """Chunk the data afresh with the target's chunk sizes and digest (nothing on disk changes)."""
        params = ChunkerParams(index.header.chunk_size_min, index.header.chunk_size_avg,
                               index.header.chunk_size_max)
        chunks: list[IndexChunk] = []
        try:
            with phase(progress, label, self.data_size() if self.fd >= 0 else 0):
                for start, size, cid in iter_chunk_ids(self.data_path, params, index.digest, concurrency):
                    chunks.append(IndexChunk(start, size, cid))
                    if progress is not None:
                        progress.add(size)
        except InputChanged:
            # Every byte taken from a seed is verified when it is used, so the chunks
            # seen until the data changed are still good hints; the rest comes from stores.
            _log.warning("seed %s changed while it was chunked: using the %d chunks before", self.name,
                         len(chunks))
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise SeedError(self.name, f"cannot chunk its data {self.data_path}: {why}") from None
        self.chunks = chunks
        self.fresh, self.problem = True, ""
        self.blob_size = self.chunks[-1].start + self.chunks[-1].size if self.chunks else 0

    def close(self) -> None:
        """Close the data."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class IndexSeed(Seed):
    """A seed with an index: ``data_path`` defaults to ``index_path`` without ``.caibx``."""

    def __init__(
        self, index_path: str | os.PathLike[str], data_path: str | os.PathLike[str] | None = None
    ) -> None:
        index_path = os.fspath(index_path)
        data_path = None if data_path is None else os.fspath(data_path)
        if data_path is None:
            if not index_path.endswith(INDEX_SUFFIX):
                raise SeedError(index_path, f"no data path given and the name does not end in {INDEX_SUFFIX}")
            data_path = index_path[: -len(INDEX_SUFFIX)]
        super().__init__(data_path, index_path)
        self.index_path = index_path

    def load(self, index: Index, concurrency: int | None = None, progress: Progress | None = None,
             label: str = "Chunking seed") -> None:
        try:
            with open_index(self.index_path) as seed_index:
                chunks = list(seed_index)
                digest, blob_size = seed_index.digest, seed_index.blob_size
        except FormatError as exc:
            raise SeedError(self.name, str(exc).removeprefix(f"{self.index_path}: ")) from None
        except OSError as exc:
            raise SeedError(self.name, f"cannot read the index: {exc.strerror or exc}") from None
        self.chunks = chunks
        self.blob_size = blob_size
        if digest.name != index.digest.name:
            self.problem = f"its index uses {digest.name}, the target {index.digest.name}"


class RawSeed(Seed):
    """A file or block device without an index, chunked like the target when loaded."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        super().__init__(path, path)

    def load(self, index: Index, concurrency: int | None = None, progress: Progress | None = None,
             label: str = "Chunking seed") -> None:
        self.regenerate(index, concurrency, progress, label)


def split_seed_spec(text: str) -> tuple[str | None, str, str]:
    """``(index, data, options)`` of desync's ``INDEX[:DATA[:OPTIONS]]``; index None: data alone.

    A name ending in ``.caibx`` is an index whose data is the name without it;
    otherwise the first colon separates index and data and the second the
    options (reserved by desync, ignored). Without a colon it is data alone.
    """
    if text.endswith(INDEX_SUFFIX):
        return text, text[: -len(INDEX_SUFFIX)], ""
    if ":" not in text:
        return None, text, ""
    index, data, *rest = text.split(":", 2)
    if not index or not data:
        raise ParameterError(f"malformed seed {text!r}: use INDEX[:DATA[:OPTIONS]] or a data path")
    return index, data, rest[0] if rest else ""


def _is_index_file(path: str) -> bool:
    """Whether ``path`` starts with a casync index header (False when unreadable)."""
    try:
        with open(path, "rb") as f:
            IndexHeader.unpack(f.read(HEADER.size))
    except (OSError, FormatError):
        return False
    return True


def parse_seed(text: str) -> Seed:
    """The seed ``--seed TEXT`` names (see :func:`split_seed_spec`); an existing path is data alone."""
    if not text:
        raise ParameterError("empty seed name")
    if not text.endswith(INDEX_SUFFIX) and os.path.exists(text):
        index_path: str | None = None  # e.g. /dev/disk/by-path/pci-0000:00:1f.2: a colon is no separator
        data = text
    else:
        index_path, data, _options = split_seed_spec(text)
    if index_path is not None:
        return IndexSeed(index_path, data)
    if not os.path.exists(data):
        raise SeedError(data, "no such file")
    if _is_index_file(data):
        raise SeedError(data, f"is an index, not data: name it *{INDEX_SUFFIX} or give INDEX:DATA")
    return RawSeed(data)


def seed_dir(directory: str, exclude: str | None = None) -> list[Seed]:
    """Every ``*.caibx`` under ``directory`` whose data file is next to it (as desync's --seed-dir).

    ``exclude`` (the index being extracted) is left out; an index without its
    data file is skipped, like desync does.
    """
    if not os.path.isdir(directory):
        raise SeedError(directory, "not a directory")
    skip = os.path.realpath(exclude) if exclude else None
    found: list[Seed] = []
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if not name.endswith(INDEX_SUFFIX) or os.path.realpath(path) == skip:
                continue
            if os.path.exists(path[: -len(INDEX_SUFFIX)]):
                found.append(IndexSeed(path))
    return found


@dataclass
class Job:
    """A piece of the target: chunks to copy from ``seed`` at ``src``, or one chunk from elsewhere."""

    items: list[IndexChunk]
    seed: Seed | None = None
    src: int = 0  # offset of items[0] in the seed's data
    repeat: bool = False  # a single chunk met before: the self-seed may have it
    owns: list[bytes] = field(default_factory=list)  # first occurrences of ids in this job

    @property
    def length(self) -> int:
        """Bytes the job covers."""
        return self.items[-1].start + self.items[-1].size - self.items[0].start


class SeedSet:
    """Chunk id -> positions in the seeds, and the plan of the target built from them."""

    def __init__(self, seeds: Sequence[Seed]) -> None:
        self.seeds = list(seeds)
        self._pos: dict[bytes, list[tuple[int, int]]] = {}
        for n, seed in enumerate(self.seeds):
            for p, chunk in enumerate(seed.chunks):
                where = self._pos.setdefault(chunk.id, [])
                if len(where) < _CANDIDATES:
                    where.append((n, p))

    def __contains__(self, chunk_id: bytes) -> bool:
        return chunk_id in self._pos

    def __enter__(self) -> SeedSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every seed's data."""
        for seed in self.seeds:
            seed.close()

    def plan(self, items: Iterable[IndexChunk], zero: ZeroChunk) -> Iterator[Job]:
        """Cut ``items`` into jobs, lazily: the longest seed run at each point, else one chunk."""
        window: deque[IndexChunk] = deque()
        source = iter(items)
        for item in source:
            window.append(item)
            if len(window) >= _RUN_CHUNKS:
                break
        follow: tuple[int, int] | None = None  # where the last run went on in its seed
        while window:
            first = window[0]
            best: tuple[int, int, int] | None = None  # (seed, position, chunks)
            best_bytes = 0
            if self._pos and not zero.matches(first):
                candidates = self._pos.get(first.id, [])
                if follow is not None and follow in candidates:
                    # A run cut at the cap goes on where it was on a tie, as one uncut run would.
                    candidates = [follow, *candidates]
                for n, p in candidates:
                    chunks = self.seeds[n].chunks
                    k = 1
                    while (k < len(window) and p + k < len(chunks) and chunks[p + k].id == window[k].id
                           and not zero.matches(window[k])
                           and window[k].start + window[k].size - first.start <= _RUN_BYTES):
                        k += 1
                    nbytes = window[k - 1].start + window[k - 1].size - first.start
                    if nbytes > best_bytes:
                        best, best_bytes = (n, p, k), nbytes
            follow = None
            if best is None:
                yield Job([window.popleft()])
            else:
                n, p, k = best
                follow = (n, p + k)
                run = [window.popleft() for _ in range(k)]
                yield Job(run, self.seeds[n], self.seeds[n].chunks[p].start)
            for item in source:
                window.append(item)
                if len(window) >= _RUN_CHUNKS:
                    break

    def validate(
        self, index: Index, concurrency: int | None = None, progress: Progress | None = None
    ) -> dict[Seed, str]:
        """Seeds whose data does not hold what the plan takes from them, with the reason.

        Like desync's plan validation: every run the plan takes from a seed
        that was not just chunked is read and hashed, in parallel; a seed
        the plan does not use is not read (and so not found invalid).
        """
        bad = {seed: seed.problem for seed in self.seeds if seed.problem}
        if bad:
            return bad
        digest = index.digest
        plan = self.plan(index, ZeroChunk(index))
        runs = [job for job in plan if job.seed is not None and not job.seed.fresh]
        if not runs:
            return bad

        def check(job: Job) -> tuple[int, tuple[Seed, str] | None]:
            return job.length, problem(job)

        def problem(job: Job) -> tuple[Seed, str] | None:
            assert job.seed is not None
            try:
                data = memoryview(pread(job.seed.fd, job.length, job.src))
            except OSError as exc:
                return job.seed, f"cannot read its data at offset {job.src}: {exc.strerror or exc}"
            if len(data) < job.length:
                size = job.seed.data_size()
                return job.seed, f"its data has {size} bytes, its index says {job.seed.blob_size}"
            base = job.items[0].start
            for item in job.items:
                if digest(data[item.start - base : item.start - base + item.size]) != item.id:
                    at = job.src + item.start - base
                    return job.seed, f"its data does not match its index at offset {at}"
            return None

        with phase(progress, f"{ATTEMPT}Validating", sum(job.length for job in runs)), ThreadMap(
            check, iter(runs), default_workers(concurrency), ordered=False
        ) as results:
            for length, result in results:
                if result is not None:
                    bad.setdefault(*result)
                if progress is not None:
                    progress.add(length)
        return bad


def prepare(
    seeds: Sequence[Seed],
    index: Index,
    on_invalid: str = "fail",
    concurrency: int | None = None,
    progress: Progress | None = None,
) -> SeedSet:
    """Open, load and validate ``seeds`` for extracting ``index``; the usable ones as a SeedSet.

    ``on_invalid`` says what to do with a seed whose data is missing or does
    not match its index: ``fail`` (SeedError naming it), ``skip`` it, or
    ``regenerate`` its chunk list from the data. An index that cannot be read
    is always an error. The caller closes the set. ``progress`` shows the
    chunking of seeds without an index and the validation, labelled as desync
    labels them (``Attempt 1: Chunking Seed N``, ``Attempt 1: Validating``).
    """
    if on_invalid not in INVALID_SEED_ACTIONS:
        raise ParameterError(f"unknown invalid-seed action {on_invalid!r}")
    live: list[Seed] = []
    try:
        for number, seed in enumerate(seeds, 1):
            label = f"{ATTEMPT}Chunking Seed {number}"
            try:
                seed.open()
            except SeedError:
                if on_invalid != "skip":
                    raise
                continue
            live.append(seed)
            seed.load(index, concurrency, progress, label)
        for _attempt in range(len(live) + 2):
            bad = SeedSet(live).validate(index, concurrency, progress)
            if not bad:
                return SeedSet(live)
            for seed, reason in bad.items():
                if on_invalid == "fail":
                    raise SeedError(seed.name, reason)
                if on_invalid == "skip":
                    live.remove(seed)
                    seed.close()
                else:
                    label = f"{ATTEMPT}Chunking Seed {seeds.index(seed) + 1}"
                    seed.regenerate(index, concurrency, progress, label)
        raise SeedError(", ".join(s.name for s in live), "kept changing while being validated")
    except BaseException:
        for seed in live:
            seed.close()
        raise


class SelfSeed:
    """Where the output already holds a chunk: repeats are copied from there, once written.

    :meth:`mark` runs over the plan in order and flags a single chunk whose
    id was met earlier; the job with the first occurrence records its offset
    (:meth:`written`) and :meth:`release`s its ids when done, successful or
    not; :meth:`wait` blocks a repeat until then. The first occurrence was
    taken by a worker before the repeat, so waiting cannot deadlock;
    :meth:`abort` wakes every waiter when the run fails.
    """

    def __init__(self, limit: int = _SELF_LIMIT) -> None:
        self._cond = threading.Condition()
        self._planned: set[bytes] = set()
        self._settled: dict[bytes, int] = {}  # id -> offset in the output (-1: not written)
        self._limit = limit
        self._aborted = False

    def mark(self, jobs: Iterable[Job], zero: ZeroChunk) -> Iterator[Job]:
        """The jobs, with repeats flagged and first occurrences owned."""
        planned = self._planned
        for job in jobs:
            for item in job.items:
                if zero.matches(item):
                    continue
                if item.id in planned:
                    job.repeat = job.seed is None
                elif len(planned) < self._limit:
                    with self._cond:
                        planned.add(item.id)
                    job.owns.append(item.id)
            yield job

    def written(self, item: IndexChunk) -> None:
        """``item``'s bytes are in the output at its offset (recorded if it is a first occurrence)."""
        with self._cond:
            if item.id not in self._settled:
                self._settled[item.id] = item.start

    def release(self, job: Job) -> None:
        """``job`` is over: repeats of the ids it owns need wait no longer."""
        if job.owns:
            with self._cond:
                for cid in job.owns:
                    self._settled.setdefault(cid, -1)
                self._cond.notify_all()

    def wait(self, chunk_id: bytes) -> int:
        """Offset of ``chunk_id`` in the output once its first write is over; -1: not there."""
        with self._cond:
            while chunk_id not in self._settled and not self._aborted:
                self._cond.wait(1.0)
            return self._settled.get(chunk_id, -1)

    def abort(self) -> None:
        """The run failed: wake every waiter."""
        with self._cond:
            self._aborted = True
            self._cond.notify_all()
