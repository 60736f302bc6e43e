#!/usr/bin/env python3
"""pycasync's entry point: ``pycasync``, ``python3 -m pycasync`` and ``python3 pycasync.py``.

The command line itself is the package :mod:`casync_store.cli` (one module
per group of commands); this file only runs it and re-exports the names
scripts and tests use.
"""

from __future__ import annotations

import sys

from casync_store.cli import COMMANDS as _COMMANDS
from casync_store.cli import EXIT_FAILURE, EXIT_USAGE, UsageError, build_parser, main, rewrite_argv

__all__ = ["main", "build_parser", "rewrite_argv", "UsageError", "EXIT_FAILURE", "EXIT_USAGE", "_COMMANDS"]

if __name__ == "__main__":
    sys.exit(main())
