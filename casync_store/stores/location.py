"""Store locations: turning ``-s``/``-c`` strings into Store objects.

A location is a local directory (a plain path or ``file://``), a URL whose
scheme names a backend (``http(s)://``, ``ssh://``, ``sftp://``,
``s3+http(s)://``), or several of those joined by ``|`` into a failover
group. A location is split once (:class:`~casync_store.plumbing.locparse.Location`) and shown
only redacted (:func:`~casync_store.plumbing.locparse.redact`). Backends are looked up in the one
backend table, :data:`~.backends.BACKENDS` (also the index stores'), whose
modules are imported only when used, so an optional dependency is needed
only by the command that needs it and a new backend is one new entry. A
factory is called as ``factory(location, options)`` and returns a
:class:`~casync_store.stores.base.Store`; the failover entry (key ``|``) is
called with the list of member stores.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Sequence
from typing import Any, Callable

from casync_format.errors import ParameterError, StoreError

from ..plumbing.config import StoreOptions
from ..plumbing.locparse import Location, redact
from .backends import BACKENDS, FAILOVER, KNOWN_SCHEMES, load_factory
from .base import Store, require_writable
from .local import LocalStore

__all__ = [
    "BACKENDS", "KNOWN_SCHEMES", "FAILOVER", "Location", "redact",
    "open_store", "open_local", "split_location", "check_encryption", "ENCRYPTING_SCHEMES",
]  # fmt: skip


def split_location(location: str) -> tuple[str, str]:
    """Split a location into (scheme, rest); the scheme is "" for a local path.

    A one-letter "scheme" is a Windows drive letter, and ``name:x`` without
    ``//`` is a path, as in desync.
    """
    loc = Location.parse(location)
    return loc.scheme, loc.rest


def _factory(key: str, what: str) -> Callable[..., Any]:
    backend = BACKENDS.get(key)
    return load_factory(backend.store if backend else None, what)


def open_local(location: str, options: StoreOptions) -> Store:
    """A :class:`LocalStore` for a plain path or a ``file://`` URL."""
    loc = Location.parse(location)
    path = location
    if loc.scheme == "file":
        if loc.netloc not in ("", "localhost"):
            raise StoreError(f"store {loc}: file:// URLs must name a local path")
        path = urllib.parse.unquote(loc.path)
    if not path:
        raise ParameterError("empty store location")
    return LocalStore(path, verify=not options.skip_verify, uncompressed=options.uncompressed,
                      cipher=options.chunk_cipher())


#: The schemes whose stores can be encrypted (desync's converters; "" is a local path).
ENCRYPTING_SCHEMES = ("", "file", "http", "https", "sftp", "s3+http", "s3+https")


def check_encryption(loc: Location, options: StoreOptions) -> None:
    """Refuse bad encryption options, or encryption where this store cannot do it (never plaintext)."""
    if not options.encryption_configured:
        return
    if loc.scheme == "ssh":
        raise StoreError(f"store {loc}: encryption is not supported by casync protocol (ssh://) stores")
    if loc.scheme not in ENCRYPTING_SCHEMES:
        raise StoreError(f"store {loc}: encrypted {loc.scheme}:// stores are not supported in this version")
    try:
        options.chunk_cipher()
    except ParameterError as exc:
        raise StoreError(f"store {loc}: {exc}") from None


def _open_one(location: str, options: StoreOptions, must_exist: bool = False) -> Store:
    loc = Location.parse(location)
    scheme = loc.scheme
    if scheme and scheme not in BACKENDS and scheme not in KNOWN_SCHEMES:
        raise StoreError(f"store {loc}: unknown location scheme {scheme!r}")
    factory = _factory(scheme, f"store {loc}: scheme {scheme!r}")
    check_encryption(loc, options)
    store = factory(location, options)
    if must_exist:
        try:
            store.check()
        except BaseException:
            store.close()
            raise
    return store


def open_store(
    location: str | os.PathLike[str],
    options: StoreOptions | None = None,
    writable: bool = False,
    options_for: Callable[[str], StoreOptions] | None = None,
    must_exist: bool = False,
) -> Store:
    """Open the store at ``location``.

    ``options`` apply to every member of a ``a|b`` failover group unless
    ``options_for(member)`` is given, which then supplies each member's own
    options (e.g. :meth:`Config.store_options_for` merged with flags).
    ``writable`` requires a WriteStore. ``must_exist`` refuses a store
    whose directory or bucket is missing (:meth:`Store.check`; for reports
    such as ``info`` and for servers, where an empty answer would hide a
    typo; extract needs no such check, since an index of zero chunks needs
    no store at all). Raises :class:`StoreError` for a
    scheme that is unknown or not supported yet, :class:`ParameterError`
    for an empty location or ``-``.
    """
    location = os.fspath(location)
    if not location or not location.strip():
        raise ParameterError("empty store location")
    if location == "-":
        raise ParameterError("'-' (stdin/stdout) cannot be used as a store")
    if options is None:
        options = StoreOptions()
    members = location.split("|")
    if len(members) == 1:
        store = _open_one(location, options_for(location) if options_for else options, must_exist)
    else:
        store = _open_group(location, members, options, options_for)
    if writable:
        try:
            return require_writable(store)
        except StoreError:
            store.close()
            raise
    return store


def _open_group(
    location: str,
    members: Sequence[str],
    options: StoreOptions,
    options_for: Callable[[str], StoreOptions] | None,
) -> Store:
    if any(not m for m in members):
        raise ParameterError(f"store {redact(location)}: empty member in failover group")
    group = _factory(FAILOVER, f"store {redact(location)}: a failover group (a|b)")
    stores: list[Store] = []
    try:
        for member in members:
            stores.append(_open_one(member, options_for(member) if options_for else options))
        return group(stores)
    except BaseException:
        for s in stores:
            s.close()
        raise
