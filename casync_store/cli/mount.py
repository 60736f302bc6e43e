"""The ``mount-index`` command: the blob of an index as a read-only FUSE file."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from casync_format.errors import ParameterError

from ._common import Command, Context, add_store_flags, add_stores, require
from ._parser import PROG, Parser, positive_int
from ._storefile import add_store_file_flag, check_store_file_flags, open_store_file

__all__ = ["MountIndex"]

_COR_INIT_N = 10  # desync's default, ops.sparse.DEFAULT_INIT_WORKERS


class MountIndex(Command):
    """``mount-index``: a blob as a read-only FUSE file until unmounted."""

    name = "mount-index"
    summary = "Mount an index as a read-only file (FUSE)"
    description = (
        "Mounts the blob of INDEX at MOUNTPOINT as one read-only file named after\n"
        "the index without its extension (image.caibx -> MOUNTPOINT/image), without\n"
        "extracting it: reads fetch only the chunks they touch, from the stores -s\n"
        "through an optional cache -c, and keep recent chunks in memory. A chunk\n"
        "that cannot be read fails that read with EIO. Runs until unmounted\n"
        "('fusermount -u MOUNTPOINT') or stopped with SIGINT/SIGTERM. Needs the\n"
        "'fuse' extra (fusepy) and libfuse 2.\n\n"
        "--cor-file FILE keeps every chunk read in FILE (copy-on-read), which is\n"
        "then read instead of the store; with --cor-state-save STATE the list of\n"
        "chunks in FILE (desync's bitmap) is written on SIGHUP and at unmount, and\n"
        "a remount with the same FILE, STATE and index reads them from FILE again.\n"
        "--cor-state-init STATE fills a new FILE with the chunks STATE lists, in the\n"
        "background with --cor-init-n threads (default 10). A state is only valid\n"
        "for the FILE and index it was written with, as in desync.\n"
        "--store-file FILE takes the stores and cache from desync's JSON file and\n"
        "reads it again on SIGHUP, while the mount goes on serving. With --cor-file\n"
        "or --store-file, SIGHUP does not unmount."
    )
    examples = (
        "pycasync mount-index -s /srv/store image.caibx /mnt/image\n"
        "pycasync mount-index -s s3+https://s3.example.com/bucket/store image.caibx /mnt/image\n"
        "pycasync mount-index -s /srv/store --cor-file /var/tmp/image.cor \\\n"
        "    --cor-state-save /var/tmp/image.state image.caibx /mnt/image"
    )
    positionals = (("index", "index file or URL"), ("mountpoint", "directory to mount on"))

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "store to read chunks from")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
        add_store_file_flag(p)
        p.add_argument("--cor-file", metavar="FILE", help="copy-on-read file: chunks read are kept in FILE")
        p.add_argument("--cor-state-save", metavar="FILE",
                       help="write the copy-on-read state to FILE on SIGHUP and at unmount "
                       "(needs --cor-file)")
        p.add_argument("--cor-state-init", metavar="FILE",
                       help="fill a new copy-on-read file with the chunks the state FILE "
                       "lists (needs --cor-file)")
        p.add_argument("--cor-init-n", type=positive_int, default=_COR_INIT_N, metavar="N",
                       help="threads filling the copy-on-read file from --cor-state-init "
                       f"(default {_COR_INIT_N})")
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.mount import mount_index, mount_name

        a = ctx.args
        check_store_file_flags(a)
        if a.store_file is None:
            require(a.store, "no store given (use -s or --store-file)")
        cor = _cor_options(a)
        if not os.path.isdir(a.mountpoint):
            raise ParameterError(f"mount point {a.mountpoint} is not a directory")
        if os.listdir(a.mountpoint):  # libfuse would refuse it with two lines of its own
            raise ParameterError(f"mount point {a.mountpoint} is not empty")
        with contextlib.ExitStack() as stack:
            hangup = None
            if a.store_file is not None:
                store, hangup = open_store_file(ctx, stack, a.store_file)
            else:
                store = ctx.open_cached(stack, a.store, a.cache, must_exist=True)
            (index,) = ctx.indexes(stack, [a.index])
            mtime = os.stat(a.index).st_mtime if os.path.isfile(a.index) else None
            mount_index(index, store, a.mountpoint, mount_name(a.index), mtime=mtime,
                        ready=lambda path: _mounted(a.index, path), cor=cor, hangup=hangup)
        return 0


def _cor_options(a: argparse.Namespace) -> Any:
    """The CorOptions of --cor-file and its companions (None without --cor-file)."""
    from casync_store.ops.sparse import CorOptions

    for flag, value in (("--cor-file", a.cor_file), ("--cor-state-save", a.cor_state_save),
                        ("--cor-state-init", a.cor_state_init)):  # fmt: skip
        if value is not None and not value.strip():
            raise ParameterError(f"{flag} needs a file name, got an empty one")
    if a.cor_file is None:
        if a.cor_state_save is not None or a.cor_state_init is not None:
            raise ParameterError("--cor-state-save and --cor-state-init need --cor-file")
        return None
    return CorOptions(a.cor_file, state_save=a.cor_state_save, state_init=a.cor_state_init,
                      init_workers=a.cor_init_n)


def _mounted(index: str, path: str) -> None:
    """The one line a mount prints once it is ready: what is where."""
    from casync_store.plumbing.locparse import redact

    sys.stderr.write(f"{PROG} mount-index: {redact(index)} mounted at {path} (read-only)\n")
    sys.stderr.flush()
