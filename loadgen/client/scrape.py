"""Snapshots of the server's counters at named moments, and their deltas."""

from __future__ import annotations

import httpx

from loadgen.engines.base import EngineAdapter


class Scrapes:
    def __init__(self, adapter: EngineAdapter, warnings: list[str]) -> None:
        self.adapter = adapter
        self.warnings = warnings
        self.snapshots: dict[str, dict[str, float]] = {}

    async def take(self, http: httpx.AsyncClient, name: str) -> None:
        """Scrape now and keep the snapshot as ``name``; a failure is a warning, not an error."""
        try:
            self.snapshots[name] = await self.adapter.scrape(http)
        except (httpx.HTTPError, ValueError) as exc:
            self.warnings.append(f"could not scrape server statistics at {name}: {exc!r}")

    def delta(self, a: str, b: str) -> dict[str, float] | None:
        """Counter increments from snapshot ``a`` to ``b`` (None when either is missing)."""
        if a not in self.snapshots or b not in self.snapshots:
            return None
        x, y = self.snapshots[a], self.snapshots[b]
        return {k: y[k] - x.get(k, 0.0) for k in y}
