#!/usr/bin/env python3
"""pycasync's entry point: ``pycasync``, ``python3 -m pycasync`` and ``python3 pycasync.py``.

The command line itself is the package :mod:`casync_store.cli` (one module
per group of commands); this file only runs it and re-exports the names
scripts and tests use. Run as a script it puts its own directory on
``sys.path`` (``python3 -I pycasync.py`` does not), so a checkout, or a copy
of it, runs without being installed. A bad ``PYCASYNC_*`` variable, found
while the packages are imported, is one ``pycasync: error:`` line (exit 2).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    _HERE = os.path.dirname(os.path.realpath(__file__))
    if _HERE not in sys.path:
        sys.path.insert(0, _HERE)

try:
    from casync_store.cli import COMMANDS as _COMMANDS
    from casync_store.cli import EXIT_FAILURE, EXIT_USAGE, UsageError, build_parser, main, rewrite_argv
except ValueError as _exc:  # casync_format.errors.ParameterError: e.g. PYCASYNC_PUREPYTHON=yes
    if type(_exc).__name__ != "ParameterError":
        raise
    _ERROR = f"pycasync: error: {_exc}"

    def main(argv: list[str] | None = None) -> int:  # type: ignore[misc]  # the console script's
        """Report the bad environment variable in one line: exit status 2 (usage)."""
        print(_ERROR, file=sys.stderr)
        return 2

__all__ = ["main", "build_parser", "rewrite_argv", "UsageError", "EXIT_FAILURE", "EXIT_USAGE", "_COMMANDS"]

if __name__ == "__main__":
    sys.exit(main())
