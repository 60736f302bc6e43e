"""Tests of the worker pool every operation runs on (casync_store.plumbing.pool).

ThreadMap keeps order (or not, when asked), hands out batches, bounds the
items in flight, propagates the first error (of a worker or of the input)
promptly and stops its workers on an early exit; Claims hands out each id
once and bounds how many it remembers.
"""

from __future__ import annotations

import threading
import time

import pytest

from casync_store.plumbing.pool import Claims, ThreadMap


def test_pool_ordered_and_unordered():
    def slow_square(x: int) -> int:
        time.sleep(0.001 * (x % 3))
        return x * x

    with ThreadMap(slow_square, range(200), workers=4, in_flight=8) as results:
        assert list(results) == [x * x for x in range(200)]
    with ThreadMap(slow_square, range(200), workers=4, ordered=False) as results:
        assert sorted(results) == [x * x for x in range(200)]
    with ThreadMap(slow_square, [], workers=3) as results:
        assert list(results) == []


@pytest.mark.parametrize("batch", [2, 3, 7])
def test_pool_batches(batch):
    with ThreadMap(lambda x: -x, range(101), workers=3, batch=batch) as results:
        assert list(results) == [-x for x in range(101)]
    with ThreadMap(lambda x: -x, range(101), workers=3, ordered=False, batch=batch) as results:
        assert sorted(results) == sorted(-x for x in range(101))

    def fail_at_50(x: int) -> int:
        if x == 50:
            raise KeyError(x)
        return x

    with pytest.raises(KeyError), ThreadMap(fail_at_50, range(101), workers=2, batch=batch) as results:
        list(results)


def test_pool_bounds_items_in_flight():
    taken = 0
    lock = threading.Lock()

    def items():
        nonlocal taken
        for i in range(100):
            with lock:
                taken += 1
            yield i

    with ThreadMap(lambda x: x, items(), workers=3, in_flight=5) as results:
        for i, value in enumerate(results):
            assert value == i
            time.sleep(0.001)
            assert taken <= i + 1 + 5
    taken = 0
    with ThreadMap(lambda x: x, items(), workers=2, in_flight=8, batch=4) as results:
        for i, value in enumerate(results):
            assert value == i
            time.sleep(0.001)
            assert taken <= i + 1 + 8 + 4  # 8 in flight plus the batch being handed out


def test_pool_propagates_the_first_error_promptly():
    done: list[int] = []

    def work(x: int) -> int:
        if x == 5:
            raise ValueError("boom at 5")
        time.sleep(0.01)
        done.append(x)
        return x

    began = time.monotonic()
    with pytest.raises(ValueError, match="boom at 5"), ThreadMap(work, range(10_000), workers=4) as results:
        for _ in results:
            pass
    assert time.monotonic() - began < 5
    assert len(done) < 100  # the rest was not processed


def test_pool_propagates_input_errors():
    def items():
        yield 1
        raise OSError("read failed")

    with pytest.raises(OSError, match="read failed"), ThreadMap(lambda x: x, items(), workers=2) as results:
        list(results)


def test_pool_early_exit_stops_workers():
    seen: list[int] = []
    with ThreadMap(seen.append, iter(range(1_000_000)), workers=2, in_flight=4) as results:
        for i, _ in enumerate(results):
            if i == 10:
                break
    count = len(seen)
    time.sleep(0.05)
    assert len(seen) == count < 100
    assert not [t for t in threading.enumerate() if t.name.startswith("pycasync-worker")]


def test_claims_once_per_id_and_bounded():
    claims = Claims(limit=2)
    assert claims.claim(b"a") and not claims.claim(b"a")
    assert claims.claim(b"b") and claims.claim(b"c")  # c is past the limit: only busy
    assert not claims.claim(b"c")
    claims.done(b"c")
    assert claims.claim(b"c")  # forgotten once handled; the store decides then
