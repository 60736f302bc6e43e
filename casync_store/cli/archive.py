"""Archive commands: tar, untar and mtree (directory trees as catar archives and caidx indexes).

They pack a tree (or a tar stream) into a catar or a caidx and chunks, unpack
one into a directory or a tar stream, or list one in mtree format, by
calling :mod:`casync_store.ops.tar`, :mod:`~casync_store.ops.tarstream`,
:mod:`~casync_store.ops.untar` and :mod:`~casync_store.ops.mtree`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from casync_format.digest import Digest
from casync_format.errors import ParameterError

from ._common import (
    Command,
    Context,
    add_chunking,
    add_json,
    add_store_flags,
    add_stores,
    log,
    print_json,
    require,
)
from ._parser import Parser

__all__ = ["Tar", "Untar", "Mtree", "add_archive_input", "archive_source"]


class Tar(Command):
    """``tar``: a directory tree or tar stream into a catar, or a caidx and chunks."""

    name = "tar"
    summary = "Pack a directory tree into a catar archive or a caidx index"
    description = (
        "Writes the tree under SOURCE as a catar archive with desync's feature set\n"
        "(byte for byte what casync make writes with the same --with options).\n"
        "With -i, the archive stream is chunked straight into the store (-s) and\n"
        "ARCHIVE is a .caidx index instead. With --input-format tar, SOURCE is a\n"
        "GNU/PAX/ustar tar stream ('-' for stdin) instead of a directory. A file that\n"
        "changes while it is archived fails with 'FILE changed while it was read'\n"
        "and no archive or index is left."
    )
    examples = (
        "pycasync tar backup.catar /etc\n"
        "pycasync tar -i -s /srv/store backup.caidx /etc\n"
        "tar -cf - /etc | pycasync tar --input-format tar etc.catar -"
    )
    positionals = (
        ("archive", "catar file, or caidx with -i ('-' for stdout without -i)"),
        ("source", "directory, or tar stream with --input-format tar ('-' for stdin)"),
    )

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("-i", "--index", action="store_true",
                       help="write a caidx index and chunks, not a catar")
        add_stores(p, False, "store to write the chunks to (with -i)")
        add_chunking(p, compression=True)
        p.set_defaults(chunk_size=None, compression=None)  # given only with -i
        p.add_argument("--input-format", choices=("disk", "tar"), default="disk", help="what SOURCE is")
        p.add_argument("--no-time", action="store_true", help="record all times as zero")
        p.add_argument("--tar-add-root", action="store_true",
                       help="put the members of a tar stream under a common root directory")
        p.add_argument("-x", "--one-file-system", action="store_true",
                       help="do not cross file system boundaries")
        add_json(p, "what was archived (entries, bytes; with -i the chunks) (stderr when ARCHIVE is '-')")
        add_store_flags(p)

    @staticmethod
    def _options(a: Any) -> dict[str, Any]:
        """The flags' keyword arguments of the tar functions, after checking they fit together."""
        if a.index:
            require(a.store, "-i needs a store to write the chunks to (use -s)")
        elif a.store or a.chunk_size or a.compression:
            raise ParameterError("-s, -m and --compression are only used with -i")
        if a.input_format == "disk" and a.source == "-":
            raise ParameterError("SOURCE '-' (stdin) needs --input-format tar")
        if a.input_format == "tar" and a.one_file_system:
            raise ParameterError("-x applies to --input-format disk only")
        common: dict[str, Any] = {"no_time": a.no_time}
        if a.input_format == "tar":
            common["add_root"] = a.tar_add_root
        elif a.tar_add_root:
            raise ParameterError("--tar-add-root applies to --input-format tar only")
        else:
            common["one_file_system"] = a.one_file_system
        return common

    def run(self, ctx: Context) -> int:
        from casync_format.chunker import ChunkerParams
        from casync_store.ops import tar, tarstream

        a = ctx.args
        common = self._options(a)
        with contextlib.ExitStack() as stack:
            source: Any = a.source
            if a.input_format == "tar":
                source = sys.stdin.buffer if a.source == "-" else stack.enter_context(open(a.source, "rb"))
            if not a.index:
                to_catar = tarstream.tar_from_tarstream if a.input_format == "tar" else tar.tar
                stats = to_catar(source, a.archive, **common)
            else:
                store = ctx.open(stack, a.store, writable=True)
                to_index = tarstream.tar_index_from_tarstream if a.input_format == "tar" else tar.tar_index
                params = ChunkerParams.from_string(a.chunk_size or "16:64:256")
                stats = to_index(source, a.archive, store, params=params, digest=ctx.digest,
                                 concurrency=ctx.concurrency, compression=a.compression,
                                 options_for=ctx.options_for, **common)
        log.info("%s", stats)
        if a.json:
            print_json(_stats_dict(stats), sys.stderr if a.archive == "-" else sys.stdout)
        return 0


def _stats_dict(stats: Any) -> dict[str, Any]:
    """A stats object as JSON data: its ``to_dict()``, else its dataclass fields with dashed keys."""
    if hasattr(stats, "to_dict"):
        return dict(stats.to_dict())
    from dataclasses import asdict

    return {key.replace("_", "-"): value for key, value in asdict(stats).items()}


