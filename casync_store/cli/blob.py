"""Blob commands: make, extract, list-chunks, info, chunk and chop.

Each turns a file (a blob) into chunks and an index, an index back into a
blob, or reports on an index or a file's chunks, by calling one function of
:mod:`casync_store.ops`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from casync_format.errors import ParameterError
from casync_store.plumbing.fileio import same_file

from ._common import (
    Command,
    Context,
    add_chunking,
    add_compression,
    add_concurrency,
    add_store_flags,
    add_stores,
    print_json,
    require,
)
from ._parser import Parser, nonnegative_int

__all__ = ["INDEX_IN", "INDEX_OUT", "Make", "Extract", "ListChunks", "Info", "Chunk", "Chop"]

#: the positional INDEX of commands that read one
INDEX_IN = ("index", "index file ('-' for stdin)")
#: the positional INDEX of commands that write one
INDEX_OUT = ("index", "index file to write ('-' for stdout)")


class Make(Command):
    """``make``: chunk a file, write the index, store the chunks."""

    name = "make"
    summary = "Chunk a file and write its index (and the chunks to a store)"
    description = (
        "Splits FILE into content-defined chunks like 'casync make' does and writes a\n"
        "blob index (.caibx) naming them. With -s, the chunks are stored there too,\n"
        "compressed; chunks the store already holds are not written again. The index\n"
        "is byte-for-byte what casync writes for the same settings. INDEX may be '-'\n"
        "(standard output) and FILE may be '-' (standard input). A FILE that changes\n"
        "while it is read fails with 'FILE changed while it was read' and writes no\n"
        "index. When stderr is a terminal, or with -v, a last line there says what\n"
        "was done: size, time, throughput, chunks stored and already in the store."
    )
    examples = (
        "pycasync make -s /srv/store image.caibx image.raw\n"
        "pycasync make -m 8:32:128 - image.raw > image.caibx"
    )
    positionals = (INDEX_OUT, ("file", "input file ('-' for stdin)"))

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, False, "store to write the chunks to")
        add_chunking(p, compression=True)
        p.add_argument("--print-stats", action="store_true", help="print statistics as JSON to stderr")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_format.chunker import ChunkerParams
        from casync_store.ops.make import make

        a = ctx.args
        params = ChunkerParams.from_string(a.chunk_size)
        with contextlib.ExitStack() as stack:
            store = ctx.open(stack, a.store, writable=True) if a.store else None
            stats = make(a.index, a.file, store, params=params, digest=ctx.digest,
                         concurrency=ctx.concurrency, compression=a.compression, progress=ctx.progress,
                         options_for=ctx.options_for)
        if a.print_stats:  # stderr: stdout may be carrying the index
            print_json(stats.to_dict(), sys.stderr)
        ctx.tell(stats.summary())
        return 0


class Extract(Command):
    """``extract``: rebuild a blob from an index, seeds and stores."""

    name = "extract"
    summary = "Rebuild a blob from its index, seeds and chunk stores"
    description = (
        "Reads INDEX and writes the blob it describes to OUTPUT, taking each chunk from\n"
        "the first place that has it: OUTPUT itself (with -k, or a killed run's\n"
        "leftover), a seed, an earlier part of OUTPUT (a repeated chunk), else the\n"
        "stores given with -s (tried in order) through an optional local cache (-c).\n"
        "Every chunk is verified, also those from seeds: a seed chunk that does not\n"
        "match (the seed changed meanwhile) is fetched from the store instead. OUTPUT\n"
        "is written to a temporary file and renamed when complete, so a failure never\n"
        "leaves a partial file. With -k it is written in place instead: data already\n"
        "correct is kept, so an interrupted extract can be resumed, and block devices\n"
        "can be targets. INDEX may be '-' (standard input), OUTPUT may be '-'\n"
        "(standard output; seeds apply, repeated chunks come from seeds or stores).\n"
        "\n"
        "Seeds, as desync takes them: --seed INDEX (its data is INDEX without\n"
        ".caibx), --seed INDEX:DATA, --seed INDEX:DATA:OPTIONS (options are ignored),\n"
        "and --seed-dir DIR (every *.caibx under DIR with its data next to it). As\n"
        "casync does, --seed PATH with a file or block device that has no index\n"
        "chunks it on the fly like INDEX. Ranges of consecutive chunks are cloned\n"
        "(reflinks) where the filesystem allows, else copied. A seed whose data is\n"
        "missing or does not match its index is an error unless --skip-invalid-seeds\n"
        "(leave it out) or --regenerate-invalid-seeds (chunk its data afresh, in\n"
        "memory; nothing on disk changes).\n"
        "\n"
        "When stderr is a terminal, or with -v, a last line there says what was done:\n"
        "size, time, throughput, and how many chunks (and bytes) were in place, came\n"
        "from seeds, from the cache and from each store (with the bytes downloaded)."
    )
    examples = (
        "pycasync extract -s /mnt/store -c /var/cache/store image.caibx image.raw\n"
        "pycasync extract -s /mnt/a -s /mnt/b -k image.caibx /dev/sdb\n"
        "pycasync extract -s /mnt/store --seed v1.caibx --seed /tmp/old.caibx:/mnt/old v2.caibx v2.raw\n"
        "pycasync extract -k --seed /dev/slotA -s https://updates.example.com/store new.caibx /dev/slotB"
    )
    positionals = (INDEX_IN, ("output", "file or block device to write ('-' for stdout)"))

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "store to read chunks from")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
        p.add_argument("-k", "--in-place", action="store_true",
                       help="write OUTPUT in place, keep it on error")
        add_seed_flags(p)
        p.add_argument("--skip-invalid-seeds", action="store_true",
                       help="leave out seeds whose data is missing or does not match their index")
        p.add_argument("--regenerate-invalid-seeds", action="store_true",
                       help="chunk the data of such seeds afresh (in memory) and use that")
        p.add_argument("--print-stats", action="store_true",
                       help="print statistics as JSON to stdout (stderr when OUTPUT is '-')")
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.extract import extract

        a = ctx.args
        if same_file(a.index, a.output):
            raise ParameterError("the index and the output are the same file")
        if a.skip_invalid_seeds and a.regenerate_invalid_seeds:
            raise ParameterError("--skip-invalid-seeds and --regenerate-invalid-seeds exclude each other")
        require(a.store, "no store given (use -s)")
        action = "skip" if a.skip_invalid_seeds else "regenerate" if a.regenerate_invalid_seeds else "fail"
        seeds = seeds_from_args(a.seed, a.seed_dir, a.index)
        with contextlib.ExitStack() as stack:
            store = ctx.open_cached(stack, a.store, a.cache)
            (index,) = ctx.indexes(stack, [a.index])
            stats = extract(index, a.output, store, concurrency=ctx.concurrency, in_place=a.in_place,
                            progress=ctx.progress, seeds=seeds, invalid_seeds=action)
        if a.print_stats:
            print_json(stats.to_dict(), sys.stderr if a.output == "-" else sys.stdout)
        ctx.tell(stats.summary())
        return 0


def add_seed_flags(p: Parser) -> None:
    """``--seed`` and ``--seed-dir``, repeatable (extract and info)."""
    p.add_argument("--seed", action="append", default=[], metavar="INDEX[:DATA[:OPTIONS]]|PATH",
                   help="seed: an index and its data (default: INDEX without .caibx), or a file or "
                        "block device without an index (repeatable)")
    p.add_argument("--seed-dir", action="append", default=[], metavar="DIR",
                   help="use every *.caibx under DIR whose data file is next to it as a seed (repeatable)")


def seeds_from_args(specs: list[str], dirs: list[str], target: str) -> list[Any]:
    """The seeds of ``--seed`` (in order) then ``--seed-dir`` (the target index left out)."""
    from casync_store.ops.seed import parse_seed, seed_dir

    seeds = [parse_seed(spec) for spec in _split_commas(specs)]
    for directory in _split_commas(dirs):
        seeds.extend(seed_dir(directory, exclude=None if target == "-" else target))
    return seeds


def _split_commas(values: list[str]) -> list[str]:
    """Like desync's flags, ``a,b`` is two values (unless it names an existing file)."""
    out: list[str] = []
    for value in values:
        whole = "," not in value or os.path.exists(value)
        out.extend([value] if whole else [v for v in value.split(",") if v])
    return out


