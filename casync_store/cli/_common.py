"""What the CLI's commands share: the :class:`Command` shape, the option groups, the run context.

A command is a :class:`Command` subclass: its name and help texts, the flags
it adds (:meth:`Command.add_arguments`, built from the option groups below so
that every command spells desync's flags the same way) and its
:meth:`Command.run`, which gets a :class:`Context` (the parsed arguments, the
config, the digest, a progress bar, and helpers that open stores and indexes
with the config file's options under the command-line flags). Errors become
one line on stderr and an exit status (:func:`report`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from typing import Any, cast

from casync_format.compress import COMPRESSIONS
from casync_format.digest import Digest, digest_by_name
from casync_format.errors import CasyncError, ParameterError
from casync_store.plumbing.config import Config, StoreOptions
from casync_store.stores.base import WriteStore
from casync_store.stores.location import open_store

from ._parser import PROG, Parser, duration, nonnegative_int, positive_int

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "log",
    "Failure",
    "Command",
    "Context",
    "add_global_flags",
    "add_store_flags",
    "add_concurrency",
    "add_stores",
    "add_chunking",
    "add_compression",
    "print_json",
    "add_json",
    "require",
    "message",
    "report",
    "setup_logging",
]

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger(PROG)


class Failure(CasyncError):
    """A command that ran but did not succeed (exit status 1)."""


# --------------------------------------------------------------------------- option groups


def add_global_flags(p: Parser, top: bool) -> None:
    """Flags accepted before and after the command (defaults live on the top parser only)."""

    def dflt(value: object) -> object:
        return value if top else argparse.SUPPRESS

    g = p.add_argument_group("global options")
    g.add_argument("--config", metavar="FILE", default=dflt(None),
                   help="config file (default $HOME/.config/desync/config.json)")
    g.add_argument("--digest", metavar="ALG", default=dflt(None),
                   help="digest for new chunk ids: sha512-256 (default) or sha256")
    g.add_argument("-v", "--verbose", action="store_true", default=dflt(False),
                   help="log what happens, and show tracebacks of errors")


def add_store_flags(p: Parser, cache_repair: bool = True) -> None:
    """desync's common store options (command-line values override the config file).

    ``-r/--cache-repair`` comes with them (as in desync) unless ``cache_repair``
    is False or the command has a ``-r`` of its own (verify's ``--repair``).
    """
    g = p.add_argument_group("store options")
    add_concurrency(g)
    g.add_argument("--client-cert", metavar="FILE", help="client certificate for TLS authentication")
    g.add_argument("--client-key", metavar="FILE", help="client key for TLS authentication")
    g.add_argument("--ca-cert", metavar="FILE", help="trust the authorities in FILE instead of the system's")
    g.add_argument("-t", "--trust-insecure", action="store_true", default=None,
                   help="trust invalid TLS certificates")
    g.add_argument("-e", "--error-retry", type=nonnegative_int, metavar="N",
                   help="how often to retry a failed network request (default 3)")
    g.add_argument("-b", "--error-retry-base-interval", type=duration, metavar="DURATION",
                   help="delay before the first retry, growing with each (default 500ms)")
    if cache_repair and "-r" not in p.option_arity:
        g.add_argument("-r", "--cache-repair", action="store_true", default=True,
                       help="replace an invalid chunk in the cache (-c) from the store (default true; "
                            "--cache-repair=false: an invalid cached chunk is an error)")


def add_concurrency(p: Any) -> None:
    """``-n/--concurrency``."""
    p.add_argument("-n", "--concurrency", type=positive_int, metavar="N",
                   help="number of worker threads (default: a few per CPU)")


def add_stores(p: Parser, many: bool, text: str) -> None:
    """``-s/--store``: one location, or (``many``) a list tried in order."""
    if many:  # -s a -s b, or -s a,b as in desync
        p.add_argument("-s", "--store", action="append", default=[], metavar="LOCATION",
                       help=text + " (repeatable; tried in order)")
    else:
        p.add_argument("-s", "--store", metavar="LOCATION", help=text)


def add_chunking(p: Parser, compression: bool) -> None:
    """``-m/--chunk-size`` (and ``--compression``)."""
    p.add_argument("-m", "--chunk-size", default="16:64:256", metavar="MIN:AVG:MAX",
                   help="chunk sizes in KiB (default 16:64:256)")
    if compression:
        add_compression(p)


def add_compression(p: Parser) -> None:
    """``--compression`` of the chunks a command writes."""
    p.add_argument("--compression", choices=COMPRESSIONS, default="zstd",
                   help="compression of chunks written to the store (default zstd)")


# --------------------------------------------------------------------------- commands


class Command:
    """One subcommand: its name, its help, its flags and its call, side by side.

    Subclasses set the class attributes and override :meth:`add_arguments`
    and :meth:`run`; an instance is registered in :data:`casync_store.cli.REGISTRY`.
    """

    #: the command's name on the command line
    name: str = ""
    #: one line, for ``pycasync --help`` and as the first line of the command's help
    summary: str = ""
    #: the command's help text (after the summary)
    description: str = ""
    #: example command lines, one per line
    examples: str = ""
    #: (name, help) of the positional arguments; a name ending in "..." takes one or more
    positionals: tuple[tuple[str, str], ...] = ()

    def add_arguments(self, p: Parser) -> None:
        """Add the command's flags (after its positionals and the global flags)."""

    def add_top_arguments(self, p: Parser) -> None:
        """Add flags the command also accepts before its name, on the top-level parser."""

    def config_missing_ok(self, args: argparse.Namespace) -> bool:
        """Whether ``--config FILE`` may name a file that does not exist yet."""
        return False

    def run(self, ctx: Context) -> int:
        """Run the command; returns the exit status (errors are raised)."""
        raise NotImplementedError

    def __call__(self, ctx: Context) -> int:
        return self.run(ctx)

    def build_parser(self, sub: Any) -> Parser:
        """The command's parser, added to the subparsers ``sub``."""
        epilog = "examples:\n  " + self.examples.replace("\n", "\n  ")
        p: Parser = sub.add_parser(self.name, help=self.summary,
                                   description=f"{self.summary}.\n\n{self.description}", epilog=epilog)
        for arg, arg_help in self.positionals:
            if arg.endswith("..."):
                p.add_argument(arg[:-3], nargs="+", help=arg_help)
            else:
                p.add_argument(arg, help=arg_help)
        add_global_flags(p, top=False)
        self.add_arguments(p)
        return p


class Context:
    """What every command needs: the arguments, the config, the digest, a progress bar."""

    def __init__(self, args: argparse.Namespace, config: Config) -> None:
        from casync_store.plumbing.progress import make_progress

        self.args = args
        self.config = config
        #: whether --digest was given (verify then checks with that digest only)
        self.digest_given = getattr(args, "digest", None) is not None
        self.digest: Digest = digest_by_name(args.digest or "sha512-256")
        self.progress = make_progress(True)
        self.concurrency: int | None = getattr(args, "concurrency", None)
        #: chunk-server's --skip-verify-read, over the config's skip-verify
        self.skip_verify: bool | None = None
        if (getattr(args, "client_cert", None) is None) != (getattr(args, "client_key", None) is None):
            raise ParameterError("--client-cert and --client-key must be given together")

    def tell(self, line: str) -> None:
        """``pycasync COMMAND: line`` on stderr when it is a terminal or with -v (a summary for people)."""
        try:
            wanted = bool(getattr(self.args, "verbose", False)) or sys.stderr.isatty()
        except (AttributeError, ValueError):
            wanted = False
        if wanted:
            sys.stderr.write(f"{PROG} {getattr(self.args, 'command', None) or ''}: {line}\n")
            sys.stderr.flush()

    def options_for(self, location: str) -> StoreOptions:
        """The config file's options for ``location`` with command-line flags on top."""
        changes = {
            name: getattr(self.args, name)
            for name in ("client_cert", "client_key", "ca_cert", "error_retry", "error_retry_base_interval")
            if getattr(self.args, name, None) is not None
        }
        if getattr(self.args, "trust_insecure", None) is not None:  # given: true or =false
            changes["trust_insecure"] = self.args.trust_insecure
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
            cast(WriteStore, store).compression = self.args.compression  # writable: a WriteStore
        return store

    def open_cached(
        self, stack: contextlib.ExitStack, locations: Sequence[str], cache: str | None,
        writable: bool = False, must_exist: bool = False,
    ) -> Any:
        """The stores ``-s`` (tried in order) behind the writable cache ``-c``, as one store."""
        from casync_store.stores.router import combine

        stores = [self.open(stack, loc, writable=writable, must_exist=must_exist) for loc in locations]
        repair = getattr(self.args, "cache_repair", True)
        return combine(stores, self.open(stack, cache, writable=True) if cache else None, repair=repair)

    def indexes(self, stack: contextlib.ExitStack, paths: Sequence[str]) -> list[Any]:
        """Open index files (``-`` = stdin, at most once), closed when ``stack`` unwinds."""
        from casync_store.stores.indexio import open_index

        if list(paths).count("-") > 1:
            raise ParameterError("standard input ('-') can be only one of the indexes")
        return [stack.enter_context(open_index(p, options_for=self.options_for)) for p in paths]


def add_json(p: Parser, what: str) -> None:
    """``--json``: print the command's result (``what``) as one JSON document."""
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON on stdout")


def print_json(data: object, stream: Any = None) -> None:
    """``data`` as indented JSON and a newline on ``stream`` (default stdout), flushed."""
    stream = stream or sys.stdout
    stream.write(json.dumps(data, indent=2) + "\n")
    stream.flush()


def require(value: object, message: str) -> None:
    """A usage error (exit status 2) with ``message`` unless ``value`` is given."""
    if not value:
        raise ParameterError(message)


# --------------------------------------------------------------------------- errors and logging


def message(exc: BaseException) -> str:
    """One line for ``exc``: an OSError's file names and text, else its text."""
    if isinstance(exc, OSError) and exc.strerror:
        names = [str(n) or "'' (empty path)" for n in (exc.filename, exc.filename2) if n is not None]
        return ": ".join([*names, exc.strerror]) if names else exc.strerror
    text = str(exc) or type(exc).__name__
    return " ".join(text.split("\n"))


def report(exc: BaseException, status: int, verbose: bool, internal: bool = False) -> int:
    """Write ``pycasync: error: ...`` (and with ``verbose`` the traceback); returns ``status``."""
    if verbose:
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    prefix = f"internal error ({type(exc).__name__}): " if internal else ""
    hint = " (run with --verbose for details)" if internal and not verbose else ""
    sys.stderr.write(f"{PROG}: error: {prefix}{message(exc)}{hint}\n")
    return status


#: Libraries whose debug logs carry request headers (S3 signatures and session
#: tokens, SSH details): kept at WARNING even with --verbose, so secrets stay out.
_QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "paramiko")


def setup_logging(verbose: bool) -> None:
    """Log to stderr as ``pycasync: LEVEL: logger: message``; DEBUG with ``verbose``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
