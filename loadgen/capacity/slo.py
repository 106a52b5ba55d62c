"""The SLO set of a capacity search and its verdict on one run (docs/METRICS.md, "Capacity").

Latency limits are the sweep's (``<metric>_<stat>_ms=<limit>``, loadgen/analysis/sweeps.py:
``parse_slos``), read from the run's summary. ``good_pct=<P>`` adds a goodput-style objective:
at least P% of the window's requests meet every latency limit individually (each request's own
TTFT, TPOT, E2E, worst ITL gap; ``request_meets_slos``). Each objective has a **margin**:
measured / limit for a latency, P / (percentage of requests within) for ``good_pct``; a run
meets the SLO set when every margin is <= 1, and the **binding** objective is the one with the
largest margin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from loadgen.analysis.metrics import e2e_ms, tpot_ms, ttft_ms
from loadgen.analysis.sweeps import parse_slos, request_meets_slos
from loadgen.results.summary import Summary

GOOD_KEY = "good_pct"


@dataclass(slots=True)
class SloSet:
    latency: dict[str, float]  # e.g. {"tpot_p99_ms": 50.0}
    good_pct: float | None = None

    def keys(self) -> list[str]:
        return [*self.latency, *([GOOD_KEY] if self.good_pct is not None else [])]

    def describe(self) -> str:
        parts = [f"{k.replace('_ms', '')} <= {v:g} ms" for k, v in self.latency.items()]
        if self.good_pct is not None:
            parts.append(f"{self.good_pct:g}% of requests within every limit")
        return ", ".join(parts)


@dataclass(slots=True)
class Verdict:
    ok: bool
    margins: dict[str, float | None]  # per objective: measured / limit (<= 1 meets it)
    values: dict[str, float | None]  # per objective: the measured figure
    binding: str | None  # the objective with the largest margin
    violations: list[str] = field(default_factory=list)

    @property
    def margin(self) -> float:
        """The binding objective's margin (inf when a figure is missing)."""
        ms = [m if m is not None else math.inf for m in self.margins.values()]
        return max(ms, default=math.inf)


def parse_slo_set(text: str | None) -> SloSet:
    """``ttft_p99_ms=2000,tpot_p50_ms=50,good_pct=95``; ValueError with one line on bad input."""
    good = None
    rest = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, value = part.partition("=")
        if key == GOOD_KEY:
            try:
                good = float(value)
            except ValueError:
                raise ValueError(f"bad SLO {part!r}: good_pct=P with P in (0, 100]") from None
            if not eq or not 0 < good <= 100:
                raise ValueError(f"bad SLO {part!r}: good_pct=P with P in (0, 100]")
        else:
            rest.append(part)
    latency = parse_slos(",".join(rest))
    for k, v in latency.items():
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"bad SLO {k}={v:g}: a limit is a number > 0")
    if not latency:
        raise ValueError("give at least one latency limit, e.g. --slo tpot_p99_ms=50 "
                         "(good_pct=P needs the limits it counts against)")
    return SloSet(latency, good)


def judge(summary: Summary, records: Iterable[dict[str, Any]], slos: SloSet) -> Verdict:
    """One run against the SLO set: margins, the binding objective, the violations. Failed
    requests fail the run (as in the sweep's capacity)."""
    margins: dict[str, float | None] = {}
    values: dict[str, float | None] = {}
    why: list[str] = []
    for key, limit in slos.latency.items():
        metric, stat, _ = key.split("_")
        st = summary.latency_ms.metric(metric)
        value = st.get(stat) if st is not None else None
        values[key] = value
        margins[key] = None if value is None else value / limit
        if value is None or value > limit:
            why.append(f"{metric} {stat} {'-' if value is None else f'{value:.1f}'} ms "
                       f"> {limit:g} ms")
    if slos.good_pct is not None:
        w = summary.window
        n = good = 0
        for r in records:
            if r["warmup"] or not w.start_ns <= r["end_ns"] <= w.end_ns:
                continue
            n += 1
            good += request_meets_slos(r, slos.latency)
        pct = 100.0 * good / n if n else None
        values[GOOD_KEY] = pct
        margins[GOOD_KEY] = (slos.good_pct / pct if pct else None)
        if pct is None or pct < slos.good_pct:
            why.append(f"{'-' if pct is None else f'{pct:.1f}'}% of requests within the "
                       f"limits < {slos.good_pct:g}%")
    bad = summary.requests.error + summary.requests.cancelled
    if bad:
        why.append(f"{bad} failed or cancelled requests")
    binding = max(margins, key=lambda k: math.inf if margins[k] is None else margins[k],
                  default=None)
    return Verdict(ok=not why, margins=margins, values=values, binding=binding, violations=why)


# Statistics a partial run can already decide: the q-th percentile (max = the 100th), over the
# per-request figures below; a mean, ITL (per token) or good_pct are left to the whole run.
QUANTILES = {"p50": 50, "p90": 90, "p99": 99, "max": 100}
PER_REQUEST = {"ttft": ttft_ms, "e2e": e2e_ms, "tpot": tpot_ms}
# past a million values a statistic is read from a sketch within this relative error
# (docs/METRICS.md, "Exact and approximate statistics"): only values beyond it count
SKETCH_ERROR = 0.001


def over_needed(n: int, q: int) -> int:
    """The fewest of ``n`` values above a limit that put their q-th percentile above it,
    whatever the others are: with linear interpolation between order statistics (position
    (n - 1) q / 100), n - floor((n - 1) q / 100). Never decreasing in n, so it holds for any
    count up to n."""
    return n - (n - 1) * q // 100


@dataclass(slots=True)
class Decided:
    """A probe whose verdict is already a failure, whatever its remaining requests do."""

    key: str  # the objective, e.g. "ttft_p99_ms"
    over: int  # measured ok requests so far above its limit
    needed: int
    planned: int  # measured requests the probe sends at most

    def describe(self) -> str:
        return (f"decided: {self.over} requests above the {self.key} limit, {self.needed} of "
                f"at most {self.planned} are enough to fail it")


def decided_failure(records: Iterable[dict[str, Any]], slos: SloSet,
                    planned: int) -> Decided | None:
    """The first latency objective that the ended requests already fail for any outcome of the
    others (``planned`` measured requests at most: ok ones are fewer), else None."""
    recs = [r for r in records if not r["warmup"] and r["status"] == "ok"]
    for key, limit in slos.latency.items():
        metric, stat, _ = key.split("_")
        if metric not in PER_REQUEST or stat not in QUANTILES:
            continue
        figure = PER_REQUEST[metric]
        over = 0
        for r in recs:
            v = figure(r)
            over += v is not None and v > limit * (1 + SKETCH_ERROR)
        needed = over_needed(planned, QUANTILES[stat])
        if over >= needed:
            return Decided(key, over, needed, planned)
    return None
