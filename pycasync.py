#!/usr/bin/env python3
"""pycasync's command line: desync-compatible subcommands over casync_store.

This module only turns ``argv`` into a call: it parses the arguments (with
desync's command and flag names, and the old single-dash spellings of
pre-2018 desync rewritten to the GNU form first), reads the config file,
opens the stores, calls exactly one operation from :mod:`casync_store`, prints
its result, and maps exceptions to one line on stderr and an exit status:
0 success, 1 failure, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from casync_format import __version__
from casync_format.compress import COMPRESSIONS
from casync_format.digest import Digest, digest_by_name
from casync_format.errors import CasyncError, ParameterError, StoreError
from casync_store.plumbing.config import Config, StoreOptions, load_config, parse_duration
from casync_store.plumbing.fileio import same_file
from casync_store.stores.location import open_store

__all__ = ["main", "build_parser", "rewrite_argv", "UsageError", "EXIT_FAILURE", "EXIT_USAGE"]

PROG = "pycasync"
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger(PROG)


class UsageError(Exception):
    """The command line cannot be parsed (exit status 2)."""


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage, and remembers its options."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: option string -> whether it takes a separate value (for argv rewriting)
        self.option_arity: dict[str, bool] = {}
        #: command name -> its parser (on the top-level parser)
        self.commands: dict[str, _Parser] = {}
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        return self._record(super().add_argument(*args, **kwargs))

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument
        group.add_argument = lambda *a, **k: self._record(add(*a, **k))  # type: ignore[method-assign]
        return group

    def _record(self, action: argparse.Action) -> argparse.Action:
        for opt in action.option_strings:
            self.option_arity[opt] = action.nargs not in (0, "?")
        return action

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _VersionAction(argparse.Action):
    """``--version``: the version and which chunker and zstd backends are in use."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        from casync_format import describe_backends

        print(f"{PROG} {__version__} ({describe_backends()})")
        parser.exit()


