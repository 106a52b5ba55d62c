"""When requests are sent: a closed loop at fixed concurrency, or an open-loop arrival process.

In rate mode the send times are fixed in advance on an absolute timeline (wrk2's rule against
coordinated omission): a slow server or a busy client never pushes later arrivals back, latency
counts from the scheduled time, and the gap between schedule and actual send is reported as lag.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from loadgen.config import ARRIVALS


def arrival_offsets(rate: float, arrival: str = "poisson", burstiness: float = 1.0,
                    seed: int = 0) -> Iterator[float]:
    """Seconds from the start of the measured phase at which request i is due (endless).

    poisson: exponential gaps with mean 1/rate; constant: exactly 1/rate apart; gamma: gaps with
    mean 1/rate and shape ``burstiness`` (< 1 burstier than Poisson, > 1 smoother; 1 = Poisson).
    """
    if arrival == "trace":
        raise ValueError("trace arrivals are the records' own (trace_offsets)")
    if rate <= 0:
        raise ValueError("request rate must be > 0")
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival process {arrival!r} (choose from {ARRIVALS})")
    if burstiness <= 0:
        raise ValueError("burstiness must be > 0")
    rng = np.random.default_rng(seed)
    t = 0.0
    i = 0
    while True:
        if arrival == "constant":
            yield i / rate
            i += 1
            continue
        block = (rng.exponential(1.0 / rate, 4096) if arrival == "poisson"
                 else rng.gamma(burstiness, 1.0 / (rate * burstiness), 4096))
        for gap in block:
            yield t
            t += float(gap)


def trace_offsets() -> Iterator[float]:
    """Placeholders for a trace replay: each request's offset is its record's (plan.trace_due),
    read from the item itself (loadgen/client/loops.py)."""
    while True:
        yield 0.0
