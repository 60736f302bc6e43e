"""``--store-file FILE`` of chunk-server and mount-index: stores from desync's JSON file, reloaded on SIGHUP.

:func:`add_store_file_flag` adds the flag; :func:`open_store_file` opens the
stores and cache FILE names as a :class:`~casync_store.stores.swap.SwapStore`
and returns with it the function that reads FILE again and swaps the new
stores in (the old ones are closed once the requests using them are done).
A reload that fails (unreadable file, unreachable store) is logged and
changes nothing, as in desync.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any, Callable

from casync_format.errors import CasyncError, ParameterError

from ._common import Context, log

__all__ = ["add_store_file_flag", "check_store_file_flags", "open_store_file"]


def add_store_file_flag(p: Any) -> None:
    """``--store-file FILE``."""
    p.add_argument("--store-file", metavar="FILE",
                   help='read the stores and cache from FILE, desync\'s JSON {"stores": [LOCATION, ...], '
                   '"cache": LOCATION}; read again on SIGHUP, without dropping requests in flight')


def check_store_file_flags(a: argparse.Namespace) -> None:
    """--store-file excludes -s and -c (as in desync)."""
    if a.store_file is None:
        return
    if not a.store_file.strip():
        raise ParameterError("--store-file needs a file name, got an empty one")
    if a.store:
        raise ParameterError("--store and --store-file can't be used together")
    if a.cache:
        raise ParameterError("--cache and --store-file can't be used together")


def _load(ctx: Context, path: str, writable: bool) -> tuple[Any, Callable[[], None]]:
    from casync_store.stores.swap import read_store_file

    spec = read_store_file(path)
    if not spec.stores:
        raise ParameterError(f"store file {path} names no store")
    if writable and (len(spec.stores) > 1 or spec.cache):
        raise ParameterError(f"store file {path}: -w needs exactly one store and no cache")
    stack = contextlib.ExitStack()
    try:
        store = ctx.open_cached(stack, list(spec.stores), spec.cache, writable=writable, must_exist=True)
    except BaseException:
        stack.close()
        raise
    return store, stack.close


def open_store_file(
    ctx: Context, stack: contextlib.ExitStack, path: str, writable: bool = False
) -> tuple[Any, Callable[[], None]]:
    """The SwapStore of the stores in ``path`` (closed when ``stack`` unwinds) and its reload function."""
    from casync_store.stores.swap import SwapStore, SwapWriteStore

    store, closer = _load(ctx, path, writable)
    swap = SwapWriteStore(store, closer) if writable else SwapStore(store, closer)
    stack.callback(swap.close)

    def reload() -> None:
        try:
            new, new_closer = _load(ctx, path, writable)
        except (CasyncError, OSError) as exc:
            log.error("failed to reload configuration: %s", exc)
            return
        try:
            swap.swap(new, new_closer)
        except CasyncError as exc:
            new_closer()
            log.error("failed to reload configuration: %s", exc)
            return
        log.info("reloaded %s: serving %s", path, new)

    return swap, reload