class _NotSupported(argparse.Action):
    """A desync flag this version knows but does not offer: refused by name, not misparsed."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        raise ParameterError(f"option {self.option_strings[0]} is not supported in this version of pycasync")


def _bool_value(text: str) -> bool:
    """Go-style flag booleans (``--skip-verify-read=false``)."""
    value = text.strip().lower()
    if value in ("1", "t", "true", "yes"):
        return True
    if value in ("0", "f", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, not {value}")
        return value

    return parse


_positive_int, _nonnegative_int = _int_at_least(1), _int_at_least(0)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_duration(text: str) -> float:
    value = _duration(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text!r}")
    return value


_DOCS: dict[str, tuple[str, str, str]] = {  # command: (summary, description, examples)
    "make": (
        "Chunk a file and write its index (and the chunks to a store)",
        "Splits FILE into content-defined chunks like 'casync make' does and writes a\n"
        "blob index (.caibx) naming them. With -s, the chunks are stored there too,\n"
        "compressed; chunks the store already holds are not written again. The index\n"
        "is byte-for-byte what casync writes for the same settings. INDEX may be '-'\n"
        "(standard output) and FILE may be '-' (standard input).",
        "pycasync make -s /srv/store image.caibx image.raw\n"
        "pycasync make -m 8:32:128 - image.raw > image.caibx",
    ),
    "extract": (
        "Rebuild a blob from its index and chunk stores",
        "Reads INDEX and writes the blob it describes to OUTPUT, fetching the chunks\n"
        "from the stores given with -s (tried in order) through an optional local\n"
        "cache (-c). Every chunk is verified. OUTPUT is written to a temporary file\n"
        "and renamed when complete, so a failure never leaves a partial file. With\n"
        "-k it is written in place instead: data already correct is kept, so an\n"
        "interrupted extract can be resumed, and block devices can be targets.\n"
        "INDEX may be '-' (standard input), OUTPUT may be '-' (standard output).",
        "pycasync extract -s /mnt/store -c /var/cache/store image.caibx image.raw\n"
        "pycasync extract -s /mnt/a -s /mnt/b -k image.caibx /dev/sdb",
    ),
    "list-chunks": (
        "Print the chunk ids of an index",
        "Prints the id of every chunk in INDEX, one per line, in blob order.\n"
        "INDEX may be '-' (standard input).",
        "pycasync list-chunks image.caibx",
    ),
    "info": (
        "Show facts about an index",
        "Prints the number of chunks (total and unique), the blob size and the chunk\n"
        "size limits; with -s, how many of the unique chunks the stores hold; with -c,\n"
        "how many the cache holds; with --seed, how many other indexes share. The\n"
        "output is JSON unless -f plain. INDEX may be '-' (standard input).",
        "pycasync info -s /srv/store image.caibx\n"
        "pycasync info -f plain image.caibx",
    ),
    "chunk": (
        "Print the chunks a file would be split into",
        "Chunks FILE without storing anything and prints one line per chunk: its\n"
        "start offset, its size and its id, separated by tabs. Useful to try chunk\n"
        "sizes before running 'make'.",
        "pycasync chunk -m 16:64:256 image.raw",
    ),
    "verify": (
        "Check every chunk in a store",
        "Reads every chunk in the store, decompresses it and checks that it hashes to\n"
        "its name (with --digest). Damaged chunks are listed on stderr and make the\n"
        "command fail; with -r they are deleted instead, so that the next 'make',\n"
        "'chop' or 'cache' writes them again.",
        "pycasync verify -s /srv/store\n"
        "pycasync verify -r -s /srv/store",
    ),
    "chop": (
        "Store the chunks of a file as an existing index cuts it",
        "Reads FILE at the offsets INDEX gives, checks that each piece hashes to its\n"
        "chunk id, and writes the chunks the store (-s) lacks. Neither FILE nor INDEX\n"
        "is changed. INDEX may be '-' (standard input).",
        "pycasync chop -s /srv/store image.caibx image.raw",
    ),
    "cache": (
        "Copy the chunks of indexes from stores into another store",
        "Collects the chunk ids of every INDEX and copies the chunks the target store\n"
        "(-c) lacks from the source stores (-s, tried in order), without assembling\n"
        "any blob. Use it to fill a cache or to replicate a store. One INDEX may be\n"
        "'-' (standard input).",
        "pycasync cache -s /mnt/store -c /var/cache/store a.caibx b.caibx",
    ),
    "prune": (
        "Delete the chunks of a store that no index references",
        "Collects the chunk ids of every INDEX and deletes every other chunk from the\n"
        "store (-s). This cannot be undone, so it asks first unless -y is given. One\n"
        "INDEX may be '-' (standard input), with -y.",
        "pycasync prune -s /srv/store -y current.caibx previous.caibx",
    ),
    "config": (
        "Show or write the configuration",
        "Prints the effective configuration (defaults, and the values of the config\n"
        "file) as JSON, with every secret (http-auth, http-cookie, S3 keys) shown as\n"
        "\"***\". With -w it is written, secrets intact, to the config file instead:\n"
        "--config FILE, or $HOME/.config/desync/config.json.",
        "pycasync config\n"
        "pycasync --config ./desync.json config -w",
    ),
    "pull": (
        "Serve chunks over stdin/stdout with casync's remote protocol",
        "The server side of ssh:// stores: casync and desync clients run\n"
        "'ssh HOST casync pull - - - STORE' (set CASYNC_REMOTE_PATH=pycasync on the\n"
        "client to get this command instead). Chunks of the WSTORE and RSTORE\n"
        "arguments ('-' for none) are served read-only, tried in order; INDEX, when\n"
        "not '-', is the index file a client may ask for. --log-level and\n"
        "--rate-limit-bps, which casync passes before the command, are accepted.",
        "pycasync pull - - - /srv/store\n"
        "CASYNC_REMOTE_PATH=pycasync casync extract --store=host:/srv/store x.caibx x",
    ),
    "chunk-server": (
        "Serve a store over HTTP(S)",
        "Serves the chunks of the stores given with -s (tried in order, through an\n"
        "optional cache -c; remote stores make it a caching proxy) at\n"
        "/xxxx/<id>.cacnk, the layout casync's and desync's HTTP clients read.\n"
        "Read-only unless -w, which accepts PUT of chunks (verified against their\n"
        "id) into the single store. -u serves uncompressed chunks at /xxxx/<id>.\n"
        "With --cert and --key it serves HTTPS; --mutual-tls --client-ca FILE also\n"
        "requires client certificates signed by FILE. --mutual-tls or --client-ca\n"
        "without --cert/--key (or one without the other) is a usage error, never\n"
        "plain HTTP. --authorization works without TLS, as in desync, but its value\n"
        "is then sent in clear text. A client must send each request head within\n"
        "--head-timeout (one deadline, however slowly it trickles), may hold at most\n"
        "--max-client-connections connections per address (more are answered 503 at\n"
        "once), and when --max-connections are open the connection that has waited\n"
        "longest for its head is closed: a slowloris attack does not starve real\n"
        "clients. Stops cleanly on SIGTERM or SIGINT.",
        "pycasync chunk-server -s /srv/store -l :8080\n"
        "pycasync chunk-server -s http://upstream/store -c /var/cache/store -l 127.0.0.1:8080",
    ),
    "index-server": (
        "Serve index files over HTTP(S)",
        "Serves the index files of the index store -s (a local directory, or an\n"
        "http(s)://, sftp:// or s3+http(s):// location) at /<name>, the layout\n"
        "desync's HTTP index stores read. Read-only unless -w, which accepts PUT\n"
        "of indexes (checked to be valid indexes, stored atomically). The name is\n"
        "the last path segment, as desync takes it; '.', '..' and encoded '/' are\n"
        "refused. Only index files are served: names ending in .caibx or .caidx\n"
        "that are regular files (or links to them inside the directory); GET, HEAD\n"
        "or PUT of any other name is a 400. HTTPS, mutual TLS,\n"
        "--authorization, --log and the connection limits work as for chunk-server.",
        "pycasync index-server -s /srv/indexes -l :8080\n"
        "pycasync index-server -s /srv/indexes -w -l 127.0.0.1:8080",
    ),
    "mount-index": (
        "Mount an index as a read-only file (FUSE)",
        "Mounts the blob of INDEX at MOUNTPOINT as one read-only file named after\n"
        "the index without its extension (image.caibx -> MOUNTPOINT/image), without\n"
        "extracting it: reads fetch only the chunks they touch, from the stores -s\n"
        "through an optional cache -c, and keep recent chunks in memory. A chunk\n"
        "that cannot be read fails that read with EIO. Runs until unmounted\n"
        "('fusermount -u MOUNTPOINT') or stopped with SIGINT/SIGTERM. Needs the\n"
        "'fuse' extra (fusepy) and libfuse 2.",
        "pycasync mount-index -s /srv/store image.caibx /mnt/image\n"
        "pycasync mount-index -s s3+https://s3.example.com/bucket/store image.caibx /mnt/image",
    ),
    "upgrade-s3": (
        "Convert an S3 store from the old flat layout",
        "Moves the chunks of an S3 store written by desync before 2018 (objects named\n"
        "by the bare chunk id) to the layout every store uses now (xxxx/<id>.cacnk).\n"
        "Chunks already in the new layout are left alone, so it can be run again.",
        "pycasync upgrade-s3 -s s3+https://s3.example.com/bucket/store",
    ),
    "tar": (
        "Pack a directory tree into a catar archive or a caidx index",
        "Writes the tree under SOURCE as a catar archive with desync's feature set\n"
        "(byte for byte what casync make writes with the same --with options).\n"
        "With -i, the archive stream is chunked straight into the store (-s) and\n"
        "ARCHIVE is a .caidx index instead. With --input-format tar, SOURCE is a\n"
        "GNU/PAX/ustar tar stream ('-' for stdin) instead of a directory.",
        "pycasync tar backup.catar /etc\n"
        "pycasync tar -i -s /srv/store backup.caidx /etc\n"
        "tar -cf - /etc | pycasync tar --input-format tar etc.catar -",
    ),
    "untar": (
        "Unpack a catar archive or caidx index into a directory",
        "Restores the tree of ARCHIVE (with -i: of the caidx INDEX, whose chunks come\n"
        "from the stores -s through an optional cache -c) into TARGET: files,\n"
        "directories, symlinks, devices, fifos, sockets, permissions, owners (as\n"
        "root, unless --no-same-owner), nanosecond times and xattrs. Entries can\n"
        "never be written outside TARGET. With --output-format gnu-tar, a GNU tar\n"
        "stream is written to TARGET ('-' for stdout) instead.",
        "pycasync untar backup.catar /tmp/etc\n"
        "pycasync untar -i -s /srv/store backup.caidx /tmp/etc",
    ),
    "mtree": (
        "Print a catar, caidx or directory in mtree format",
        "Lists every entry of SOURCE (a catar archive, with -i a caidx index whose\n"
        "chunks come from -s/-c, or a directory) in mtree(5) format, as desync does.",
        "pycasync mtree backup.catar\n"
        "pycasync mtree -i -s /srv/store backup.caidx",
    ),
}


def _add_global_flags(p: _Parser, top: bool) -> None:
    """Flags accepted before and after the command (defaults live on the top parser only)."""

    def dflt(value: object) -> object:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument("--config", metavar="FILE", default=dflt(None),
                   help="config file (default $HOME/.config/desync/config.json)")
    g.add_argument("--digest", metavar="ALG", default=dflt("sha512-256"),
                   help="digest for new chunk ids: sha512-256 (default) or sha256")
    g.add_argument("-v", "--verbose", action="store_true", default=dflt(False),
                   help="log what happens, and show tracebacks of errors")


def _add_store_flags(p: _Parser, cache_repair: bool = False) -> None:
    """desync's common store options (command-line values override the config file)."""
    g = p.add_argument_group("store options")
    _add_concurrency(g)
    g.add_argument("--client-cert", metavar="FILE", help="client certificate for TLS authentication")
    g.add_argument("--client-key", metavar="FILE", help="client key for TLS authentication")
    g.add_argument("--ca-cert", metavar="FILE", help="trust the authorities in FILE instead of the system's")
    g.add_argument("-t", "--trust-insecure", action="store_true", default=None,
                   help="trust invalid TLS certificates")
    g.add_argument("-e", "--error-retry", type=_nonnegative_int, metavar="N",
                   help="how often to retry a failed network request (default 3)")
    g.add_argument("-b", "--error-retry-base-interval", type=_duration, metavar="DURATION",
                   help="delay before the first retry, growing with each (default 500ms)")
    if cache_repair:
        g.add_argument("-r", "--cache-repair", action="store_true",
                       help="replace damaged chunks in the cache from the store (always on)")


