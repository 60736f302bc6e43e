"""Chunk stores and the operations over them.

Stores (:mod:`.store` interfaces, :mod:`.local`, wrappers in :mod:`.router`)
know where chunks live and how to move them; the operations (make, extract,
chop, cache, verify, prune, info) are functions that take stores and paths.
This package imports :mod:`casync_format` but never the CLI, and optional
backends import their extra (paramiko, boto3, fusepy) only when used.
"""

from __future__ import annotations

from .local import LocalStore
from .router import CachedStore, StoreRouter, combine
from .store import PruneStore, Store, WriteStore

__all__ = ["Store", "WriteStore", "PruneStore", "LocalStore", "StoreRouter", "CachedStore", "combine"]
