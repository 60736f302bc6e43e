"""Fixtures of the command-line tests (``env`` comes from ``tests/conftest.py``).

(``blob`` and ``made`` are in ``tests/conftest.py``: the server tests use them too.)
- ``serve``: a function ``serve(*args, command="chunk-server")`` starting a
  :class:`tests.support.cli.Server` subprocess; every one is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import pytest

from tests.support.cli import Server

__all__: list[str] = []


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
