"""Store maintenance commands: verify, cache, prune and upgrade-s3.

They check, fill, trim or convert a chunk store, by calling one function of
:mod:`casync_store.ops.maintain` (or :mod:`casync_store.stores.s3`).
"""

from __future__ import annotations

import contextlib
import sys

from casync_format.errors import ParameterError

from ._common import (
    Command,
    Context,
    Failure,
    add_compression,
    add_json,
    add_store_flags,
    add_stores,
    log,
    print_json,
    require,
)
from ._parser import PROG, Parser

__all__ = ["Verify", "Cache", "Prune", "UpgradeS3", "confirm"]


class Verify(Command):
    """``verify``: check every chunk of a store; 1 when damaged chunks remain."""

    name = "verify"
    summary = "Check every chunk in a store"
    description = (
        "Reads every chunk in the store, decompresses it and checks that it hashes to\n"
        "its name. Without --digest a chunk is valid if it hashes to its name with\n"
        "either digest (SHA512/256 or SHA256: one store may hold chunks of both);\n"
        "with --digest ALG only that digest counts. Damaged chunks are listed on\n"
        "stderr and make the command fail; with -r they are deleted instead, so that\n"
        "the next 'make', 'chop' or 'cache' writes them again. A last line on stderr\n"
        "says how many chunks were checked and how many were invalid. With --json\n"
        "the counts go to stdout as\n"
        '{"checked": N, "invalid": [ID, ...], "removed": N} (also when it fails).'
    )
    examples = "pycasync verify -s /srv/store\npycasync verify -r --json -s /srv/store"

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, False, "store to verify")
        p.add_argument("-r", "--repair", action="store_true", help="delete damaged chunks")
        add_json(p, "the chunks checked, invalid and removed")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.maintain import verify_store
        from casync_store.plumbing.locparse import redact

        a = ctx.args
        require(a.store, "no store given (use -s)")
        with contextlib.ExitStack() as stack:
            stats = verify_store(ctx.open(stack, a.store), ctx.digest, repair=a.repair,
                                 concurrency=ctx.concurrency, progress=ctx.progress,
                                 either_digest=not ctx.digest_given)
        for chunk_id in stats.invalid:
            print(f"chunk {chunk_id.hex()} is invalid" + (": removed" if a.repair else ""), file=sys.stderr)
        found = f"{len(stats.invalid)} invalid" + (f", {stats.removed} removed" if a.repair else "")
        _say(self.name, f"checked {stats.checked} chunks of store {redact(a.store)}: "
                        + (found if stats.invalid else "all valid"))
        if a.json:
            print_json(stats.to_dict())
        if stats.invalid and not a.repair:
            raise Failure(f"{len(stats.invalid)} invalid chunk(s) in store {a.store} (-r removes them)")
        return 0


class Cache(Command):
    """``cache``: copy the chunks of indexes into a target store."""

    name = "cache"
    summary = "Copy the chunks of indexes from stores into another store"
    description = (
        "Collects the chunk ids of every INDEX and copies the chunks the target store\n"
        "(-c) lacks from the source stores (-s, tried in order), without assembling\n"
        "any blob. Use it to fill a cache or to replicate a store. Chunks of the\n"
        "--ignore indexes and those listed in --ignore-chunks files (one id per line)\n"
        "are left out. One INDEX may be '-' (standard input)."
    )
    examples = "pycasync cache -s /mnt/store -c /var/cache/store a.caibx b.caibx"
    positionals = (("index...", "index files ('-' for stdin)"),)

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "source store")
        from .inspect import add_ignore_flags

        p.add_argument("-c", "--cache", metavar="LOCATION", help="target store")
        add_ignore_flags(p)
        add_compression(p)
        add_json(p, "the chunks copied, present, repaired and the bytes written")
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.maintain import fill_cache
        from casync_store.stores.router import combine

        from .inspect import ignored_from_args

        a = ctx.args
        require(a.store, "no source store given (use -s)")
        require(a.cache, "no target store given (use -c)")
        with contextlib.ExitStack() as stack:
            source = combine([ctx.open(stack, loc) for loc in a.store])
            target = ctx.open(stack, a.cache, writable=True)
            indexes = ctx.indexes(stack, a.index)
            ignore = ignored_from_args(ctx, stack)
            stats = fill_cache(indexes, source, target, concurrency=ctx.concurrency, progress=ctx.progress,
                               ignore=ignore)
        if a.json:
            print_json(stats.to_dict())
        return 0


