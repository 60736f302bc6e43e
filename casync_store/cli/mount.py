"""The ``mount-index`` command: the blob of an index as a read-only FUSE file."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from casync_format.errors import ParameterError

from ._common import Command, Context, add_store_flags, add_stores, require
from ._parser import PROG, NotSupported, Parser

__all__ = ["MountIndex"]


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
        "'fuse' extra (fusepy) and libfuse 2."
    )
    examples = (
        "pycasync mount-index -s /srv/store image.caibx /mnt/image\n"
        "pycasync mount-index -s s3+https://s3.example.com/bucket/store image.caibx /mnt/image"
    )
    positionals = (("index", "index file or URL"), ("mountpoint", "directory to mount on"))

    def add_arguments(self, p: Parser) -> None:
        add_stores(p, True, "store to read chunks from")
        p.add_argument("-c", "--cache", metavar="LOCATION", help="writable store used as a cache")
        for flag in ("--store-file", "--cor-file", "--cor-state-save", "--cor-state-init", "--cor-init-n",
                     "--sparse-file"):  # desync's copy-on-read options
            p.add_argument(flag, nargs="?", action=NotSupported, help=argparse.SUPPRESS)
        add_store_flags(p, cache_repair=True)

    def run(self, ctx: Context) -> int:
        from casync_store.ops.mount import mount_index, mount_name

        a = ctx.args
        require(a.store, "no store given (use -s)")
        if not os.path.isdir(a.mountpoint):
            raise ParameterError(f"mount point {a.mountpoint} is not a directory")
        if os.listdir(a.mountpoint):  # libfuse would refuse it with two lines of its own
            raise ParameterError(f"mount point {a.mountpoint} is not empty")
        with contextlib.ExitStack() as stack:
            store = ctx.open_cached(stack, a.store, a.cache, must_exist=True)
            (index,) = ctx.indexes(stack, [a.index])
            mtime = os.stat(a.index).st_mtime if os.path.isfile(a.index) else None
            mount_index(index, store, a.mountpoint, mount_name(a.index), mtime=mtime,
                        ready=lambda path: _mounted(a.index, path))
        return 0


def _mounted(index: str, path: str) -> None:
    """The one line a mount prints once it is ready: what is where."""
    from casync_store.plumbing.locparse import redact

    sys.stderr.write(f"{PROG} mount-index: {redact(index)} mounted at {path} (read-only)\n")
    sys.stderr.flush()
