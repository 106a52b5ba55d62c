"""Counter deltas between named scrapes, over the consistent segments only.

A delta from snapshot ``a`` to ``b`` sums the increments of every segment between consecutive
snapshots in which no counter went backwards; a segment where one did (the server restarted) is
left out and named. Pure functions over the saved scrapes (facts.json), so the run and
``loadgen summarize`` take the same deltas.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from loadgen.results.facts import Scrape


@dataclass(slots=True)
class Delta:
    """Counter increments from one snapshot to another, over the consistent segments."""

    values: dict[str, float]
    covered_s: float  # seconds of the span the kept segments cover
    span_s: float  # seconds from the first snapshot to the last
    resets: list[tuple[str, str]] = field(default_factory=list)  # segments left out


def counter_delta(series: list[Scrape], a: str, b: str) -> Delta | None:
    """Increments from snapshot ``a`` to ``b`` (None when either is missing)."""
    names = [s.name for s in series]
    if a not in names or b not in names:
        return None
    i, j = names.index(a), names.index(b)
    segs = series[i:j + 1]
    total: dict[str, float] = {}
    resets: list[tuple[str, str]] = []
    covered = 0
    for x, y in itertools.pairwise(segs):
        if any(y.counters.get(k, 0.0) < v for k, v in x.counters.items()):
            resets.append((x.name, y.name))
            continue
        covered += y.t_ns - x.t_ns
        for k, v in y.counters.items():
            total[k] = total.get(k, 0.0) + v - x.counters.get(k, 0.0)
    span = segs[-1].t_ns - segs[0].t_ns
    if resets and len(resets) == len(segs) - 1:
        return Delta({}, 0.0, span / 1e9, resets)
    return Delta(total, covered / 1e9, span / 1e9, resets)


def consistent(delta: Delta | None, what: str, notes: list[str]) -> dict[str, float] | None:
    """A delta's values, with a warning when a counter reset (a server restart) was left out;
    None (acceptance unavailable, with the reason) when no segment is consistent."""
    if delta is None:
        return None
    if not delta.resets:
        return delta.values
    where = ", ".join(f"{a} -> {b}" for a, b in delta.resets)
    if not delta.values:
        notes.append(f"server counters went backwards over the {what} (between scrapes {where}: "
                     f"the server restarted?); counter deltas and acceptance unavailable")
        return None
    notes.append(f"server counters went backwards over the {what} (between scrapes {where}: "
                 f"the server restarted?); counter deltas and acceptance use only the "
                 f"consistent segments, {delta.covered_s:.1f} s of {delta.span_s:.1f} s")
    return delta.values
