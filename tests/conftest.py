"""Shared pytest fixtures and settings for pycasync's tests.

Fixtures (any test module may use them; the helpers behind them are in
:mod:`tests.support`):

- ``casync``: path of the real casync binary (``/usr/bin/casync`` or on PATH).
  Skips the test when it is missing, but fails it when the environment has
  ``CI=true`` (CI must run the interoperability tests).
- ``run_casync``: a function ``run_casync(*args, cwd=None, input=None)``
  running casync with ``check=True`` and returning the
  :class:`subprocess.CompletedProcess` (stdout/stderr captured as bytes).
- ``rng_bytes``: the function :func:`tests.support.rng_bytes` ``(n, seed) -> bytes``,
  deterministic pseudo-random data (``random.Random(seed).randbytes(n)``).
- ``store_dir``: an empty, existing directory for a chunk store.
- ``local_store``: a :class:`casync_store.LocalStore` in ``store_dir``
  (``sync=False``, to keep tests fast).
- ``data_dir``: the absolute path of ``tests/data``.
- ``env``: ``os.environ`` with its own empty ``HOME`` (so no real config file
  is read) and without ``DESYNC_PROGRESSBAR_ENABLED`` or
  ``DESYNC_ENABLE_PARSABLE_PROGRESS``, for running the CLI.
- ``sshd`` (session): a real OpenSSH server on 127.0.0.1, a
  :class:`tests.support.sshd.SSHServer`; skips without OpenSSH (fails under
  ``CI=true``).
- ``moto_server`` (session): the shared moto S3 server of this test process,
  a :class:`tests.support.moto.MotoServer`; skips without moto/boto3 (fails
  under ``CI=true``).
- ``certs`` (session): test certificates made with openssl, a
  :class:`tests.support.certs.Certs`.

- ``blob``: ``(path, content)`` of a 600 kB file (random, zeros, random).
- ``made``: ``(store, index, content)``: ``blob`` made into a store with
  small chunks (``-m 4:16:64``) through the real command line.

The CLI tests' own ``serve`` fixture is in ``tests/cli/conftest.py``; the
chunker's ``backend`` in ``tests/format/conftest.py``; the ChunkServer tests'
``serve`` in ``tests/serve/conftest.py``; the HTTP and S3 store tests' fixtures
in ``tests/stores/conftest.py``.

Hypothesis runs under the profile ``ci`` (50 examples, no deadline) unless
``HYPOTHESIS_PROFILE`` names another registered one (``dev``: 10 examples,
``thorough``: 1000 examples).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Callable

import pytest

from casync_store import LocalStore
from tests.support import DATA_DIR, rng_bytes
from tests.support.certs import Certs, make_certs
from tests.support.cli import data, ok
from tests.support.moto import MotoServer, shared_moto
from tests.support.sshd import SSHServer, start_sshd

__all__: list[str] = []

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis-based tests import it themselves and fail clearly
    pass
else:
    _quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=_quiet)
    settings.register_profile("dev", max_examples=10, deadline=None, suppress_health_check=_quiet)
    settings.register_profile("thorough", max_examples=1000, deadline=None, suppress_health_check=_quiet)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def casync() -> str:
    """Path of the real casync; skip without it (fail under CI=true)."""
    path = shutil.which("casync") or "/usr/bin/casync"
    if not os.access(path, os.X_OK):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("casync is not installed, but CI=true requires the interop tests")
        pytest.skip("casync is not installed")
    return path


@pytest.fixture
def run_casync(casync: str) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """A function running casync with arguments; raises on a non-zero exit."""

    def run(
        *args: str, cwd: str | os.PathLike[str] | None = None, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [casync, *map(str, args)]
        return subprocess.run(argv, cwd=cwd, input=input, check=True, capture_output=True)

    return run


@pytest.fixture(name="rng_bytes")
def rng_bytes_fixture() -> Callable[[int, int], bytes]:
    """The :func:`tests.support.rng_bytes` function."""
    return rng_bytes


@pytest.fixture
def store_dir(tmp_path: os.PathLike[str]) -> str:
    """An empty directory for a chunk store."""
    path = os.path.join(tmp_path, "store")
    os.mkdir(path)
    return path


@pytest.fixture
def local_store(store_dir: str) -> LocalStore:
    """A LocalStore in ``store_dir`` without fsync."""
    return LocalStore(store_dir, sync=False)


@pytest.fixture(scope="session")
def data_dir() -> str:
    """Absolute path of tests/data."""
    return DATA_DIR


@pytest.fixture
def env(tmp_path: os.PathLike[str]) -> dict[str, str]:
    """An environment with its own HOME (so no real config file is read)."""
    home = os.path.join(tmp_path, "home")
    os.makedirs(home, exist_ok=True)
    unwanted = ("DESYNC_PROGRESSBAR_ENABLED", "DESYNC_ENABLE_PARSABLE_PROGRESS", "DESYNC_ENCRYPTION_KEY")
    out = {k: v for k, v in os.environ.items() if k not in unwanted}
    out["HOME"] = home
    return out


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


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A running OpenSSH server on 127.0.0.1 (see tests.support.sshd)."""
    server = start_sshd(str(tmp_path_factory.mktemp("sshd")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> MotoServer:
    """The shared moto server (see tests.support.moto)."""
    return shared_moto()


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, server and client certificates, and an untrusted CA and client (see tests.support.certs)."""
    return make_certs(tmp_path_factory.mktemp("certs"))