def _add_concurrency(p: Any) -> None:
    p.add_argument("-n", "--concurrency", type=_positive_int, metavar="N",
                   help="number of worker threads (default: a few per CPU)")


def _add_stores(p: _Parser, many: bool, text: str) -> None:
    if many:  # -s a -s b, or -s a,b as in desync
        p.add_argument("-s", "--store", action="extend", type=_store_list, default=[], metavar="LOCATION",
                       help=text + " (repeatable; tried in order)")
    else:
        p.add_argument("-s", "--store", metavar="LOCATION", help=text)


def _add_chunking(p: _Parser, compression: bool) -> None:
    p.add_argument("-m", "--chunk-size", default="16:64:256", metavar="MIN:AVG:MAX",
                   help="chunk sizes in KiB (default 16:64:256)")
    if compression:
        _add_compression(p)


def _add_compression(p: _Parser) -> None:
    p.add_argument("--compression", choices=COMPRESSIONS, default="zstd",
                   help="compression of chunks written to the store (default zstd)")


def _store_list(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def _command(sub: Any, name: str, *positionals: tuple[str, str]) -> _Parser:
    summary, text, examples = _DOCS[name]
    p: _Parser = sub.add_parser(name, help=summary, description=f"{summary}.\n\n{text}",
                                epilog="examples:\n  " + examples.replace("\n", "\n  "))
    for arg, arg_help in positionals:
        if arg.endswith("..."):
            p.add_argument(arg[:-3], nargs="+", help=arg_help)
        else:
            p.add_argument(arg, help=arg_help)
    _add_global_flags(p, top=False)
    return p


def _build_commands(sub: Any) -> None:
    index_in = ("index", "index file ('-' for stdin)")
    index_out = ("index", "index file to write ('-' for stdout)")
    p = _command(sub, "make", index_out, ("file", "input file ('-' for stdin)"))
    _add_stores(p, False, "store to write the chunks to")
    _add_chunking(p, compression=True)
    p.add_argument("--print-stats", action="store_true", help="print statistics as JSON to stderr")
    _add_store_flags(p)

    p = _command(sub, "extract", index_in, ("output", "file or block device to write ('-' for stdout)"))
    _add_stores(p, True, "store to read chunks from")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
    p.add_argument("-k", "--in-place", action="store_true", help="write OUTPUT in place, keep it on error")
    p.add_argument("--print-stats", action="store_true", help="print statistics as JSON to stdout")
    _add_store_flags(p, cache_repair=True)

    _add_store_flags(_command(sub, "list-chunks", index_in))

    p = _command(sub, "info", index_in)
    _add_stores(p, True, "store to count chunks in")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="cache store to count chunks in")
    p.add_argument("--seed", action="append", default=[], metavar="INDEX", help="seed index (repeatable)")
    p.add_argument("-f", "--format", choices=("json", "plain"), default="json", help="output format")
    p.add_argument("-j", "--json", dest="format", action="store_const", const="json", help="same as -f json")
    _add_store_flags(p)

    p = _command(sub, "chunk", ("file", "input file"))
    p.add_argument("-S", "--start", type=_nonnegative_int, default=0, metavar="OFFSET",
                   help="start chunking at this byte offset")
    _add_chunking(p, compression=False)
    _add_concurrency(p)

    p = _command(sub, "verify")
    _add_stores(p, False, "store to verify")
    p.add_argument("-r", "--repair", action="store_true", help="delete damaged chunks")
    _add_store_flags(p)

    p = _command(sub, "chop", index_in, ("file", "the blob the index describes"))
    _add_stores(p, False, "store to write the chunks to")
    _add_compression(p)
    _add_store_flags(p)

    p = _command(sub, "cache", ("index...", "index files ('-' for stdin)"))
    _add_stores(p, True, "source store")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="target store")
    _add_compression(p)
    _add_store_flags(p, cache_repair=True)

    p = _command(sub, "prune", ("index...", "index files whose chunks are kept"))
    _add_stores(p, False, "store to prune")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _add_store_flags(p)

    p = _command(sub, "config")
    p.add_argument("-w", "--write", action="store_true", help="write the configuration to the config file")
    _build_network_commands(sub)
    _build_archive_commands(sub)


def _add_pull_flags(p: Any, top: bool) -> None:
    """The options casync's client passes to the remote command, before or after ``pull``."""
    dflt = None if top else argparse.SUPPRESS
    p.add_argument("--log-level", metavar="LEVEL", default=dflt,
                   help="casync's log level (accepted, for pull)")
    p.add_argument("--rate-limit-bps", type=_nonnegative_int, metavar="N", default=dflt,
                   help="limit pull's sending rate to N bytes per second")


