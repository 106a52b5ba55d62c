"""The capacity search: bracketing, bisection, repetitions at the boundary (docs/METRICS.md,
"Capacity").

Pure logic over a ``probe(level) -> ProbeResult`` callable, so the same search drives a launched
engine, a fixed endpoint or a test's model.

1. **Bracketing**: probe ``start``; while it meets the SLOs double the level, while it fails halve
   it, until one level meets them and the next one up fails (``lo`` < ``hi``).
2. **Bisection**: probe the midpoint of [lo, hi] (integers for concurrency) until
   (hi − lo) / lo <= ``precision`` (for concurrency: also hi − lo = 1).
3. **Boundary repetitions**: lo and hi are probed again until each has ``confirm`` runs; a level
   passes only when every run of it met the SLOs, so a repetition that flips a verdict moves the
   bracket and bisection resumes.

Every step checks the budget (``max_runs`` probes, ``max_time`` seconds): when it is spent the
result keeps the bracket reached so far and says so. ``lo`` = the highest level whose every run
met the SLOs below the lowest level with a failing run (``hi``). The **value** is interpolated
between them on the binding margin (mean over each level's runs): the load at which the
margin crosses 1 on the straight line through (lo, m_lo) and (hi, m_hi), kept inside [lo, hi]
(for concurrency too: 9.6 says the boundary lies between 9, which held, and 10, which did not).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# time_scale: a trace's schedule run S times faster (loadgen/capacity/trace.py)
UNITS = {"rate": "requests/s", "concurrency": "concurrency", "time_scale": "time scale"}


@dataclass(slots=True)
class ProbeResult:
    level: float
    ok: bool
    margin: float  # the binding SLO margin (measured / limit; inf when cut or missing)
    binding: str | None = None
    cut: str | None = None  # why the step was cut short (over-saturation)
    info: dict[str, Any] = field(default_factory=dict)  # summary path, per-SLO values, ...


@dataclass(slots=True)
class SearchResult:
    kind: str
    value: float | None
    lo: float | None  # highest level that met the SLOs (None: none did)
    hi: float | None  # lowest level that failed them (None: none did up to max_level)
    converged: bool
    stopped_by: str | None  # "max_runs", "max_time", "floor", "ceiling" or None
    binding: str | None
    probes: list[ProbeResult]

    @property
    def unit(self) -> str:
        return UNITS[self.kind]


@dataclass(slots=True)
class SearchSpec:
    kind: str = "concurrency"  # or "rate", "time_scale"
    start: float = 1.0
    precision: float = 0.10
    confirm: int = 2  # runs each of lo and hi needs before the answer stands
    max_runs: int = 30
    max_time: float | None = None
    max_level: float = 4096.0
    min_level: float | None = None  # default: 1 (concurrency) or start / 64 (rate, time scale)

    def validate(self) -> None:
        if self.kind not in UNITS:
            raise ValueError(f"--search must be one of {', '.join(UNITS)}")
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError("--start must be a number > 0")
        if self.kind == "concurrency" and self.start != int(self.start):
            raise ValueError("--start must be a whole number with --search concurrency")
        if not (self.max_level >= self.start and math.isfinite(self.max_level)):
            raise ValueError(f"--max-level must be a number >= --start ({self.start:g})")
        if not 0 < self.precision < 1:
            raise ValueError("--precision must be in (0, 1), e.g. 0.1 for 10%")
        if self.max_runs < 2:
            raise ValueError("--max-runs must be >= 2")
        if self.max_time is not None and self.max_time <= 0:
            raise ValueError("--max-time must be > 0 seconds")
        if self.confirm < 1:
            raise ValueError("--confirm must be >= 1")


class _Budget(Exception):
    def __init__(self, why: str) -> None:
        self.why = why


def search(spec: SearchSpec, probe: Callable[[float], ProbeResult],
           clock: Callable[[], float] = time.monotonic) -> SearchResult:
    spec.validate()
    integer = spec.kind == "concurrency"
    floor_level = spec.min_level or (1.0 if integer else spec.start / 64)
    probes: list[ProbeResult] = []
    t0 = clock()

    def run(level: float) -> ProbeResult:
        if len(probes) >= spec.max_runs:
            raise _Budget("max_runs")
        if spec.max_time is not None and clock() - t0 >= spec.max_time:
            raise _Budget("max_time")
        r = probe(level)
        probes.append(r)
        return r

    def bracket() -> tuple[float | None, float | None]:
        failing = sorted({p.level for p in probes if not p.ok})
        hi = failing[0] if failing else None
        passing = [p.level for p in probes if (hi is None or p.level < hi)
                   and all(q.ok for q in probes if q.level == p.level)]
        return (max(passing) if passing else None), hi

    def runs(level: float) -> int:
        return sum(1 for p in probes if p.level == level)

    def narrow(lo: float, hi: float) -> bool:
        return hi - lo <= 1 if integer else (hi - lo) / lo <= spec.precision

    stopped_by = None
    try:
        run(spec.start)
        while True:
            lo, hi = bracket()
            if lo is None:  # every level so far failed: go down
                level = math.floor(hi / 2) if integer else hi / 2
                if level < floor_level:
                    stopped_by = "floor"
                    break
            elif hi is None:  # every level so far met the SLOs: go up
                level = lo * 2
                if level > spec.max_level:
                    stopped_by = "ceiling"
                    break
            elif not narrow(lo, hi) and not (integer and (hi - lo) / lo <= spec.precision):
                level = (lo + hi) / 2
                level = math.floor(level) if integer else level
            else:
                todo = [lv for lv in (lo, hi) if runs(lv) < spec.confirm]
                if not todo:
                    break
                level = todo[0]
            run(level)
    except _Budget as b:
        stopped_by = b.why
    lo, hi = bracket()
    converged = stopped_by is None
    value, binding = _value(probes, lo, hi)
    return SearchResult(kind=spec.kind, value=value, lo=lo, hi=hi, converged=converged,
                        stopped_by=stopped_by, binding=binding, probes=probes)


def _mean_margin(probes: list[ProbeResult], level: float) -> float:
    ms = [p.margin for p in probes if p.level == level]
    return sum(ms) / len(ms) if ms else math.inf


def _value(probes: list[ProbeResult], lo: float | None,
           hi: float | None) -> tuple[float | None, str | None]:
    """The interpolated boundary and the binding SLO (the one failing at hi, else the one
    closest to its limit at lo)."""
    if lo is None:
        return None, _binding(probes, hi)
    if hi is None:
        return lo, _binding(probes, lo)
    m_lo, m_hi = _mean_margin(probes, lo), _mean_margin(probes, hi)
    value = lo
    if math.isfinite(m_hi) and m_hi > m_lo:
        value = lo + (1.0 - m_lo) / (m_hi - m_lo) * (hi - lo)
        value = min(max(value, lo), hi)
    return value, _binding(probes, hi)


def _binding(probes: list[ProbeResult], level: float | None) -> str | None:
    at = [p for p in probes if p.level == level and p.binding]
    return max(at, key=lambda p: p.margin).binding if at else None