class ListChunks(Command):
    """``list-chunks``: one chunk id per line."""

    name = "list-chunks"
    summary = "Print the chunk ids of an index"
    description = (
        "Prints the id of every chunk in INDEX, one per line, in blob order.\n"
        "INDEX may be '-' (standard input)."
    )
    examples = "pycasync list-chunks image.caibx"
    positionals = (INDEX_IN,)

    def add_arguments(self, p: Parser) -> None:
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.info import list_chunks

        with contextlib.ExitStack() as stack:
            (index,) = ctx.indexes(stack, [ctx.args.index])
            write = sys.stdout.write
            for hex_id in list_chunks(index):
                write(hex_id + "\n")
        return 0


#: (key of IndexInfo.to_dict(), label) of ``info -f plain``, in output order
_PLAIN_INFO = [
    ("size", "Blob size"),
    ("total", "Chunks"),
    ("unique", "Unique chunks"),
    ("in-store", "Unique chunks in the stores"),
    ("in-seed", "Unique chunks in the seeds"),
    ("in-cache", "Unique chunks in the cache"),
    ("not-in-seed-nor-cache", "Unique chunks in neither seeds nor cache"),
    ("dedup-size-not-in-seed", "Bytes of unique chunks not in the seeds"),
    ("dedup-size-not-in-seed-nor-cache", "Bytes of unique chunks in neither seeds nor cache"),
    ("chunk-size-min", "Minimum chunk size"),
    ("chunk-size-avg", "Average chunk size"),
    ("chunk-size-max", "Maximum chunk size"),
    ("not-in-store", "Unique chunks in no store"),
    ("dedup-size-in-store", "Bytes of unique chunks in the stores"),
    ("dedup-size-in-store-compressed", "Stored bytes of unique chunks in the stores"),
    ("dedup-size-not-in-store", "Bytes of unique chunks in no store"),
]