def add_archive_input(p: Parser) -> None:
    """``-i``, ``-s`` and ``-c`` of the commands that read a catar or (with -i) a caidx."""
    p.add_argument("-i", "--index", action="store_true", help="read a caidx index, not a catar")
    add_stores(p, True, "store to read chunks from (with -i)")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache (with -i)")


def archive_source(ctx: Context, stack: contextlib.ExitStack) -> tuple[Any, Digest]:
    """The catar byte stream of ``untar``/``mtree`` (a file, stdin, or an index's
    chunks) and the digest of its chunks (an index's own, else --digest)."""
    from casync_format.index import index_path_kind
    from casync_store.ops.untar import index_reader

    a = ctx.args
    if not a.index:
        if a.store or a.cache:
            raise ParameterError("-s and -c are only used with -i")
        if index_path_kind(a.archive):
            raise ParameterError(f"{a.archive} is an index, not a catar archive: use -i and -s STORE")
        if a.archive == "-":
            return sys.stdin.buffer, ctx.digest
        return stack.enter_context(open(a.archive, "rb")), ctx.digest
    require(a.store, "-i needs a store to read the chunks from (use -s)")
    store = ctx.open_cached(stack, a.store, a.cache)
    (index,) = ctx.indexes(stack, [a.archive])
    return stack.enter_context(index_reader(index, store, concurrency=ctx.concurrency)), index.digest


class Untar(Command):
    """``untar``: a catar or caidx into a directory, or out as a GNU tar stream."""

    name = "untar"
    summary = "Unpack a catar archive or caidx index into a directory"
    description = (
        "Restores the tree of ARCHIVE (with -i: of the caidx INDEX, whose chunks come\n"
        "from the stores -s through an optional cache -c) into TARGET: files,\n"
        "directories, symlinks, devices, fifos, sockets, permissions, owners (as\n"
        "root, unless --no-same-owner), nanosecond times and xattrs. Entries can\n"
        "never be written outside TARGET. With --output-format gnu-tar, a GNU tar\n"
        "stream is written to TARGET ('-' for stdout) instead."
    )
    examples = "pycasync untar backup.catar /tmp/etc\npycasync untar -i -s /srv/store backup.caidx /tmp/etc"
    positionals = (
        ("archive", "catar file, or caidx with -i ('-' for stdin)"),
        ("target", "directory to fill, or tar file with --output-format gnu-tar ('-' for stdout)"),
    )

    def add_arguments(self, p: Parser) -> None:
        add_archive_input(p)
        p.add_argument("--no-same-owner", action="store_true", help="do not restore owners (as root)")
        p.add_argument("--no-same-permissions", action="store_true", help="apply the umask to permissions")
        p.add_argument("--output-format", choices=("disk", "gnu-tar"), default="disk", help="what TARGET is")
        add_json(p, "what was restored (entries, bytes, chunks) (stderr when TARGET is '-')")
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.untar import untar

        a = ctx.args
        if a.target == "-" and a.output_format != "gnu-tar":
            raise ParameterError("TARGET '-' (stdout) needs --output-format gnu-tar")
        with contextlib.ExitStack() as stack:
            source, _ = archive_source(ctx, stack)
            if a.output_format == "gnu-tar":
                from casync_store.ops.tarstream import catar_to_tarstream

                converted = catar_to_tarstream(source, sys.stdout.buffer if a.target == "-" else a.target)
                if a.json:
                    print_json(_stats_dict(converted), sys.stderr if a.target == "-" else sys.stdout)
                return 0
            stats = untar(source, a.target, no_same_owner=a.no_same_owner,
                          no_same_permissions=a.no_same_permissions)
            stats.chunks = getattr(source, "chunks", 0)  # an index's stream counts its chunks
        log.info("%s", stats)
        if a.json:
            print_json(_stats_dict(stats))
        return 0


class Mtree(Command):
    """``mtree``: print a catar, caidx or directory in mtree format."""

    name = "mtree"
    summary = "Print a catar, caidx or directory in mtree format"
    description = (
        "Lists every entry of SOURCE (a catar archive, with -i a caidx index whose\n"
        "chunks come from -s/-c, or a directory) in mtree(5) format, as desync does."
    )
    examples = "pycasync mtree backup.catar\npycasync mtree -i -s /srv/store backup.caidx"
    positionals = (("source", "catar file, caidx with -i, or a directory"),)

    def add_arguments(self, p: Parser) -> None:
        add_archive_input(p)
        add_store_flags(p)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.mtree import mtree_archive, mtree_dir

        a = ctx.args
        a.archive = a.source
        write = sys.stdout.write
        with contextlib.ExitStack() as stack:
            if not a.index and os.path.isdir(a.source):
                if a.store or a.cache:
                    raise ParameterError("-s and -c are only used with -i")
                lines = mtree_dir(a.source, digest=ctx.digest)
            else:
                source, digest = archive_source(ctx, stack)
                lines = mtree_archive(source, digest=digest)
            for line in lines:
                write(line + "\n")
        return 0
