"""Index-reading commands: cat, verify-index and inspect-chunks, and the ``--ignore`` flags.

``cat`` streams (a range of) a blob to a file or a pipe
(:func:`casync_store.ops.cat.cat`), ``verify-index`` says whether a file
matches an index (:func:`casync_store.ops.verifyindex.verify_index`),
``inspect-chunks`` prints desync's per-chunk JSON
(:func:`casync_store.ops.inspect.inspect_chunks`). :func:`add_ignore_flags`
and :func:`ignored_from_args` give ``cache`` and ``chop`` desync's
``--ignore INDEX`` and ``--ignore-chunks FILE``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

from casync_store.plumbing.atomic import atomic_write

from ._common import Command, Context, Failure, add_store_flags, add_stores, require
from ._parser import Parser, nonnegative_int, store_list

__all__ = ["Cat", "VerifyIndex", "InspectChunks", "add_ignore_flags", "ignored_from_args", "output_stream"]

_INDEX_IN = ("index", "index file ('-' for stdin)")


@contextlib.contextmanager
def output_stream(path: str | None) -> Iterator[BinaryIO]:
    """Where a command's output goes: stdout (None or ``-``), a pipe or device as it is, else a file.

    A regular file is written to a temporary name and renamed when the block
    ends cleanly, so an error leaves no partial file.
    """
    if path in (None, "-"):
        yield sys.stdout.buffer
        return
    assert path is not None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = stat.S_IFREG
    if stat.S_ISREG(mode) and not path.startswith(("/dev/", "/proc/")):  # /dev/stdout may be a file
        with atomic_write(path) as f:
            yield f
    else:  # a FIFO, a character device, /dev/stdout: written in order, as it is
        with open(path, "wb") as f:
            yield f


class Cat(Command):
    """``cat``: stream a blob (or a range of it) to stdout, a file or a pipe."""

    name = "cat"
    summary = "Stream a blob (or a byte range of it) to stdout, a file or a pipe"
    description = (
        "Writes the blob INDEX describes to OUTPUT (default standard output), in\n"
        "order, so OUTPUT may be a pipe, a FIFO or a socket. With -o/--offset and\n"
        "-l/--length only that byte range is written and only the chunks it touches\n"
        "are fetched (several at a time) from the stores (-s, tried in order) through\n"
        "an optional cache (-c). Every chunk is verified. A regular OUTPUT file is\n"
        "written under a temporary name and renamed when complete. A range past the\n"
        "end of the blob is cut short; an offset past it is an error. INDEX may be\n"
        "'-' (standard input)."
    )
    examples = (
        "pycasync cat -s http://192.168.1.1/store image.caibx | grep something\n"
        "pycasync cat -s /srv/store -o 1048576 -l 4096 image.caibx slice.bin"
    )
    positionals = (_INDEX_IN,)

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("output", nargs="?", help="file, FIFO or device to write ('-' or none: stdout)")
        add_stores(p, True, "store to read chunks from")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
        p.add_argument("-o", "--offset", type=nonnegative_int, default=0, metavar="BYTES",
                       help="blob offset to start at (default 0)")
        p.add_argument("-l", "--length", type=nonnegative_int, default=0, metavar="BYTES",
                       help="number of bytes to write (default 0: to the end)")
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.cat import cat

        a = ctx.args
        require(a.store, "no store given (use -s)")
        with contextlib.ExitStack() as stack:
            store = ctx.open_cached(stack, a.store, a.cache)
            (index,) = ctx.indexes(stack, [a.index])
            out = stack.enter_context(output_stream(a.output))
            cat(index, store, out, offset=a.offset, length=a.length or None, concurrency=ctx.concurrency)
        return 0


class VerifyIndex(Command):
    """``verify-index``: does a file match an index?"""

    name = "verify-index"
    summary = "Check that a file matches an index"
    description = (
        "Reads FILE at the offset of every chunk of INDEX (several at a time) and\n"
        "checks that each piece hashes to its chunk id, and that FILE is not longer\n"
        "than the blob (block devices may be). Exits 0 when FILE matches; else names\n"
        "the first chunk that differs (its offset and id) and exits 1. Nothing is\n"
        "written. INDEX may be '-' (standard input) or a remote index."
    )
    examples = "pycasync verify-index image.caibx image.raw\npycasync verify-index image.caibx /dev/sdb"
    positionals = (_INDEX_IN, ("file", "file or block device to check"))

    def add_arguments(self, p: Parser) -> None:
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.verifyindex import verify_index

        a = ctx.args
        with contextlib.ExitStack() as stack:
            (index,) = ctx.indexes(stack, [a.index])
            mismatch = verify_index(index, a.file, concurrency=ctx.concurrency)
        if mismatch is not None:
            raise Failure(f"{a.file} does not match {a.index}: {mismatch}")
        return 0


class InspectChunks(Command):
    """``inspect-chunks``: desync's per-chunk JSON of an index."""

    name = "inspect-chunks"
    summary = "Print the chunks of an index as JSON (with sizes in a local store)"
    description = (
        "Prints a JSON list with one object per chunk of INDEX (repeats included, in\n"
        'blob order): {"id": ..., "uncompressed_size": N}, plus "compressed_size"\n'
        "(the size of the chunk's file) when a local store is given with -s and holds\n"
        "the chunk. This is desync's format; 'info --chunks-info FILE' reads it. The\n"
        "output goes to OUTPUT (written under a temporary name, then renamed) or\n"
        "standard output. INDEX may be '-' (standard input)."
    )
    examples = (
        "pycasync inspect-chunks image.caibx\n"
        "pycasync inspect-chunks -s /srv/store image.caibx chunks.json"
    )
    positionals = (_INDEX_IN,)

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("output", nargs="?", help="file to write the JSON to ('-' or none: stdout)")
        add_stores(p, False, "local store to take the compressed sizes from")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.inspect import chunks_info_json, inspect_chunks

        a = ctx.args
        with contextlib.ExitStack() as stack:
            store = ctx.open(stack, a.store, must_exist=True) if a.store else None
            (index,) = ctx.indexes(stack, [a.index])
            text = chunks_info_json(inspect_chunks(index, store))
            out = stack.enter_context(output_stream(a.output))
            out.write(text.encode())
            out.flush()
        return 0


def add_ignore_flags(p: Parser) -> None:
    """``--ignore INDEX`` and ``--ignore-chunks FILE`` (repeatable, or comma lists) of cache and chop."""
    p.add_argument("--ignore", action="extend", type=store_list, default=[], metavar="INDEX",
                   help="leave out the chunks of INDEX, e.g. known to be in the target (repeatable)")
    p.add_argument("--ignore-chunks", action="extend", type=store_list, default=[], metavar="FILE",
                   help="leave out the chunk ids listed in FILE, one per line (repeatable)")


def ignored_from_args(ctx: Context, stack: contextlib.ExitStack) -> Any:
    """The chunk ids ``--ignore`` and ``--ignore-chunks`` name (an empty set without them)."""
    from casync_store.ops.ignore import ignored_ids

    a = ctx.args
    return ignored_ids(ctx.indexes(stack, a.ignore), a.ignore_chunks)
