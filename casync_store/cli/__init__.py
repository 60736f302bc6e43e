"""pycasync's command line: desync-compatible subcommands over casync_store.

The CLI only turns ``argv`` into a call: it parses the arguments (with
desync's command and flag names, and the old single-dash spellings of
pre-2018 desync rewritten to the GNU form first), reads the config file,
opens the stores, calls exactly one operation of :mod:`casync_store`, prints
its result, and maps exceptions to one line on stderr and an exit status:
0 success, 1 failure, 2 usage error, 130 interrupted.

Every command is one :class:`~casync_store.cli._common.Command` object (its
name, help, flags and call side by side) in one module per group:
:mod:`.blob` (make, extract, list-chunks, info, chunk, chop), :mod:`.store`
(verify, cache, prune, upgrade-s3), :mod:`.config`, :mod:`.serve` (pull,
chunk-server, index-server), :mod:`.mount` (mount-index), :mod:`.archive`
(tar, untar, mtree), :mod:`.inspect` (cat, verify-index, inspect-chunks) and
:mod:`.manpage`. :data:`REGISTRY` lists them in the order of
``pycasync --help``; a new command is a new ``Command`` subclass and one
line there. Nothing outside this package (and the ``pycasync.py`` entry
point) imports it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from casync_format.errors import CasyncError, ParameterError
from casync_store.plumbing.config import load_config

from . import archive, blob, config, inspect, manpage, mount, serve, store
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
    Context,
    add_global_flags,
    report,
    setup_logging,
)
from ._parser import PROG, Parser, UsageError, VersionAction, modernize_argv

__all__ = [
    "main",
    "build_parser",
    "rewrite_argv",
    "UsageError",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "Command",
    "REGISTRY",
    "COMMANDS",
]

#: Every command, in the order ``pycasync --help`` lists them.
REGISTRY: tuple[Command, ...] = (
    blob.Make(),
    blob.Extract(),
    blob.ListChunks(),
    blob.Info(),
    blob.Chunk(),
    store.Verify(),
    blob.Chop(),
    store.Cache(),
    store.Prune(),
    config.ConfigCommand(),
    serve.Pull(),
    serve.Push(),
    serve.ChunkServer(),
    serve.IndexServer(),
    mount.MountIndex(),
    store.UpgradeS3(),
    archive.Tar(),
    archive.Untar(),
    archive.Mtree(),
    inspect.Cat(),
    inspect.VerifyIndex(),
    inspect.InspectChunks(),
    manpage.Manpage(),
)

#: command name -> what runs it (a Command; tests may put another callable here)
COMMANDS: dict[str, Callable[[Context], int]] = {command.name: command for command in REGISTRY}

_DESCRIPTION = (
    "Chunk files into content-addressed stores and rebuild them from indexes,\n"
    "compatible with casync and desync (blob indexes .caibx and chunk stores).\n\n"
    "Store locations (-s, -c) are local directories (or file:// URLs),\n"
    "http(s)://host/path/ chunk servers, ssh://[user@]host[:port]/path,\n"
    "sftp://[user@]host[:port]/path, s3+http(s)://host[:port]/bucket/prefix,\n"
    "and failover groups of those joined by '|'. Index arguments may be local\n"
    "files or http(s)://, sftp:// and s3+http(s):// URLs."
)


def build_parser() -> Parser:
    """The complete argument parser: the top-level flags and every command's parser."""
    parser = Parser(prog=PROG, description=_DESCRIPTION,
                    epilog="Run 'pycasync COMMAND --help' for a command's options.")
    parser.add_argument("--version", action=VersionAction, help="print version and backends, then exit")
    add_global_flags(parser, top=True)
    for command in REGISTRY:
        command.add_top_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for command in REGISTRY:
        command.build_parser(sub)
    parser.commands = dict(sub.choices)
    return parser


def rewrite_argv(argv: Sequence[str], parser: Parser | None = None) -> list[str]:
    """Rewrite old desync spellings (``-clientCert x``, ``-stats``, ``-s=x``) to GNU ones.

    Values of options are never rewritten, and nothing after ``--`` is.
    """
    return modernize_argv(argv, parser or build_parser())


def _run(argv: Sequence[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(rewrite_argv(argv, parser))
    if extra:  # reported by the command's parser, so the hint names its --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(args.verbose)
    spec = next(command for command in REGISTRY if command.name == args.command)
    settings = load_config(args.config, missing_ok=spec.config_missing_ok(args))
    status = COMMANDS[args.command](Context(args, settings))
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
        return report(exc, EXIT_USAGE, verbose)
    except (CasyncError, OSError) as exc:
        return report(exc, EXIT_FAILURE, verbose)
    except Exception as exc:  # a bug: still one line, the traceback with --verbose
        return report(exc, EXIT_FAILURE, verbose, internal=True)