class Info(Command):
    """``info``: facts about an index, as JSON or plain text."""

    name = "info"
    summary = "Show facts about an index"
    description = (
        "Prints the number of chunks (total and unique), the blob size and the chunk\n"
        "size limits; with -s, how many of the unique chunks the stores hold; with -c,\n"
        "how many the cache holds; with --seed/--seed-dir, how many the seeds hold\n"
        "(seeds as for extract: INDEX[:DATA[:OPTIONS]] counts the index's chunks,\n"
        "a file or device without an index is chunked like INDEX). With -s, also the\n"
        "bytes of the unique chunks the stores hold and lack, and their stored\n"
        "(compressed) size where the stores tell it (local stores; HTTP stores whose\n"
        "server sends Content-Length for HEAD; else null). With --chunks-info FILE\n"
        "(the JSON of inspect-chunks -s STORE), the compressed size of the chunks in\n"
        "neither seeds nor cache (0 when FILE lacks one of them). The output is JSON\n"
        "unless -f plain. INDEX may be '-' (standard input)."
    )
    examples = "pycasync info -s /srv/store image.caibx\npycasync info -f plain image.caibx"
    positionals = (INDEX_IN,)

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "store to count chunks in")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="cache store to count chunks in")
        add_seed_flags(p)
        p.add_argument("--chunks-info", metavar="FILE",
                       help="JSON of inspect-chunks: gives dedup-size-not-in-seed-nor-cache-compressed")
        p.add_argument("-f", "--format", choices=("json", "plain"), default="json", help="output format")
        p.add_argument("-j", "--json", dest="format", action="store_const", const="json",
                       help="same as -f json")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.info import index_info
        from casync_store.ops.inspect import load_chunks_info

        a = ctx.args
        chunks_info = load_chunks_info(a.chunks_info) if a.chunks_info else None
        with contextlib.ExitStack() as stack:
            stores = [ctx.open(stack, loc, must_exist=True) for loc in a.store]
            cache = ctx.open(stack, a.cache, must_exist=True) if a.cache else None
            (index,) = ctx.indexes(stack, [a.index])
            seeds = self._seeds(ctx, stack, index)
            stats = index_info(index, stores=stores, concurrency=ctx.concurrency, seeds=seeds, cache=cache,
                               chunks_info=chunks_info)
        data = stats.to_dict()
        if a.format == "json":
            print_json(data)
        else:
            sys.stdout.write("".join(f"{label}: {data[key]}\n" for key, label in _PLAIN_INFO if key in data))
        return 0

    @staticmethod
    def _seeds(ctx: Context, stack: contextlib.ExitStack, index: Any) -> list[Any]:
        """Chunk lists of the seeds: an index seed's index (its data is not needed), a raw seed chunked."""
        from casync_store.ops.seed import IndexSeed

        a = ctx.args
        found: list[Any] = []
        for seed in seeds_from_args(a.seed, a.seed_dir, a.index):
            if isinstance(seed, IndexSeed):
                found.extend(ctx.indexes(stack, [seed.index_path]))
            else:
                seed.load(index, ctx.concurrency)
                found.append(seed)
        return found


