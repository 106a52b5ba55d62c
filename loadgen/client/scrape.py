"""Snapshots of the server's counters at named moments.

The snapshots are kept in order (``series``, saved in facts.json); their deltas are taken by
loadgen/analysis/counters.py. Every scrape is bounded (``RunConfig.probe_timeout_s``); after one
goes unanswered the later ones are skipped (a server that does not answer its metrics endpoint
would otherwise cost the timeout again at every edge of the window). Counters are also scraped
every ``scrape_interval_s`` inside the window, so a counter that went backwards (the server
restarted) can be located.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from loadgen.engines.base import EngineAdapter, one_line
from loadgen.results.facts import Scrape


class Scrapes:
    def __init__(self, adapter: EngineAdapter, warnings: list[str],
                 timeout_s: float = 5.0) -> None:
        self.adapter = adapter
        self.warnings = warnings
        self.timeout_s = timeout_s
        self.snapshots: dict[str, dict[str, float]] = {}
        self.series: list[Scrape] = []
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
        except httpx.HTTPError as exc:
            self.warnings.append(f"could not scrape server statistics at {name}: "
                                 f"{one_line(str(exc) or type(exc).__name__, 160)}")
            return
        except ValueError as exc:
            self.warnings.append(f"could not read the server's statistics at {name}: the "
                                 f"metrics page is not in Prometheus text format "
                                 f"({one_line(str(exc), 120)})")
            return
        self.snapshots[name] = snap
        self.series.append(Scrape(name, time.monotonic_ns(), snap))

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