def _build_network_commands(sub: Any) -> None:
    p = _command(sub, "pull", ("base", "'-' (casync's base path)"), ("archive", "archive file or '-'"),
                 ("index", "index file a client may fetch, or '-'"), ("wstore", "chunk store, or '-'"))
    p.add_argument("rstore", nargs="*", help="more chunk stores, tried in order")
    _add_pull_flags(p, top=False)

    p = _command(sub, "chunk-server")
    _add_stores(p, True, "store to serve chunks from")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
    _add_server_flags(p, "chunks")
    p.add_argument("-u", "--uncompressed", action="store_true", help="serve uncompressed chunks")
    p.add_argument("--skip-verify-read", nargs="?", const=True, default=None, type=_bool_value,
                   metavar="BOOL", help="do not verify chunks read from the stores; as in desync, compressed "
                   "chunks are served as stored unless this is false (then a chunk that does not decode "
                   "to its id gets a 500); -u and cache fills verify unless this is true")
    for flag in ("--skip-verify-write", "--store-file", "--encryption", "--encryption-key",
                 "--encryption-algorithm"):  # desync's; PUTs are always verified here
        p.add_argument(flag, nargs="?", action=_NotSupported, help=argparse.SUPPRESS)
    _add_store_flags(p)


    p = _command(sub, "index-server")
    _add_stores(p, False, "index store to serve (a directory or a URL)")
    _add_server_flags(p, "indexes")
    _add_store_flags(p)

    p = _command(sub, "mount-index", ("index", "index file or URL"), ("mountpoint", "directory to mount on"))
    _add_stores(p, True, "store to read chunks from")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
    for flag in ("--store-file", "--cor-file", "--cor-state-save", "--cor-state-init", "--cor-init-n",
                 "--sparse-file"):  # desync's copy-on-read options
        p.add_argument(flag, nargs="?", action=_NotSupported, help=argparse.SUPPRESS)
    _add_store_flags(p, cache_repair=True)

    p = _command(sub, "upgrade-s3")
    _add_stores(p, False, "S3 store to convert (s3+http(s)://host/bucket/prefix)")
    _add_store_flags(p)


def _add_server_flags(p: _Parser, what: str) -> None:
    """Listening, TLS, authorization and logging flags of chunk-server and index-server."""
    p.add_argument("-l", "--listen", action="append", metavar="ADDRESS",
                   help="listen address, e.g. :8080 or 127.0.0.1:8080 (repeatable; default :http)")
    p.add_argument("-w", "--writable", "--writeable", action="store_true",
                   help=f"accept {what} by PUT" + (" (only with a single store)" if what == "chunks" else ""))
    p.add_argument("--cert", metavar="FILE", help="server certificate (PEM) for HTTPS, needs --key")
    p.add_argument("--key", metavar="FILE", help="server key (PEM) for HTTPS, needs --cert")
    p.add_argument("--mutual-tls", action="store_true",
                   help="require a client certificate signed by --client-ca (needs --cert and --key)")
    p.add_argument("--client-ca", metavar="FILE",
                   help="authorities that sign client certificates (needs --mutual-tls, --cert, --key)")
    p.add_argument("--authorization", metavar="VALUE",
                   help="required value of the Authorization header (default $DESYNC_HTTP_AUTH); allowed "
                   "without TLS as in desync, but then sent in clear text without --cert/--key")
    p.add_argument("--log", metavar="FILE", help="request log file ('-' for stdout)")
    g = p.add_argument_group("connection limits (against slow or greedy clients)")
    g.add_argument("--head-timeout", type=_positive_duration, default=20.0, metavar="DURATION",
                   help="time a client has to send a complete request head, from its connection (or a "
                   "later request's first byte); trickling bytes does not extend it (default 20s)")
    g.add_argument("--idle-timeout", type=_positive_duration, default=60.0, metavar="DURATION",
                   help="time a keep-alive connection may wait for its next request, and each read of "
                   "a body may wait (default 60s)")
    g.add_argument("--max-connections", type=_positive_int, default=512, metavar="N",
                   help="open connections in all; when all are taken, the one waiting longest for its "
                   "request head is closed (default 512)")
    g.add_argument("--max-client-connections", type=_positive_int, default=64, metavar="N",
                   help="open connections per client address (IPv4 address, IPv6 /64); more are "
                   "answered 503 and closed at once (default 64)")


def _build_archive_commands(sub: Any) -> None:
    p = _command(sub, "tar", ("archive", "catar file, or caidx with -i ('-' for stdout without -i)"),
                 ("source", "directory, or tar stream with --input-format tar ('-' for stdin)"))
    p.add_argument("-i", "--index", action="store_true", help="write a caidx index and chunks, not a catar")
    _add_stores(p, False, "store to write the chunks to (with -i)")
    _add_chunking(p, compression=True)
    p.set_defaults(chunk_size=None, compression=None)  # given only with -i
    p.add_argument("--input-format", choices=("disk", "tar"), default="disk", help="what SOURCE is")
    p.add_argument("--no-time", action="store_true", help="record all times as zero")
    p.add_argument("--tar-add-root", action="store_true",
                   help="put the members of a tar stream under a common root directory")
    p.add_argument("-x", "--one-file-system", action="store_true", help="do not cross file system boundaries")
    _add_store_flags(p)

    p = _command(sub, "untar", ("archive", "catar file, or caidx with -i ('-' for stdin)"),
                 ("target", "directory to fill, or tar file with --output-format gnu-tar ('-' for stdout)"))
    _add_archive_input(p)
    p.add_argument("--no-same-owner", action="store_true", help="do not restore owners (as root)")
    p.add_argument("--no-same-permissions", action="store_true", help="apply the umask to permissions")
    p.add_argument("--output-format", choices=("disk", "gnu-tar"), default="disk", help="what TARGET is")
    _add_store_flags(p, cache_repair=True)

    p = _command(sub, "mtree", ("source", "catar file, caidx with -i, or a directory"))
    _add_archive_input(p)
    _add_store_flags(p)


def _add_archive_input(p: _Parser) -> None:
    p.add_argument("-i", "--index", action="store_true", help="read a caidx index, not a catar")
    _add_stores(p, True, "store to read chunks from (with -i)")
    p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache (with -i)")


