"""The one backend table: which module opens a chunk store or an index store for a scheme.

:data:`BACKENDS` maps a location's scheme (``""`` for a plain path, see
:class:`~casync_store.plumbing.locparse.Location`) to a :class:`Backend` naming, as
``"module:factory"``, the chunk-store factory (called as
``factory(location, options)``, returning a :class:`~.base.Store`) and the
index-store factory (``factory(base_location, options)``, returning an
:class:`~.indexstore.IndexStore`); either may be None when the backend cannot
hold that kind. Modules are imported only when a location of theirs is
opened, so paramiko and boto3 are needed only for the commands that use
them. The failover group (``a|b``) is the entry :data:`FAILOVER`, called with
the list of member stores. A new backend is one new entry here and one new
module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from casync_format.errors import StoreError

__all__ = ["Backend", "BACKENDS", "FAILOVER", "KNOWN_SCHEMES", "load_factory"]


@dataclass(frozen=True)
class Backend:
    """A scheme's factories, each ``"module:attribute"`` or None (not supported)."""

    store: str | None = None
    index: str | None = None


#: The key of :data:`BACKENDS` naming the failover group's class.
FAILOVER = "|"

_LOCAL = Backend("casync_store.stores.location:open_local",
                 "casync_store.stores.indexstore:open_local_index_store")  # fmt: skip
#: The backends this version has: scheme ("" = plain path) -> factories.
BACKENDS: dict[str, Backend] = {
    "": _LOCAL,
    "file": _LOCAL,
    "http": Backend("casync_store.stores.http:open_http", "casync_store.stores.http:open_http_index_store"),
    "https": Backend("casync_store.stores.http:open_http", "casync_store.stores.http:open_http_index_store"),
    "ssh": Backend("casync_store.stores.ssh:open_ssh", None),
    "sftp": Backend("casync_store.stores.sftp:open_sftp", "casync_store.stores.sftp:open_sftp_index_store"),
    "s3+http": Backend("casync_store.stores.s3:open_s3", "casync_store.stores.s3:open_s3_index_store"),
    "s3+https": Backend("casync_store.stores.s3:open_s3", "casync_store.stores.s3:open_s3_index_store"),
    FAILOVER: Backend("casync_store.stores.failover:FailoverGroup", None),
}

#: Schemes pycasync knows of; those without a :data:`BACKENDS` entry are not supported yet.
KNOWN_SCHEMES = ("http", "https", "ssh", "sftp", "s3+http", "s3+https", "gs", "oci+http", "oci+https")


def load_factory(target: str | None, what: str) -> Callable[..., Any]:
    """Import and return the ``"module:attribute"`` ``target``; StoreError naming ``what`` when None."""
    if target is None:
        raise StoreError(f"{what} is not supported in this version of pycasync")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
