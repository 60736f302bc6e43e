"""Helpers shared by pycasync's tests (no tests here; pytest collects nothing from this package).

- :data:`ROOT`: the checkout (the directory holding ``pycasync.py``);
  :data:`CLI`: ``ROOT/pycasync.py``; :data:`DATA_DIR`: ``ROOT/tests/data``.
- :data:`IS_ROOT`: the tests run as root (owners, device nodes, fcaps);
  :data:`DESYNC_WITH`: casync's ``--with`` flags for desync's tar feature set.
- :func:`rng_bytes`: deterministic pseudo-random bytes; :func:`free_port`: a
  TCP port of 127.0.0.1 nothing listens on.

The modules: :mod:`.sshd` (a real OpenSSH server), :mod:`.moto` (a real S3 API
server; :mod:`.s3_helpers`, the S3 tests' helpers on it), :mod:`.certs` (test
certificates), :mod:`.faulty_http` (a misbehaving HTTP server),
:mod:`.http_store` (HTTP store clients on it), :mod:`.http_client` (raw
requests to a test server), :mod:`.cli` (running ``pycasync.py`` and its
chunk-server), :mod:`.chunkserver` (a store for the ChunkServer tests and raw
requests to it), :mod:`.catar_build` (raw and written catar archives),
:mod:`.chunks` (deterministic test chunks of the store tests),
:mod:`.chunker_helpers` (the chunker tests' backends, cut lists and
parameters) and :mod:`.trees` (directory trees on disk and their snapshots).
The fixtures built on them are registered in ``tests/conftest.py`` (and the
conftest.py of tests/cli, tests/format, tests/serve and tests/stores).
"""

from __future__ import annotations

import os
import random
import socket
import sys

__all__ = ["ROOT", "CLI", "DATA_DIR", "IS_ROOT", "DESYNC_WITH", "rng_bytes", "free_port"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.path.join(ROOT, "pycasync.py")
DATA_DIR = os.path.join(ROOT, "tests", "data")
IS_ROOT = os.geteuid() == 0
DESYNC_WITH = [
    "--with=32bit-uids",
    "--with=nsec-time",
    "--with=permissions",
    "--with=symlinks",
    "--with=device-nodes",
    "--with=fifos",
    "--with=sockets",
    "--with=xattrs",
]

if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)


def rng_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` deterministic pseudo-random bytes for ``seed``."""
    return random.Random(seed).randbytes(n)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (connections are refused until a server binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
