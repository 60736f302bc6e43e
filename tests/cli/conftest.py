"""Fixtures of the command-line tests (``env`` comes from ``tests/conftest.py``).

- ``blob``: ``(path, content)`` of a 600 kB file (random, zeros, random).
- ``made``: ``(store, index, content)``: ``blob`` made into a store with
  small chunks (``-m 4:16:64``) through the real command line.
- ``serve``: a function ``serve(*args, command="chunk-server")`` starting a
  :class:`tests.support.cli.Server` subprocess; every one is stopped at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Callable

import pytest

from tests.support.cli import Server, data, ok

__all__: list[str] = []


@pytest.fixture
def blob(tmp_path: os.PathLike[str]) -> tuple[str, bytes]:
    content = data(300_000, 1) + bytes(100_000) + data(200_000, 2)
    path = os.path.join(tmp_path, "blob.bin")
    with open(path, "wb") as f:
        f.write(content)
    return path, content


@pytest.fixture
def made(env: dict[str, str], tmp_path: os.PathLike[str], blob: tuple[str, bytes]) -> tuple[str, str, bytes]:
    """(store, index, content): the blob made into a store with small chunks."""
    store, index = os.path.join(tmp_path, "store"), os.path.join(tmp_path, "blob.caibx")
    ok(env, "make", "-s", store, "-m", "4:16:64", index, blob[0])
    return store, index, blob[1]


@pytest.fixture
def serve(env: dict[str, str]) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, command: str = "chunk-server") -> Server:
        server = Server(env, *args, command=command)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
