"""Fixtures of the format tests.

- ``backend``: each chunker backend module in turn (``_buzhash``, the pure
  Python one, then the C one); the C run skips when the extension is not
  built, but fails under ``PYCASYNC_REQUIRE_C=1`` (see
  :func:`tests.support.chunker_helpers.c_module`).
"""

from __future__ import annotations

from types import ModuleType

import pytest

from casync_format import _buzhash
from tests.support.chunker_helpers import c_module

__all__: list[str] = []


@pytest.fixture(params=["python", "c"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    """Each backend module in turn."""
    return _buzhash if request.param == "python" else c_module()
