"""The streaming statistics (loadgen/analysis/streaming.py): exact below the limit (the very
numbers stats() gives), within the stated relative error above it."""

from __future__ import annotations

import numpy as np
import pytest

from loadgen.analysis.metrics import stats
from loadgen.analysis.streaming import RELATIVE_ERROR, Quantity


def _feed(q: Quantity, values: np.ndarray) -> None:
    # scalars and arrays, as the accumulator feeds them
    for chunk in np.array_split(values, 7):
        q.add_many(chunk[: len(chunk) // 2])
        for v in chunk[len(chunk) // 2:]:
            q.add(float(v))


def test_exact_below_the_limit_is_bit_identical():
    rng = np.random.default_rng(1)
    values = rng.lognormal(1.0, 1.5, 5000)
    q = Quantity(exact_limit=10_000)
    _feed(q, values)
    assert q.exact
    assert q.stats() == stats(values)
    assert q.percentile(50) == float(np.percentile(values, 50))
    assert q.mean() == float(np.mean(values))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_within_the_stated_relative_error(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.lognormal(0.0, 2.0, 30_000), np.zeros(500),
                             rng.uniform(1e-4, 1e4, 3000)])
    rng.shuffle(values)
    q = Quantity(exact_limit=1000)
    _feed(q, values)
    assert not q.exact
    got, want = q.stats(), stats(values)
    assert got.relative_error == RELATIVE_ERROR and want.relative_error is None
    assert got.count == want.count and got.max == want.max
    assert got.mean == pytest.approx(want.mean, rel=1e-12)
    for name in ("p50", "p90", "p99"):
        assert abs(got.get(name) - want.get(name)) <= RELATIVE_ERROR * want.get(name)
    # ... and not exact: the histogram really is in use
    assert any(got.get(n) != want.get(n) for n in ("p50", "p90", "p99"))
    for qq in (1, 25, 75, 99.9):
        exact = float(np.percentile(values, qq))
        assert abs(q.percentile(qq) - exact) <= RELATIVE_ERROR * exact


def test_negative_and_zero_values_in_the_histogram():
    values = np.array([-5.0, -1.0, 0.0, 0.0, 2.0, 3.0, 1000.0] * 200)
    q = Quantity(exact_limit=10)
    q.add_many(values)
    for qq in (0, 10, 30, 50, 70, 100):
        exact = float(np.percentile(values, qq))
        assert abs(q.percentile(qq) - exact) <= RELATIVE_ERROR * abs(exact)
