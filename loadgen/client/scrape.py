"""Snapshots of the server's counters at named moments, and their deltas.

Every scrape is bounded (``RunConfig.probe_timeout_s``); after one goes unanswered the later ones
are skipped (a server that does not answer its metrics endpoint would otherwise cost the timeout
again at every edge of the window). Counters are also scraped every ``scrape_interval_s`` inside
the window, so a counter that went backwards (the server restarted) can be located: a delta sums
only the consistent segments between consecutive snapshots and says which ones it left out.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import httpx

from loadgen.engines.base import EngineAdapter


@dataclass(slots=True)
class Delta:
    """Counter increments from one snapshot to another, over the consistent segments."""

    values: dict[str, float]
    covered_s: float  # seconds of the span the kept segments cover
    span_s: float  # seconds from the first snapshot to the last
    resets: list[tuple[str, str]] = field(default_factory=list)  # segments left out


class Scrapes:
    def __init__(self, adapter: EngineAdapter, warnings: list[str],
                 timeout_s: float = 5.0) -> None:
        self.adapter = adapter
        self.warnings = warnings
        self.timeout_s = timeout_s
        self.snapshots: dict[str, dict[str, float]] = {}
        self.series: list[tuple[str, int, dict[str, float]]] = []  # (name, ns, counters)
        self._silent = False  # a scrape went unanswered: skip the rest

    async def take(self, http: httpx.AsyncClient, name: str) -> None:
        """Scrape now and keep the snapshot as ``name``; a failure is a warning, not an error."""
        if self._silent:
            return
        try:
            snap = await asyncio.wait_for(self.adapter.scrape(http), self.timeout_s)
        except TimeoutError:
            self._silent = True
            self.warnings.append(f"server statistics: no answer to the scrape at {name} within "
                                 f"{self.timeout_s:g} s; later scrapes skipped")
            return
        except (httpx.HTTPError, ValueError) as exc:
            self.warnings.append(f"could not scrape server statistics at {name}: {exc!r}")
            return
        self.snapshots[name] = snap
        self.series.append((name, time.monotonic_ns(), snap))

    async def every(self, http: httpx.AsyncClient, interval_s: float,
                    until: asyncio.Event) -> None:
        """Scrape every ``interval_s`` until ``until`` is set (snapshots ``tick_1``, ...)."""
        n = 0
        while not until.is_set() and not self._silent:
            try:
                await asyncio.wait_for(until.wait(), interval_s)
                return
            except TimeoutError:
                n += 1
                await self.take(http, f"tick_{n}")

    def delta(self, a: str, b: str) -> Delta | None:
        """Increments from snapshot ``a`` to ``b`` summed over the segments between consecutive
        snapshots in which no counter went backwards (None when either snapshot is missing or
        no segment is consistent)."""
        names = [n for n, _, _ in self.series]
        if a not in names or b not in names:
            return None
        i, j = names.index(a), names.index(b)
        segs = self.series[i:j + 1]
        total: dict[str, float] = {}
        resets: list[tuple[str, str]] = []
        covered = 0
        for (n0, t0, x), (n1, t1, y) in itertools.pairwise(segs):
            if any(y.get(k, 0.0) < v for k, v in x.items()):
                resets.append((n0, n1))
                continue
            covered += t1 - t0
            for k, v in y.items():
                total[k] = total.get(k, 0.0) + v - x.get(k, 0.0)
        span = segs[-1][1] - segs[0][1]
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
