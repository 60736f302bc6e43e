"""Helpers of the chunker tests in tests/format (no tests here).

:data:`MIB`; :func:`c_module`, the C backend of ``casync_format.chunker``
(skips without it, fails under ``PYCASYNC_REQUIRE_C=1``); :func:`ends`, the
chunk end offsets ``iter_chunks`` gives, checking that the chunks tile the
data; and :func:`chunk_params`, a hypothesis strategy of valid
:class:`ChunkerParams` small enough for the pure-Python backend. The
``backend`` fixture built on :func:`c_module` is in ``tests/format/conftest.py``.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest
from hypothesis import strategies as st

from casync_format import chunker
from casync_format.chunker import ChunkerParams, iter_chunks

__all__ = ["MIB", "c_module", "ends", "chunk_params"]

MIB = 1 << 20


def c_module() -> ModuleType:
    """The C backend; skip without it, fail under PYCASYNC_REQUIRE_C=1."""
    module = chunker._backends().get("c")
    if module is None:
        if os.environ.get("PYCASYNC_REQUIRE_C") == "1":
            pytest.fail("PYCASYNC_REQUIRE_C=1 but the C chunker is not built")
        pytest.skip("C chunker not built (python3 setup.py build_ext --inplace)")
    return module


def ends(data: object, params: ChunkerParams, backend: ModuleType | None = None, **kw: object) -> list[int]:
    """Chunk end offsets from iter_chunks, checking that the chunks tile the data."""
    out, pos = [], 0
    for start, size in iter_chunks(data, params, backend=backend, **kw):  # type: ignore[arg-type]
        assert start == pos and size > 0
        pos += size
        out.append(pos)
    return out


@st.composite
def chunk_params(draw: st.DrawFn) -> ChunkerParams:
    """Valid ChunkerParams with min <= avg <= max <= 6000."""
    low = draw(st.integers(49, 700))
    avg = draw(st.integers(low, 3000))
    high = draw(st.integers(avg, 6000))
    return ChunkerParams(low, avg, high)
