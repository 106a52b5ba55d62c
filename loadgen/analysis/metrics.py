"""Every number in summary.json, computed from per-request records (docs/METRICS.md defines each).

Pure functions over the dicts in requests.jsonl, so a summary can be recomputed from a run
directory at any time and tests can check each formula against known truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loadgen.results.summary import (
    Stats,
)

QUANTILES = {"p50": 50, "p90": 90, "p99": 99}


def stats(values: Sequence[float] | np.ndarray) -> Stats:
    """mean, p50, p90, p99 and max; percentiles by linear interpolation between order
    statistics (numpy's default). None when there are no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Stats()
    p50, p90, p99 = (float(v) for v in np.percentile(arr, list(QUANTILES.values())))
    return Stats(mean=float(arr.mean()), p50=p50, p90=p90, p99=p99, max=float(arr.max()),
                 count=int(arr.size))


def reference_ns(r: dict[str, Any]) -> int:
    """Latency counts from the scheduled send time (equal to the send time in closed loop)."""
    return r["scheduled_ns"] or r["send_ns"]


def ttft_ms(r: dict[str, Any]) -> float:
    return (r["first_token_ns"] - reference_ns(r)) / 1e6


def e2e_ms(r: dict[str, Any]) -> float:
    return (r["end_ns"] - reference_ns(r)) / 1e6


def tpot_ms(r: dict[str, Any]) -> float | None:
    n = r["output_tokens"]
    if n < 2:
        return None
    return (e2e_ms(r) - ttft_ms(r)) / (n - 1)


def per_user_tokens_per_s(r: dict[str, Any]) -> float | None:
    """Decode speed one user sees: (tokens - 1) / (last token arrival - first token arrival)."""
    arr = r["arrivals_ns"]
    if r["output_tokens"] < 2 or len(arr) < 2 or arr[-1] <= arr[0]:
        return None
    return (r["output_tokens"] - r["event_tokens"][0]) / ((arr[-1] - arr[0]) / 1e9)


def itl_values_ms(r: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(per-token ITL, inter-chunk latency). An event that brings n tokens after a gap g adds n
    values g/n to the per-token ITL (its tokens arrived together, so each cost g/n of waiting)
    and one value g to the inter-chunk latency."""
    arr = r["arrivals_ns"]
    ntok = r["event_tokens"]
    per_token: list[float] = []
    per_chunk: list[float] = []
    for i in range(1, len(arr)):
        gap = (arr[i] - arr[i - 1]) / 1e6
        per_chunk.append(gap)
        n = ntok[i]
        per_token.extend([gap / n] * n)
    return per_token, per_chunk