def build_parser() -> _Parser:
    """The complete argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Chunk files into content-addressed stores and rebuild them from indexes,\n"
        "compatible with casync and desync (blob indexes .caibx and chunk stores).\n\n"
        "Store locations (-s, -c) are local directories (or file:// URLs),\n"
        "http(s)://host/path/ chunk servers, ssh://[user@]host[:port]/path,\n"
        "sftp://[user@]host[:port]/path, s3+http(s)://host[:port]/bucket/prefix,\n"
        "and failover groups of those joined by '|'. Index arguments may be local\n"
        "files or http(s)://, sftp:// and s3+http(s):// URLs.",
        epilog="Run 'pycasync COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print version and backends, then exit")
    _add_global_flags(parser, top=True)
    _add_pull_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    _build_commands(sub)
    parser.commands = dict(sub.choices)
    return parser


# --------------------------------------------------------------------------- argv rewriting

#: Old (Go ``flag`` package) names that are not just camelCase spellings of the new ones.
_RENAMED = {"stats": "print-stats"}
#: Old long flags that this version has no equivalent for (reported, not misparsed as -s eed).
_OLD_UNSUPPORTED = {"seed", "seed-dir", "cert", "key", "ignore", "ignore-chunks", "chunks-info"}
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def _modern(token: str, parser: _Parser, everywhere: set[str]) -> list[str]:
    """The GNU form of one option token, for ``parser`` (the command's)."""
    body = token[2:] if token.startswith("--") else token[1:]
    name, eq, value = body.partition("=")
    if not token.startswith("--") and len(name) == 1:
        if eq and parser.option_arity.get("-" + name):  # Go style -s=value
            return ["-" + name, value]
        return [token]
    if token.startswith("--") and token.split("=", 1)[0] in parser.option_arity:
        return [token]
    candidates = [_RENAMED.get(name, ""), _CAMEL.sub(lambda m: "-" + m.group(1).lower(), name), name]
    for cand in candidates:
        if cand and "--" + cand in parser.option_arity:
            return ["--" + cand + eq + value]
    if not token.startswith("--") and any(
        c in _OLD_UNSUPPORTED or "--" + c in everywhere for c in candidates if c
    ):
        raise UsageError(f"option {token.split('=', 1)[0]} is not supported (see '{parser.prog} --help')")
    return [token]


def rewrite_argv(argv: Sequence[str], parser: _Parser | None = None) -> list[str]:
    """Rewrite old desync spellings (``-clientCert x``, ``-stats``, ``-s=x``) to GNU ones.

    Values of options are never rewritten, and nothing after ``--`` is.
    """
    parser = parser or build_parser()
    everywhere = set(parser.option_arity).union(*(p.option_arity for p in parser.commands.values()))
    out: list[str] = []
    current, i = parser, 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            out.extend(argv[i - 1 :])
            break
        if current is parser and token in parser.commands:
            current = parser.commands[token]
            out.append(token)
            continue
        if not token.startswith("-") or token == "-":
            out.append(token)
            continue
        new = _modern(token, current, everywhere)
        out.extend(new)
        if len(new) == 1 and "=" not in new[0] and current.option_arity.get(new[0]) and i < len(argv):
            out.append(argv[i])  # the option's value, verbatim
            i += 1
    return out


# --------------------------------------------------------------------------- running


class _Failure(CasyncError):
    """A command that ran but did not succeed (exit status 1)."""


class _Context:
    """What every command needs: the arguments, the config, the digest, a progress bar."""

    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        from casync_store.plumbing.progress import make_progress

        self.args = args
        self.config = config
        self.digest: Digest = digest_by_name(args.digest)
        self.progress = make_progress(True)
        self.concurrency: int | None = getattr(args, "concurrency", None)
        #: chunk-server's --skip-verify-read, over the config's skip-verify
        self.skip_verify: bool | None = None
        if (getattr(args, "client_cert", None) is None) != (getattr(args, "client_key", None) is None):
            raise ParameterError("--client-cert and --client-key must be given together")

    def options_for(self, location: str) -> StoreOptions:
        """The config file's options for ``location`` with command-line flags on top."""
        changes = {
            name: getattr(self.args, name)
            for name in ("client_cert", "client_key", "ca_cert", "error_retry", "error_retry_base_interval")
            if getattr(self.args, name, None) is not None
        }
        if getattr(self.args, "trust_insecure", None):
            changes["trust_insecure"] = True
        if self.concurrency:
            changes["concurrency"] = self.concurrency
        if self.skip_verify is not None:
            changes["skip_verify"] = self.skip_verify
        return self.config.store_options_for(location).replace(**changes)

    def open(
        self, stack: contextlib.ExitStack, location: str, writable: bool = False, must_exist: bool = False
    ) -> Any:
        """Open a store (closed when ``stack`` unwinds); writable ones get --compression."""
        store = stack.enter_context(
            open_store(location, writable=writable, options_for=self.options_for, must_exist=must_exist)
        )
        if writable and getattr(self.args, "compression", None):
            store.compression = self.args.compression  # type: ignore[attr-defined]  # writable stores have it
        return store

    def indexes(self, stack: contextlib.ExitStack, paths: Sequence[str]) -> list[Any]:
        """Open index files (``-`` = stdin, at most once), closed when ``stack`` unwinds."""
        from casync_store.stores.indexio import open_index

        if list(paths).count("-") > 1:
            raise ParameterError("standard input ('-') can be only one of the indexes")
        return [stack.enter_context(open_index(p, options_for=self.options_for)) for p in paths]


def _print_json(data: object, stream: Any = None) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(data, indent=2) + "\n")
    stream.flush()


def _require(value: object, message: str) -> None:
    if not value:
        raise ParameterError(message)


def cmd_make(ctx: _Context) -> int:
    """``make``: chunk a file, write the index, store the chunks."""
    from casync_format.chunker import ChunkerParams
    from casync_store.ops.make import make

    a = ctx.args
    params = ChunkerParams.from_string(a.chunk_size)
    with contextlib.ExitStack() as stack:
        store = ctx.open(stack, a.store, writable=True) if a.store else None
        stats = make(a.index, a.file, store, params=params, digest=ctx.digest, concurrency=ctx.concurrency,
                     compression=a.compression, progress=ctx.progress, options_for=ctx.options_for)
    if a.print_stats:  # stderr: stdout may be carrying the index
        _print_json(stats.to_dict(), sys.stderr)
    return 0


