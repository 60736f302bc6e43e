"""Shared pytest fixtures and settings for pycasync's tests.

Fixtures (any test module may use them):

- ``casync``: path of the real casync binary (``/usr/bin/casync`` or on PATH).
  Skips the test when it is missing, but fails it when the environment has
  ``CI=true`` (CI must run the interoperability tests).
- ``run_casync``: a function ``run_casync(*args, cwd=None, input=None)``
  running casync with ``check=True`` and returning the
  :class:`subprocess.CompletedProcess` (stdout/stderr captured as bytes).
- ``rng_bytes``: the function :func:`rng_bytes` ``(n, seed) -> bytes``,
  deterministic pseudo-random data (``random.Random(seed).randbytes(n)``).
- ``store_dir``: an empty, existing directory for a chunk store.
- ``local_store``: a :class:`casync_store.LocalStore` in ``store_dir``
  (``sync=False``, to keep tests fast).
- ``data_dir``: the absolute path of ``tests/data``.

Hypothesis runs under the profile ``ci`` (50 examples, no deadline) unless
``HYPOTHESIS_PROFILE`` names another registered one (``dev``: 10 examples,
``thorough``: 1000 examples).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from typing import Callable

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from casync_store import LocalStore  # noqa: E402

__all__ = ["ROOT", "DATA_DIR", "rng_bytes"]

DATA_DIR = os.path.join(ROOT, "tests", "data")

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


def rng_bytes(n: int, seed: int = 0) -> bytes:
    """``n`` deterministic pseudo-random bytes for ``seed``."""
    return random.Random(seed).randbytes(n)


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
    """The :func:`rng_bytes` function."""
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
