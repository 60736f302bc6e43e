"""Per-chunk facts of an index: ``inspect-chunks`` and the chunks-info files ``info`` reads.

:func:`inspect_chunks` lists every item of an index (repeats included, in
blob order) as a :class:`ChunkInfo`: its id, its uncompressed size and, when
a local store is given, the size of the chunk's file there (its compressed
size; 0 when the store lacks the chunk). :func:`chunks_info_json` renders
that list as desync's JSON (``id``, ``uncompressed_size`` and, when not
0, ``compressed_size``); :func:`load_chunks_info` reads such a file back,
keyed by chunk id, for ``info --chunks-info``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from casync_format.errors import FormatError, ParameterError
from casync_format.index import Index

from ..stores.base import Store
from ..stores.local import LocalStore

__all__ = ["ChunkInfo", "inspect_chunks", "chunks_info_json", "load_chunks_info"]


@dataclass(frozen=True)
class ChunkInfo:
    """One chunk: its id, its size, and its compressed size in one store (0: unknown)."""

    id: bytes
    uncompressed_size: int
    compressed_size: int = 0

    def to_dict(self) -> dict[str, object]:
        """desync's JSON object for the chunk (``compressed_size`` left out when 0)."""
        out: dict[str, object] = {"id": self.id.hex(), "uncompressed_size": self.uncompressed_size}
        if self.compressed_size:
            out["compressed_size"] = self.compressed_size
        return out


def _file_size(store: LocalStore, chunk_id: bytes) -> int:
    try:
        return os.stat(store.chunk_path(chunk_id)).st_size
    except (FileNotFoundError, NotADirectoryError):
        return 0


def inspect_chunks(index: Index, store: Store | None = None) -> list[ChunkInfo]:
    """Every item of ``index`` as a :class:`ChunkInfo`, with sizes in ``store`` if given.

    ``store`` must be a local store (the size of a chunk file is only
    known there): anything else is a :class:`ParameterError`.
    """
    if store is not None and not isinstance(store, LocalStore):
        raise ParameterError(f"'{store}' is not a local store")
    infos = []
    for item in index:
        size = _file_size(store, item.id) if store is not None else 0
        infos.append(ChunkInfo(item.id, item.size, size))
    return infos


def chunks_info_json(infos: list[ChunkInfo]) -> str:
    """desync's JSON for ``infos`` (a list of objects, indented by two), with a final newline."""
    return json.dumps([info.to_dict() for info in infos], indent=2) + "\n"


def load_chunks_info(path: str | os.PathLike[str]) -> dict[bytes, ChunkInfo]:
    """The chunks of a file :func:`chunks_info_json` wrote (or desync's ``inspect-chunks``), by id.

    Raises OSError, and :class:`FormatError` naming the file when it is not such JSON.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            data = json.load(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path}: not JSON: {exc}") from exc
    if data is None:  # desync writes null for an index without chunks
        data = []
    out: dict[bytes, ChunkInfo] = {}
    try:
        for entry in data:
            chunk_id = bytes.fromhex(entry["id"])
            out[chunk_id] = ChunkInfo(chunk_id, int(entry["uncompressed_size"]),
                                      int(entry.get("compressed_size", 0)))
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: not a chunks-info list (id, uncompressed_size, compressed_size): "
                          f"{exc!r}") from exc
    return out
