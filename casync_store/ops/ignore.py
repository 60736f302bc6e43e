"""Chunks to leave out: the ``--ignore INDEX`` and ``--ignore-chunks FILE`` of ``cache`` and ``chop``.

:func:`ignored_ids` collects the chunk ids of some indexes and of some text
files (one hex id per line, blank lines and surrounding spaces skipped, as
desync reads them) into one set, which :func:`~.chop.chop` and
:func:`~.maintain.fill_cache` take as ``ignore``: chunks known to be in the
target store already, so neither read nor checked nor written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from casync_format.errors import FormatError
from casync_format.index import Index

__all__ = ["read_chunk_ids", "ignored_ids"]


def read_chunk_ids(path: str | os.PathLike[str]) -> list[bytes]:
    """The chunk ids in the text file ``path``, one per line (blank lines skipped).

    Raises OSError, and :class:`FormatError` naming the file and line for
    anything that is not a 64-digit hex id.
    """
    path = os.fspath(path)
    ids = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            try:
                chunk_id = bytes.fromhex(text)
            except ValueError:
                chunk_id = b""
            if len(chunk_id) != 32:
                raise FormatError(f"{path}, line {number}: not a chunk id: {text[:80]!r}")
            ids.append(chunk_id)
    return ids


def ignored_ids(
    indexes: Iterable[Index] = (), id_files: Iterable[str | os.PathLike[str]] = ()
) -> frozenset[bytes]:
    """The ids of every chunk of ``indexes`` and every id listed in ``id_files``."""
    found: set[bytes] = set()
    for index in indexes:
        found.update(item.id for item in index)
    for path in id_files:
        found.update(read_chunk_ids(path))
    return frozenset(found)
