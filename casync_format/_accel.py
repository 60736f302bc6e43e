"""The one loader of the optional C extension ``casync_format._chunker``.

Six functions have a C implementation in that extension next to their
pure-Python reference (same results, byte for byte):

- ``chunker``: the cut search (``find_cut``/``find_cuts``, :mod:`._buzhash`);
- ``siphash24``: the goodbye-table name hash (:mod:`._siphash`);
- ``catar-goodbye``: a directory's GOODBYE record (:mod:`._catar_goodbye`);
- ``catar-entry``: a plain child's FILENAME + ENTRY records (:mod:`.catar`);
- ``chunk-file``: a local store's read, write and refresh of one chunk file,
  each one call with the GIL released once (``_chunkfile.c``; the reference is
  the system-call sequence in :mod:`casync_store.stores.local`);
- ``chunk-fetch``: a local store's read + zstd decompression + digest check +
  ``pwrite`` of one chunk in one call (``fetch_chunk_file`` in
  ``_chunkfile.c``, built only where libzstd's and OpenSSL's headers are; the
  reference is extract's Python path, which it hands every case but success).

The extension is imported here, once, and every user asks this module which
implementation to take (:func:`c_function`, :func:`backend`). Two environment
variables decide, each ``1`` (on), ``0`` or empty or unset (off; anything else
is a :class:`~casync_format.errors.ParameterError` at import, naming the
variable):

- ``PYCASYNC_PUREPYTHON=1``: every accelerated function runs its pure-Python
  implementation, as if the extension were not built (:func:`c_function`
  returns None for all of them).
- ``PYCASYNC_REQUIRE_C=1``: an extension that does not import, or lacks one of
  the accelerated functions (an old build), raises ImportError at import.

:func:`backends` names the implementation in use per function
(``"c"`` or ``"python"``); ``casync_format.backends()`` adds the zstd binding.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from .errors import ParameterError

__all__ = ["ACCELERATED", "FORCE_PYTHON", "REQUIRE_C", "backend", "backends", "c_function", "c_module"]

#: Each accelerated function and the names the extension exports for it.
ACCELERATED: dict[str, tuple[str, ...]] = {
    "chunker": ("find_cut", "find_cuts"),
    "siphash24": ("siphash24",),
    "catar-goodbye": ("encode_goodbye",),
    "catar-entry": ("encode_child",),
    "chunk-file": ("read_chunk_file", "write_chunk_file", "refresh_chunk_file"),
    "chunk-fetch": ("fetch_chunk_file",),
}


def _env_flag(name: str) -> bool:
    value = os.environ.get(name, "")
    if value not in ("", "0", "1"):
        raise ParameterError(f"environment variable {name}={value!r}: use 1 (on) or 0 (off), or unset it")
    return value == "1"


FORCE_PYTHON: bool = _env_flag("PYCASYNC_PUREPYTHON")
"""``PYCASYNC_PUREPYTHON=1``: no accelerated function uses the extension."""

REQUIRE_C: bool = _env_flag("PYCASYNC_REQUIRE_C")
"""``PYCASYNC_REQUIRE_C=1``: the extension must import with every accelerated function."""


def _load() -> ModuleType | None:
    """The extension module, or None when it is not built (ImportError under REQUIRE_C)."""
    try:
        # By absolute name: zipimport on 3.9 leaves __package__ unset (pycasync.pyz).
        module = importlib.import_module(__name__.rpartition(".")[0] + "._chunker")
    except ImportError as exc:
        if REQUIRE_C:
            raise ImportError(
                f"PYCASYNC_REQUIRE_C=1 but the C extension casync_format._chunker does not import: {exc}"
            ) from exc
        return None
    missing = [name for names in ACCELERATED.values() for name in names if not hasattr(module, name)]
    if missing and REQUIRE_C:
        raise ImportError(
            f"PYCASYNC_REQUIRE_C=1 but casync_format._chunker lacks {', '.join(missing)} "
            "(rebuild it; fetch_chunk_file needs libzstd-dev and libssl-dev)"
        )
    return module


_MODULE = _load()


def _usable(function: str) -> bool:
    """Whether the accelerated ``function`` runs in C: built, complete and not forced to Python."""
    if _MODULE is None or FORCE_PYTHON:
        return False
    return all(hasattr(_MODULE, name) for name in ACCELERATED[function])


def c_module(function: str) -> ModuleType | None:
    """The extension module if the accelerated ``function`` runs in C, else None."""
    return _MODULE if _usable(function) else None


def c_function(function: str) -> Any:
    """The C implementation of the accelerated ``function`` (its one export), or None.

    None when the extension is not built, lacks it, or ``PYCASYNC_PUREPYTHON=1``.
    """
    names = ACCELERATED[function]
    if len(names) != 1:
        raise ValueError(f"{function} has several C functions: use c_module()")
    return getattr(_MODULE, names[0]) if _usable(function) else None


def backend(function: str) -> str:
    """``"c"`` or ``"python"``: the implementation the accelerated ``function`` uses."""
    return "c" if _usable(function) else "python"


def backends() -> dict[str, str]:
    """The implementation of every accelerated function, in :data:`ACCELERATED` order."""
    return {function: backend(function) for function in ACCELERATED}