def confirm(question: str) -> bool:
    """Ask on stderr and read y/N from stdin; end of input is an error."""
    while True:
        sys.stderr.write(question + " [y/N]: ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            sys.stderr.write("\n")
            raise Failure("no answer on standard input (-y skips the question)")
        if line.strip() in ("y", "Y", "yes"):
            return True
        if line.strip() in ("", "n", "N", "no"):
            return False


class Prune(Command):
    """``prune``: delete the chunks of a store no given index references."""

    name = "prune"
    summary = "Delete the chunks of a store that no index references"
    description = (
        "Collects the chunk ids of every INDEX and deletes every other chunk from the\n"
        "store (-s). It first says how many chunks the store holds and how many (and,\n"
        "for a local store, how many bytes) no INDEX uses; this cannot be undone, so\n"
        "it asks then unless -y is given, and says at the end what it removed. One\n"
        "INDEX may be '-' (standard input), with -y.\n\n"
        "Beside writers, for a local store only: a chunk that a make, chop, tar -i or\n"
        "cache into the same store writes or finds present is never deleted if that\n"
        "writer runs when the prune begins or starts while it runs (writers register\n"
        "in STORE/.pycasync-writers and refresh the chunks they find; a writer killed\n"
        "with -9 leaves nothing locked). A writer that finished before the prune began\n"
        "is protected only by its index being an INDEX here. For remote stores (S3,\n"
        "SFTP, HTTP) and chunk-server uploads nothing is promised: do not prune while\n"
        "writing to them.\n\n"
        'With --json: {"indexes": N, "removed": N, "bytes-removed": N, "chunks": N,\n'
        '"unused": N, "unused-bytes": N} on stdout (removed 0 when the answer is no;\n'
        "byte counts null where the store cannot tell sizes)."
    )
    examples = "pycasync prune -s /srv/store -y current.caibx previous.caibx"
    positionals = (("index...", "index files whose chunks are kept"),)

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, False, "store to prune")
        p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        add_json(p, "the number of indexes and of chunks removed")
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.maintain import prune_plan, prune_store
        from casync_store.plumbing.locparse import redact
        from casync_store.stores.base import require_prunable

        a = ctx.args
        require(a.store, "no store given (use -s)")
        if "-" in a.index and not a.yes:
            raise ParameterError(
                "an index on standard input needs -y (stdin cannot also answer the question)"
            )
        with contextlib.ExitStack() as stack:
            store = require_prunable(ctx.open(stack, a.store))
            indexes = ctx.indexes(stack, a.index)
            plan = prune_plan(store, indexes, ctx.concurrency)
            unused = f"{plan.unused} chunks" + _bytes(plan.unused_bytes)
            _say(self.name, f"store {redact(a.store)} holds {plan.chunks} chunks; {unused} are used by none "
                            f"of the {len(indexes)} index(es)")
            removed, sizes = 0, _Sizes()
            if not plan.unused and not a.yes:
                _say(self.name, "nothing to delete")
            elif not a.yes and not confirm(f"Delete these {unused}?"):
                _say(self.name, "nothing deleted")
            else:
                removed = prune_store(store, indexes, removed=sizes)
                _say(self.name, f"removed {removed} chunks{_bytes(sizes.total)} from store {redact(a.store)}")
        if a.json:
            print_json({"indexes": len(indexes), "removed": removed, "bytes-removed": sizes.total,
                        **plan.to_dict()})
        return 0


class _Sizes:
    """Sums the sizes of the chunks a prune removed (None once one is unknown)."""

    def __init__(self) -> None:
        self.total: int | None = 0

    def __call__(self, chunk_id: bytes, size: int) -> None:
        self.total = None if size < 0 or self.total is None else self.total + size


def _bytes(n: int | None) -> str:
    """`` (1.50 MiB)``, or nothing for an unknown size."""
    from casync_store.plumbing.progress import format_bytes

    return f" ({format_bytes(n)})" if n is not None else ""


def _say(command: str, line: str) -> None:
    """``pycasync COMMAND: line`` on stderr (stdout stays for --json)."""
    sys.stderr.write(f"{PROG} {command}: {line}\n")
    sys.stderr.flush()


class UpgradeS3(Command):
    """``upgrade-s3``: move an S3 store's chunks from the flat layout to xxxx/<id>.cacnk."""

    name = "upgrade-s3"
    summary = "Convert an S3 store from the old flat layout"
    description = (
        "Moves the chunks of an S3 store written by desync before 2018 (objects named\n"
        "by the bare chunk id) to the layout every store uses now (xxxx/<id>.cacnk).\n"
        "Chunks already in the new layout are left alone, so it can be run again."
    )
    examples = "pycasync upgrade-s3 -s s3+https://s3.example.com/bucket/store"

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, False, "S3 store to convert (s3+http(s)://host/bucket/prefix)")
        add_json(p, 'the number of chunks moved ({"converted": N})')
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.stores.s3 import S3Store, upgrade_s3

        a = ctx.args
        require(a.store, "no store given (use -s)")
        with contextlib.ExitStack() as stack:
            store = ctx.open(stack, a.store)
            if not isinstance(store, S3Store):
                raise ParameterError(f"store {a.store} is not an S3 store (s3+http(s)://host/bucket/prefix)")
            moved = upgrade_s3(store, progress=ctx.progress)
        log.info("converted %d chunk(s)", moved)
        if a.json:
            print_json({"converted": moved})
        return 0
