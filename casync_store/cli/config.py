"""The ``config`` command: show the effective configuration, or write it to the config file."""

from __future__ import annotations

import argparse
import os
import sys

from ._common import Command, Context
from ._parser import Parser

__all__ = ["ConfigCommand"]


class ConfigCommand(Command):
    """``config``: print or write the effective configuration."""

    name = "config"
    summary = "Show or write the configuration"
    description = (
        "Prints the effective configuration (defaults, and the values of the config\n"
        "file) as JSON, with every secret (http-auth, http-cookie, S3 keys) shown as\n"
        "\"***\". With -w it is written, secrets intact, to the config file instead:\n"
        "--config FILE, or $HOME/.config/desync/config.json."
    )
    examples = "pycasync config\npycasync --config ./desync.json config -w"

    def add_arguments(self, p: Parser) -> None:
        p.add_argument("-w", "--write", action="store_true",
                       help="write the configuration to the config file")

    def config_missing_ok(self, args: argparse.Namespace) -> bool:
        # `config -w` may create the file --config names; every other command needs it to exist.
        return bool(args.write)

    def run(self, ctx: Context) -> int:
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
