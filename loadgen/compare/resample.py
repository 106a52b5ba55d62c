"""Bootstrap primitives: resamples as count vectors, and exact or binned weighted quantiles of
each resample (docs/COMPARE.md)."""

from __future__ import annotations

import math

import numpy as np


def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` bootstrap resamples of n units, as counts: row b, column i = how many times
    unit i was drawn in resample b (each row sums to n)."""
    dt = np.int32 if size * n < 2**31 else np.int64
    idx = rng.integers(0, n, size=(size, n), dtype=dt)
    idx += (np.arange(size, dtype=dt) * n)[:, None]
    counts = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
    # small integers: uint8 halves the memory traffic of the gathers and sums that follow
    return counts.astype(np.uint8 if counts.max() < 256 else np.int32)


def weighted_quantiles(sorted_vals: np.ndarray, counts: np.ndarray,
                       qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles of each resample, exactly as ``np.percentile`` (linear interpolation) on the
    resampled values: ``sorted_vals`` ascending, ``counts`` (b, n) multiplicities in that order.
    Returns (b, len(qs)); NaN for an empty resample."""
    b, n = counts.shape
    # One cumulative sum over the flattened rows is nondecreasing, so a single searchsorted
    # finds, for every row at once, the first position whose running count exceeds a rank.
    flat = np.cumsum(counts.ravel(), dtype=np.int32 if counts.size * int(counts.max(
        initial=0)) < 2**31 else np.int64)
    row_end = flat[n - 1::n]
    base = np.concatenate([[0], row_end[:-1]])
    total = row_end - base
    offset = np.arange(b, dtype=np.int64) * n
    out = np.full((b, len(qs)), np.nan)
    good = total > 0
    for j, q in enumerate(qs):
        h = (total - 1) * q
        k = np.floor(h)
        frac = h - k
        k = k.astype(flat.dtype)
        base_k = (base + k).astype(flat.dtype)  # same dtype: searchsorted must not copy flat
        # the value at 0-based rank k of row r is sorted_vals[#(running count <= k)]
        j0 = np.minimum(np.searchsorted(flat, base_k, side="right") - offset, n - 1)
        j1 = np.minimum(np.searchsorted(flat, base_k + 1, side="right") - offset, n - 1)
        v0, v1 = sorted_vals[j0], sorted_vals[j1]
        out[good, j] = (v0 + frac * (v1 - v0))[good]
    return out


class PooledQuantiles:
    """Percentiles of a pooled per-token distribution (ITL) whose resampling unit is the
    request.

    The pooled values are cut into bins; row i of H is request i's histogram (tokens per bin),
    so a resample's pooled histogram is counts @ H (one matrix product per batch). Bins: every
    1% of the pooled distribution, and around each target level q (±4 standard errors of the
    level, counting each request as one value: where a resample's quantile falls) one bin per
    distinct value or, when there are more distinct values than the budget allows, a grid of
    equally spaced levels. The quantile then follows numpy's rule (linear interpolation between
    the order statistics at ranks ⌊(N−1)q⌋ and the next), where the value at a rank inside a bin
    is spread evenly between the smallest and largest value the bin holds. Where every bin near
    the target holds one distinct value (runs with up to ~10^4 distinct values near it) this is
    exact; otherwise the bins are ~0.1% of the tokens wide and the error is far below the
    bootstrap spread (tests/test_compare.py checks both). Budget: requests × bins <= CELLS."""

    CELLS = 4_000_000

    def __init__(self, val: np.ndarray, w: np.ndarray, req: np.ndarray, n_req: int,
                 qs: tuple[float, ...], sorted_vals: np.ndarray, sorted_w: np.ndarray) -> None:
        sv, sw = sorted_vals, sorted_w
        total = int(sw.sum())
        cumw = np.cumsum(sw)
        budget = int(np.clip(self.CELLS // max(n_req, 1), 300, 5_000))
        per_q = max((budget - 101) // max(len(qs), 1), 10)
        parts = [weighted_quantiles(sv, sw[None, :], tuple(np.linspace(0, 1, 101)))[0],
                 sv[:1], sv[-1:]]
        for q in qs:
            # ±4 standard errors of the quantile's level with each request counted as one
            # value (the most clustered case): where a resample's quantile can fall
            half = min(max(4 * math.sqrt(q * (1 - q) / max(n_req, 1)), 0.002), 0.2)
            lo_l, hi_l = max(q - half, 0.0), min(q + half, 1.0)
            i0 = int(np.searchsorted(cumw, lo_l * total, side="left"))
            i1 = int(np.searchsorted(cumw, hi_l * total, side="right")) + 1
            window = np.unique(sv[i0:i1])
            if window.size > per_q:
                window = weighted_quantiles(sv, sw[None, :],
                                            tuple(np.linspace(lo_l, hi_l, per_q)))[0]
            parts.append(window)
        self.edges = np.unique(np.concatenate(parts))
        nb = self.edges.size
        # bin j holds the values in [edges[j], edges[j+1]); the last one the maximum
        sbin = np.searchsorted(self.edges, sv, side="right") - 1
        first = np.searchsorted(sbin, np.arange(nb), side="left")
        last = np.searchsorted(sbin, np.arange(nb), side="right") - 1
        filled = last >= first
        self.lo = self.edges.copy()
        self.hi = self.edges.copy()
        self.lo[filled] = sv[first[filled]]
        self.hi[filled] = sv[last[filled]]
        b = np.searchsorted(self.edges, val, side="right") - 1
        dtype = np.float32 if total < 2**24 else np.float64  # float32 sums of ints are exact
        self.hist = np.bincount(req * nb + b, weights=w, minlength=n_req * nb).reshape(
            n_req, nb).astype(dtype)
        self.qs = qs

    def _at_rank(self, mass: np.ndarray, cum: np.ndarray, r: np.ndarray) -> np.ndarray:
        rows = np.arange(mass.shape[0])
        j = np.minimum((cum <= r[:, None]).sum(axis=1), mass.shape[1] - 1)
        prev = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
        m = mass[rows, j]
        pos = np.where(m > 1, (r - prev) / np.where(m > 1, m - 1, 1), 0.0)
        return self.lo[j] + np.clip(pos, 0, 1) * (self.hi[j] - self.lo[j])

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        mass = (counts.astype(self.hist.dtype) @ self.hist).astype(np.float64)
        cum = np.cumsum(mass, axis=1)
        total = cum[:, -1]
        out = np.full((counts.shape[0], len(self.qs)), np.nan)
        for j, q in enumerate(self.qs):
            h = np.maximum(total - 1, 0) * q
            k = np.floor(h)
            frac = h - k
            v0 = self._at_rank(mass, cum, k)
            v1 = self._at_rank(mass, cum, np.minimum(k + 1, np.maximum(total - 1, 0)))
            out[:, j] = v0 + frac * (v1 - v0)
        out[total <= 0] = np.nan
        return out