def cmd_extract(ctx: _Context) -> int:
    """``extract``: rebuild a blob from an index and stores."""
    from casync_store.ops.extract import extract
    from casync_store.stores.router import combine

    a = ctx.args
    if same_file(a.index, a.output):
        raise ParameterError("the index and the output are the same file")
    _require(a.store, "no store given (use -s)")
    with contextlib.ExitStack() as stack:
        stores = [ctx.open(stack, loc) for loc in a.store]
        store = combine(stores, ctx.open(stack, a.cache, writable=True) if a.cache else None)
        (index,) = ctx.indexes(stack, [a.index])
        stats = extract(index, a.output, store, concurrency=ctx.concurrency, in_place=a.in_place,
                        progress=ctx.progress)
    if a.print_stats:
        _print_json(stats.to_dict(), sys.stderr if a.output == "-" else sys.stdout)
    return 0


def cmd_list_chunks(ctx: _Context) -> int:
    """``list-chunks``: one chunk id per line."""
    from casync_store.ops.info import list_chunks

    with contextlib.ExitStack() as stack:
        (index,) = ctx.indexes(stack, [ctx.args.index])
        write = sys.stdout.write
        for hex_id in list_chunks(index):
            write(hex_id + "\n")
    return 0


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
]


def cmd_info(ctx: _Context) -> int:
    """``info``: facts about an index, as JSON or plain text."""
    from casync_store.ops.info import index_info

    a = ctx.args
    with contextlib.ExitStack() as stack:
        stores = [ctx.open(stack, loc, must_exist=True) for loc in a.store]
        cache = ctx.open(stack, a.cache, must_exist=True) if a.cache else None
        (index,) = ctx.indexes(stack, [a.index])
        seeds = ctx.indexes(stack, a.seed)
        stats = index_info(index, stores=stores, concurrency=ctx.concurrency, seeds=seeds, cache=cache)
    data = stats.to_dict()
    if a.format == "json":
        _print_json(data)
    else:
        sys.stdout.write("".join(f"{label}: {data[key]}\n" for key, label in _PLAIN_INFO if key in data))
    return 0


def cmd_chunk(ctx: _Context) -> int:
    """``chunk``: print start, size and id of every chunk of a file."""
    from casync_format.chunker import ChunkerParams
    from casync_store.ops.info import chunk_file

    a = ctx.args
    params = ChunkerParams.from_string(a.chunk_size)
    write = sys.stdout.write
    for start, size, chunk_id in chunk_file(a.file, params, ctx.digest, ctx.concurrency, start=a.start):
        write(f"{start}\t{size}\t{chunk_id.hex()}\n")
    return 0


def cmd_verify(ctx: _Context) -> int:
    """``verify``: check every chunk of a store; 1 when damaged chunks remain."""
    from casync_store.ops.maintain import verify_store

    a = ctx.args
    _require(a.store, "no store given (use -s)")
    with contextlib.ExitStack() as stack:
        stats = verify_store(ctx.open(stack, a.store), ctx.digest, repair=a.repair,
                             concurrency=ctx.concurrency, progress=ctx.progress)
    for chunk_id in stats.invalid:
        print(f"chunk {chunk_id.hex()} is invalid" + (": removed" if a.repair else ""), file=sys.stderr)
    log.info("checked %d chunk(s)", stats.checked)
    if stats.invalid and not a.repair:
        raise _Failure(f"{len(stats.invalid)} invalid chunk(s) in store {a.store} (-r removes them)")
    return 0


def cmd_chop(ctx: _Context) -> int:
    """``chop``: store a file's chunks as cut by an existing index."""
    from casync_store.ops.chop import chop

    a = ctx.args
    _require(a.store, "no target store given (use -s)")
    with contextlib.ExitStack() as stack:
        store = ctx.open(stack, a.store, writable=True)
        (index,) = ctx.indexes(stack, [a.index])
        chop(index, a.file, store, concurrency=ctx.concurrency, progress=ctx.progress)
    return 0


def cmd_cache(ctx: _Context) -> int:
    """``cache``: copy the chunks of indexes into a target store."""
    from casync_store.ops.maintain import fill_cache
    from casync_store.stores.router import combine

    a = ctx.args
    _require(a.store, "no source store given (use -s)")
    _require(a.cache, "no target store given (use -c)")
    with contextlib.ExitStack() as stack:
        source = combine([ctx.open(stack, loc) for loc in a.store])
        target = ctx.open(stack, a.cache, writable=True)
        indexes = ctx.indexes(stack, a.index)
        fill_cache(indexes, source, target, concurrency=ctx.concurrency, progress=ctx.progress)
    return 0


