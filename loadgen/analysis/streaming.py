"""Statistics of one quantity fed value by value, in bounded memory (docs/METRICS.md, "Exact and
approximate statistics").

A ``Quantity`` keeps its values exactly (numpy chunks, in arrival order) until it holds
``exact_limit`` of them, so every small run's statistics are the very numbers ``stats()`` gives
(same array, same order: bit-identical means and percentiles). Past the limit it folds them into a
log-bucketed histogram (DDSketch's mapping: bucket i holds (g^(i-1), g^i], g = (1+a)/(1-a), and
answers 2 g^i / (g+1)), whose percentiles are within a relative error ``a`` of the exact
interpolated order statistics; count, mean and max stay exact (the mean up to float rounding).
Vectorised on purpose: a 100,000 x 256-token run feeds 25 million inter-token latencies.
"""

from __future__ import annotations

import math

import numpy as np

from loadgen.results.summary import Stats

EXACT_LIMIT = 1_000_000  # values of one quantity kept exactly (8 MB)
RELATIVE_ERROR = 0.001  # the histogram's bound on a percentile's relative error
_MIN, _MAX = 1e-9, 1e12  # the histogram's range (ms): 1 fs .. 31 years; clamped outside
_PERCENTILES = (50.0, 90.0, 99.0)


class _LogHistogram:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._lg = math.log(self.gamma)
        self._lo = math.floor(math.log(_MIN) / self._lg)
        size = math.ceil(math.log(_MAX) / self._lg) - self._lo + 1
        self.pos = np.zeros(size, dtype=np.int64)
        self.neg = np.zeros(size, dtype=np.int64)
        self.zeros = 0

    def _index(self, mag: np.ndarray) -> np.ndarray:
        mag = np.clip(mag, _MIN, _MAX)
        idx = np.ceil(np.log(mag) / self._lg).astype(np.int64) - self._lo
        return np.clip(idx, 0, self.pos.size - 1)

    def add(self, values: np.ndarray) -> None:
        pos = values[values > 0]
        neg = values[values < 0]
        self.zeros += int(values.size - pos.size - neg.size)
        if pos.size:
            self.pos += np.bincount(self._index(pos), minlength=self.pos.size)
        if neg.size:
            self.neg += np.bincount(self._index(-neg), minlength=self.neg.size)

    def percentiles(self, qs: tuple[float, ...], n: int) -> list[float]:
        """numpy's default (linear interpolation between the order statistics at ranks
        floor(h) and ceil(h), h = q (n-1) / 100), each order statistic read from its bucket."""
        reps = 2 * self.gamma ** (np.arange(self.pos.size) + self._lo) / (self.gamma + 1)
        values = np.concatenate([-reps[::-1], [0.0], reps])
        counts = np.concatenate([self.neg[::-1], [self.zeros], self.pos])
        cum = np.cumsum(counts)
        out = []
        for q in qs:
            h = q * (n - 1) / 100
            lo, hi = math.floor(h), math.ceil(h)
            v_lo, v_hi = values[np.searchsorted(cum, [lo + 1, hi + 1])]
            out.append(float(v_lo + (h - lo) * (v_hi - v_lo)))
        return out


class Quantity:
    """One quantity's values: exact below ``exact_limit`` values, a histogram above."""

    __slots__ = ("_buf", "_chunks", "_hist", "_max", "_sum", "alpha", "count", "exact_limit")

    def __init__(self, exact_limit: int = EXACT_LIMIT, alpha: float = RELATIVE_ERROR) -> None:
        self.exact_limit = exact_limit
        self.alpha = alpha
        self.count = 0
        self._buf: list[float] = []
        self._chunks: list[np.ndarray] = []
        self._hist: _LogHistogram | None = None
        self._sum = 0.0
        self._max = -math.inf

    @property
    def exact(self) -> bool:
        return self._hist is None

    def add(self, value: float) -> None:
        self._buf.append(value)
        self.count += 1
        if len(self._buf) >= 65536:
            self._flush()

    def add_many(self, values: np.ndarray) -> None:
        if not values.size:
            return
        self._flush()
        self.count += int(values.size)
        self._take(np.asarray(values, dtype=float))

    def _flush(self) -> None:
        if self._buf:
            arr = np.asarray(self._buf, dtype=float)
            self._buf = []
            self._take(arr)

    def _take(self, arr: np.ndarray) -> None:
        if self._hist is None:
            self._chunks.append(arr)
            if self.count > self.exact_limit:
                self._spill()
            return
        self._sum += float(arr.sum())
        self._max = max(self._max, float(arr.max()))
        self._hist.add(arr)

    def _spill(self) -> None:
        self._hist = _LogHistogram(self.alpha)
        for arr in self._chunks:
            self._sum += float(arr.sum())
            self._max = max(self._max, float(arr.max()))
            self._hist.add(arr)
        self._chunks = []

    def values(self) -> np.ndarray:
        """The exact values in arrival order (only while exact)."""
        assert self._hist is None
        self._flush()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0)

    def stats(self) -> Stats:
        from loadgen.analysis.metrics import stats

        self._flush()
        if self._hist is None:
            return stats(self.values())
        p50, p90, p99 = self._hist.percentiles(_PERCENTILES, self.count)
        return Stats(mean=self._sum / self.count, p50=p50, p90=p90, p99=p99, max=self._max,
                     count=self.count, relative_error=self.alpha)

    def percentile(self, q: float) -> float | None:
        self._flush()
        if not self.count:
            return None
        if self._hist is None:
            return float(np.percentile(self.values(), q))
        return self._hist.percentiles((q,), self.count)[0]

    def mean(self) -> float | None:
        self._flush()
        if not self.count:
            return None
        if self._hist is None:
            return float(np.mean(self.values()))
        return self._sum / self.count
