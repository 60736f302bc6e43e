"""Chunk stores and the operations over them.

Stores (:mod:`.stores`) know where chunks live and how to move them; the
operations (:mod:`.ops`: make, extract, chop, cache, verify, prune, info, tar,
untar) are functions that take stores and paths; the servers (:mod:`.serve`)
hand stores to other machines; :mod:`.plumbing` is what all of them share.
This package imports :mod:`casync_format` but never the CLI, and optional
backends import their extra (paramiko, boto3, fusepy) only when used.
"""

from __future__ import annotations

from .stores.base import PruneStore, Store, WriteStore
from .stores.local import LocalStore
from .stores.router import CachedStore, StoreRouter, combine

__all__ = ["Store", "WriteStore", "PruneStore", "LocalStore", "StoreRouter", "CachedStore", "combine"]