def _confirm(question: str) -> bool:
    """Ask on stderr and read y/N from stdin; end of input is an error."""
    while True:
        sys.stderr.write(question + " [y/N]: ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            sys.stderr.write("\n")
            raise _Failure("no answer on standard input (-y skips the question)")
        if line.strip() in ("y", "Y", "yes"):
            return True
        if line.strip() in ("", "n", "N", "no"):
            return False


def cmd_prune(ctx: _Context) -> int:
    """``prune``: delete the chunks of a store no given index references."""
    from casync_store.ops.maintain import prune_store
    from casync_store.stores.base import require_prunable

    a = ctx.args
    _require(a.store, "no store given (use -s)")
    if "-" in a.index and not a.yes:
        raise ParameterError("an index on standard input needs -y (stdin cannot also answer the question)")
    with contextlib.ExitStack() as stack:
        store = require_prunable(ctx.open(stack, a.store))
        indexes = ctx.indexes(stack, a.index)
        question = f"Delete every chunk of store {a.store} that the {len(indexes)} index(es) do not use?"
        if not a.yes and not _confirm(question):
            sys.stderr.write("Nothing deleted.\n")
            return 0
        removed = prune_store(store, indexes)
    log.info("removed %d chunk(s)", removed)
    return 0


def cmd_config(ctx: _Context) -> int:
    """``config``: print or write the effective configuration."""
    from casync_store.plumbing.atomic import write_file_atomic

    if not ctx.args.write:  # shown: secrets as "***"; written: the real values
        sys.stdout.write(ctx.config.dumps(redact=True))
        return 0
    text = ctx.config.dumps()
    path = ctx.config.path
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_file_atomic(path, text.encode("utf-8"), mode=0o600)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    print(f"Wrote the configuration to {path}")
    return 0


def cmd_pull(ctx: _Context) -> int:
    """``pull``: serve chunks (and an index) to a casync/desync client on stdin/stdout."""
    from casync_store.serve.pull import serve

    a = ctx.args
    locations = [loc for loc in (a.wstore, *a.rstore) if loc != "-"]
    with contextlib.ExitStack() as stack:
        stores = [ctx.open(stack, loc, must_exist=True) for loc in locations]
        serve(sys.stdin.buffer, sys.stdout.buffer, stores,
              index_path=None if a.index == "-" else a.index,
              archive_path=None if a.archive == "-" else a.archive,
              rate_limit_bps=a.rate_limit_bps or None)
    return 0


def cmd_chunk_server(ctx: _Context) -> int:
    """``chunk-server``: serve stores over HTTP(S) until SIGTERM/SIGINT."""
    from casync_store.serve.chunkserver import serve_chunks
    from casync_store.stores.router import combine

    a = ctx.args
    _require(a.store, "no store given (use -s)")
    if a.writable and (len(a.store) > 1 or a.cache):
        raise ParameterError("-w needs exactly one store and no cache")
    tls = _server_tls(a)
    if a.skip_verify_read is not None:
        ctx.skip_verify = a.skip_verify_read
    with contextlib.ExitStack() as stack:
        stores = [ctx.open(stack, loc, writable=a.writable, must_exist=True) for loc in a.store]
        store = combine(stores, ctx.open(stack, a.cache, writable=True) if a.cache else None)
        ready = _log_addresses(store)
        serve_chunks(store, a.listen or [":http"], digest=ctx.digest, writable=a.writable,
                     uncompressed=a.uncompressed, tls=tls, authorization=_authorization(a), log=a.log,
                     ready=ready, verify=a.skip_verify_read is False, limits=_server_limits(a))
    return 0


def _server_tls(a: argparse.Namespace) -> Any:
    """The TLSOptions of --cert/--key/--mutual-tls/--client-ca (None for plain HTTP).

    As desync's servers do, every combination that would quietly serve less
    than asked (a client CA or mutual TLS without a certificate, a client CA
    that nothing checks, mutual TLS trusting any CA) is a usage error, and so
    is an empty file name or an empty --authorization.
    """
    from casync_store.serve.httpserver import TLSOptions

    for flag, value in (("--cert", a.cert), ("--key", a.key), ("--client-ca", a.client_ca)):
        if value is not None and not value.strip():
            raise ParameterError(f"{flag} needs a file name, got an empty one")
    if getattr(a, "authorization", None) is not None and not a.authorization.strip():
        raise ParameterError("--authorization is empty: give the required Authorization header value")
    if (a.cert is None) != (a.key is None):
        raise ParameterError("--cert and --key must be given together")
    if a.cert is None:
        if a.mutual_tls:
            raise ParameterError("--mutual-tls needs --cert and --key (TLS must be enabled)")
        if a.client_ca is not None:
            raise ParameterError("--client-ca needs --cert and --key (TLS must be enabled)")
        return None
    if a.mutual_tls and a.client_ca is None:
        raise ParameterError("--mutual-tls needs --client-ca (the authorities that sign client certificates)")
    if a.client_ca is not None and not a.mutual_tls:
        raise ParameterError("--client-ca needs --mutual-tls (otherwise client certificates are not checked)")
    return TLSOptions(a.cert, a.key, client_ca=a.client_ca, mutual=a.mutual_tls)


def _server_limits(a: argparse.Namespace) -> Any:
    """The Limits of --head-timeout, --idle-timeout, --max-connections, --max-client-connections."""
    from casync_store.serve.httpserver import Limits

    return Limits(head_timeout=a.head_timeout, idle_timeout=a.idle_timeout, io_timeout=a.idle_timeout,
                  max_connections=a.max_connections, max_client_connections=a.max_client_connections)


def _authorization(a: argparse.Namespace) -> str | None:
    """--authorization, else $DESYNC_HTTP_AUTH as desync's servers read it."""
    return a.authorization or os.environ.get("DESYNC_HTTP_AUTH") or None


def _log_addresses(what: object) -> Callable[[list[tuple[str, int]]], None]:
    def ready(addresses: list[tuple[str, int]]) -> None:
        for host, port in addresses:
            log.info("serving %s on %s:%d", what, host, port)

    return ready


def cmd_index_server(ctx: _Context) -> int:
    """``index-server``: serve an index store over HTTP(S) until SIGTERM/SIGINT."""
    from casync_store.serve.indexserver import serve_indexes
    from casync_store.stores.indexstore import LocalIndexStore, WriteIndexStore, open_index_store

    a = ctx.args
    _require(a.store, "no index store given (use -s)")
    tls = _server_tls(a)
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(open_index_store(a.store, ctx.options_for))
        if isinstance(store, LocalIndexStore) and not os.path.isdir(store.path):
            raise StoreError(f"index store {a.store} is not a directory")
        if a.writable and not isinstance(store, WriteIndexStore):
            raise ParameterError(f"index store {a.store} is read-only: -w cannot be used")
        serve_indexes(store, a.listen or [":http"], writable=a.writable, tls=tls,
                      authorization=_authorization(a), log=a.log, ready=_log_addresses(store),
                      limits=_server_limits(a))
    return 0


def cmd_mount_index(ctx: _Context) -> int:
    """``mount-index``: a blob as a read-only FUSE file until unmounted."""
    from casync_store.ops.mount import mount_index, mount_name
    from casync_store.stores.router import combine

    a = ctx.args
    _require(a.store, "no store given (use -s)")
    if not os.path.isdir(a.mountpoint):
        raise ParameterError(f"mount point {a.mountpoint} is not a directory")
    if os.listdir(a.mountpoint):  # libfuse would refuse it with two lines of its own
        raise ParameterError(f"mount point {a.mountpoint} is not empty")
    with contextlib.ExitStack() as stack:
        stores = [ctx.open(stack, loc, must_exist=True) for loc in a.store]
        store = combine(stores, ctx.open(stack, a.cache, writable=True) if a.cache else None)
        (index,) = ctx.indexes(stack, [a.index])
        mtime = os.stat(a.index).st_mtime if os.path.isfile(a.index) else None
        mount_index(index, store, a.mountpoint, mount_name(a.index), mtime=mtime,
                    ready=lambda path: log.info("mounted %s", path))
    return 0


def cmd_upgrade_s3(ctx: _Context) -> int:
    """``upgrade-s3``: move an S3 store's chunks from the flat layout to xxxx/<id>.cacnk."""
    from casync_store.stores.s3 import S3Store, upgrade_s3

    a = ctx.args
    _require(a.store, "no store given (use -s)")
    with contextlib.ExitStack() as stack:
        store = ctx.open(stack, a.store)
        if not isinstance(store, S3Store):
            raise ParameterError(f"store {a.store} is not an S3 store (s3+http(s)://host/bucket/prefix)")
        moved = upgrade_s3(store, progress=ctx.progress)
    log.info("converted %d chunk(s)", moved)
    return 0


def cmd_tar(ctx: _Context) -> int:
    """``tar``: a directory tree or tar stream into a catar, or a caidx and chunks."""
    from casync_format.chunker import ChunkerParams
    from casync_store.ops import tar, tarstream

    a = ctx.args
    if a.index:
        _require(a.store, "-i needs a store to write the chunks to (use -s)")
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
    with contextlib.ExitStack() as stack:
        source: Any = a.source
        if a.input_format == "tar":
            source = sys.stdin.buffer if a.source == "-" else stack.enter_context(open(a.source, "rb"))
        if not a.index:
            make_archive: Callable[..., Any] = (
                tarstream.tar_from_tarstream if a.input_format == "tar" else tar.tar
            )
            stats = make_archive(source, a.archive, **common)
        else:
            store = ctx.open(stack, a.store, writable=True)
            convert: Callable[..., Any] = (
                tarstream.tar_index_from_tarstream if a.input_format == "tar" else tar.tar_index
            )
            params = ChunkerParams.from_string(a.chunk_size or "16:64:256")
            stats = convert(source, a.archive, store, params=params, digest=ctx.digest,
                            concurrency=ctx.concurrency, options_for=ctx.options_for, **common)
    log.info("%s", stats)
    return 0


def _archive_source(ctx: _Context, stack: contextlib.ExitStack) -> tuple[Any, Digest]:
    """The catar byte stream of ``untar``/``mtree`` (a file, stdin, or an index's
    chunks) and the digest of its chunks (an index's own, else --digest)."""
    from casync_format.index import index_path_kind
    from casync_store.ops.untar import index_reader
    from casync_store.stores.router import combine

    a = ctx.args
    if not a.index:
        if a.store or a.cache:
            raise ParameterError("-s and -c are only used with -i")
        if index_path_kind(a.archive):
            raise ParameterError(f"{a.archive} is an index, not a catar archive: use -i and -s STORE")
        if a.archive == "-":
            return sys.stdin.buffer, ctx.digest
        return stack.enter_context(open(a.archive, "rb")), ctx.digest
    _require(a.store, "-i needs a store to read the chunks from (use -s)")
    stores = [ctx.open(stack, loc) for loc in a.store]
    store = combine(stores, ctx.open(stack, a.cache, writable=True) if a.cache else None)
    (index,) = ctx.indexes(stack, [a.archive])
    return stack.enter_context(index_reader(index, store, concurrency=ctx.concurrency)), index.digest


def cmd_untar(ctx: _Context) -> int:
    """``untar``: a catar or caidx into a directory, or out as a GNU tar stream."""
    from casync_store.ops.untar import untar

    a = ctx.args
    if a.target == "-" and a.output_format != "gnu-tar":
        raise ParameterError("TARGET '-' (stdout) needs --output-format gnu-tar")
    with contextlib.ExitStack() as stack:
        source, _ = _archive_source(ctx, stack)
        if a.output_format == "gnu-tar":
            from casync_format.catar_read import iter_catar
            from casync_store.ops.tarstream import write_tarstream

            if a.target == "-":
                write_tarstream(iter_catar(source), sys.stdout.buffer)
            else:
                from casync_store.plumbing.atomic import atomic_write

                with atomic_write(a.target) as out:
                    write_tarstream(iter_catar(source), out)
            return 0
        stats = untar(source, a.target, no_same_owner=a.no_same_owner,
                      no_same_permissions=a.no_same_permissions)
    log.info("%s", stats)
    return 0


def cmd_mtree(ctx: _Context) -> int:
    """``mtree``: print a catar, caidx or directory in mtree format."""
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
            source, digest = _archive_source(ctx, stack)
            lines = mtree_archive(source, digest=digest)
        for line in lines:
            write(line + "\n")
    return 0


_COMMANDS: dict[str, Callable[[_Context], int]] = {
    "make": cmd_make,
    "extract": cmd_extract,
    "list-chunks": cmd_list_chunks,
    "info": cmd_info,
    "chunk": cmd_chunk,
    "verify": cmd_verify,
    "chop": cmd_chop,
    "cache": cmd_cache,
    "prune": cmd_prune,
    "config": cmd_config,
    "pull": cmd_pull,
    "chunk-server": cmd_chunk_server,
    "index-server": cmd_index_server,
    "mount-index": cmd_mount_index,
    "upgrade-s3": cmd_upgrade_s3,
    "tar": cmd_tar,
    "untar": cmd_untar,
    "mtree": cmd_mtree,
}


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) or "'' (empty path)" for n in (exc.filename, exc.filename2) if n is not None]
        return ": ".join([*names, exc.strerror]) if names else exc.strerror
    text = str(exc) or type(exc).__name__
    return " ".join(text.split("\n"))