class Chunk(Command):
    """``chunk``: print start, size and id of every chunk of a file."""

    name = "chunk"
    summary = "Print the chunks a file would be split into"
    description = (
        "Chunks FILE without storing anything and prints one line per chunk: its\n"
        "start offset, its size and its id, separated by tabs. Useful to try chunk\n"
        "sizes before running 'make'."
    )
    examples = "pycasync chunk -m 16:64:256 image.raw"
    positionals = (("file", "input file"),)

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("-S", "--start", type=nonnegative_int, default=0, metavar="OFFSET",
                       help="start chunking at this byte offset")
        add_chunking(p, compression=False)
        add_concurrency(p)

    def run(self, ctx: Context) -> int:
        from casync_format.chunker import ChunkerParams
        from casync_store.ops.info import chunk_file

        a = ctx.args
        params = ChunkerParams.from_string(a.chunk_size)
        write = sys.stdout.write
        for start, size, chunk_id in chunk_file(a.file, params, ctx.digest, ctx.concurrency, start=a.start):
            write(f"{start}\t{size}\t{chunk_id.hex()}\n")
        return 0


class Chop(Command):
    """``chop``: store a file's chunks as cut by an existing index."""

    name = "chop"
    summary = "Store the chunks of a file as an existing index cuts it"
    description = (
        "Reads FILE at the offsets INDEX gives, checks that each piece hashes to its\n"
        "chunk id, and writes the chunks the store (-s) lacks. Neither FILE nor INDEX\n"
        "is changed. INDEX may be '-' (standard input). A FILE that changes while it\n"
        "is read fails with 'FILE changed while it was read'. The store must exist (a\n"
        "local directory that does not is an error, not a new store). Chunks of the\n"
        "--ignore indexes and those listed in --ignore-chunks files (known to be in\n"
        "the store) are left out. With --json the counts (chunks stored, already in\n"
        "the store, repeated; bytes) go to stdout."
    )
    examples = "pycasync chop -s /srv/store image.caibx image.raw"
    positionals = (INDEX_IN, ("file", "the blob the index describes"))

    def add_arguments(self, p: Parser) -> None:
        from ._common import add_json
        from .inspect import add_ignore_flags

        add_stores(p, False, "store to write the chunks to (an existing directory or remote store)")
        add_ignore_flags(p)
        add_compression(p)
        add_json(p, "the chunks stored, already present and repeated")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.chop import chop

        from .inspect import ignored_from_args

        a = ctx.args
        require(a.store, "no target store given (use -s)")
        with contextlib.ExitStack() as stack:
            store = ctx.open(stack, a.store, writable=True, must_exist=True)  # a typo is no new store
            (index,) = ctx.indexes(stack, [a.index])
            ignore = ignored_from_args(ctx, stack)
            stats = chop(index, a.file, store, concurrency=ctx.concurrency, progress=ctx.progress,
                         ignore=ignore)
        if a.json:
            print_json(stats.to_dict())
        return 0