def _report(exc: BaseException, status: int, verbose: bool, internal: bool = False) -> int:
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    prefix = f"internal error ({type(exc).__name__}): " if internal else ""
    hint = " (run with --verbose for details)" if internal and not verbose else ""
    sys.stderr.write(f"{PROG}: error: {prefix}{_message(exc)}{hint}\n")
    return status


#: Libraries whose debug logs carry request headers (S3 signatures and session
#: tokens, SSH details): kept at WARNING even with --verbose, so secrets stay out.
_QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "paramiko")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(argv: Sequence[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(rewrite_argv(argv, parser))
    if extra:  # reported by the command's parser, so the hint names its --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args.verbose)
    # `config -w` may create the file --config names; every other command needs it to exist.
    config = load_config(args.config, missing_ok=args.command == "config" and args.write)
    status = _COMMANDS[args.command](_Context(args, config))
    sys.stdout.flush()
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run pycasync with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Before the command (old single-dash spellings included) or after it.
    verbose = any(arg in ("-v", "--verbose", "-verbose") for arg in argv)
    try:
        return _run(argv)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `pycasync list-chunks x | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except ParameterError as exc:
        return _report(exc, EXIT_USAGE, verbose)
    except (CasyncError, OSError) as exc:
        return _report(exc, EXIT_FAILURE, verbose)
    except Exception as exc:  # a bug: still one line, the traceback with --verbose
        return _report(exc, EXIT_FAILURE, verbose, internal=True)


if __name__ == "__main__":
    sys.exit(main())
