"""Sources of counter readings: the run's endpoint, one metrics URL, or a Prometheus server.

Each ``read`` returns the readings of the replicas it speaks for, keyed by the replica's name
(a URL, or a Prometheus ``instance``); a replica known to be down is None. A source that
cannot answer raises (httpx.HTTPError, ValueError); loadgen.client.scrape bounds and records it.
This is the one place loadgen reads Prometheus text or Prometheus' API: any other exporter
(a telemetry source) reads through ``fetch_exposition`` and ``PrometheusApi``; its targets
are parsed by loadgen/config/targets.py and DNS-expanded by loadgen/scrape/targets.py.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import httpx

from loadgen.config.targets import MetricsTarget
from loadgen.engines.base import EngineAdapter
from loadgen.results.redact import redact_url
from loadgen.scrape.identity import identity_of, start_time

# Prometheus: the range read at every edge starts this long before the run's first edge (a
# fixed anchor, so each series' reset-adjusted total has the same origin at every edge)
LOOKBACK_S = 120.0
# Prometheus: how long an edge waits for a scrape of every replica taken after the edge
FRESH_WAIT_S = 60.0
FRESH_POLL_S = 0.25


@dataclass(slots=True)
class Reading:
    """One replica's answer to one scrape."""

    counters: dict[str, float]
    identity: str | None = None  # who answered: a process start time, an instance label
    start_time: float | None = None  # the process's start, seconds since the epoch
    resets: int = 0  # counter resets the source itself handled so far (Prometheus)


async def fetch_exposition(http: httpx.AsyncClient, url: str) -> bytes:
    """The body of a Prometheus text endpoint (an absolute URL, or a path on ``http``)."""
    resp = await http.get(url)
    resp.raise_for_status()
    return resp.content


def _text_reading(adapter: EngineAdapter, body: bytes) -> Reading:
    start = start_time(body)
    return Reading(adapter.counters_from_prometheus(body.decode("utf-8", "replace")),
                   identity_of(start), start)


class EndpointSource:
    """``<endpoint>/metrics`` through the run's own client (no ``--metrics``)."""

    def __init__(self, adapter: EngineAdapter, endpoint: str) -> None:
        self.adapter = adapter
        self.name = redact_url(endpoint).rstrip("/") + (adapter.metrics_path or "/metrics")

    async def read(self, http: httpx.AsyncClient, edge: bool) -> dict[str, Reading | None]:
        a = self.adapter
        if a.metrics_path is None:
            return {self.name: Reading({})}
        if type(a).scrape is not EngineAdapter.scrape:  # stats that are not Prometheus text
            return {self.name: Reading(await a.scrape(http))}  # (TRT-LLM's JSON iterations)
        return {self.name: _text_reading(a, await fetch_exposition(http, a.metrics_path))}


class UrlSource:
    """One ``--metrics`` URL (one replica, or what a load balancer answers)."""

    def __init__(self, adapter: EngineAdapter, target: MetricsTarget) -> None:
        self.adapter = adapter
        self.target = target
        self.name = target.label

    async def read(self, http: httpx.AsyncClient, edge: bool) -> dict[str, Reading | None]:
        return {self.name: _text_reading(self.adapter,
                                         await fetch_exposition(http, self.target.url))}


class PrometheusApi:
    """A Prometheus server's HTTP API (``/api/v1/query``), for any source that reads through
    it: the engine's counters here, other exporters' series (telemetry) alike."""

    def __init__(self, base_url: str) -> None:
        self.query_url = base_url.rstrip("/") + "/api/v1/query"

    async def query(self, http: httpx.AsyncClient, promql: str, at: float
                    ) -> list[dict[str, Any]]:
        """The result of one instant query evaluated at ``at`` (seconds since the epoch): a
        list of ``{"metric": labels, "value" | "values": ...}``."""
        resp = await http.get(self.query_url, params={"query": promql, "time": f"{at:.3f}"})
        resp.raise_for_status()
        body = resp.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus answered {body.get('error') or body.get('status')}")
        return body["data"]["result"]


def selector_with(selector: str | None, *matchers: str) -> str:
    """A PromQL selector: the user's (``{job="vllm"}``) with more matchers added."""
    inner = (selector or "{}").strip()[1:-1].strip().rstrip(",")
    return "{" + ", ".join(m for m in (inner, *matchers) if m) + "}"


class PrometheusSource:
    """The engine's counters as a Prometheus server scraped them, one replica per ``instance``.

    At every edge: wait until Prometheus holds a scrape of every replica taken after the edge
    (up to ``FRESH_WAIT_S``), then read each series' raw samples since a fixed anchor and sum
    them as a counter: a drop is a reset of that series alone, after which its value counts
    from zero (Prometheus' own ``increase`` rule, without its extrapolation). Ticks inside the
    window are not needed (Prometheus kept every sample) and are skipped."""

    def __init__(self, adapter: EngineAdapter, target: MetricsTarget) -> None:
        self.adapter = adapter
        self.target = target
        self.name = target.label
        self.api = PrometheusApi(target.url)
        self._anchor: float | None = None
        self._wanted = {sample: (ours, label) for ours, sample, label in adapter.COUNTERS}

    def _query(self, window_s: float) -> str:
        names = "|".join(["up", *self._wanted])
        sel = selector_with(self.target.selector, f'__name__=~"{names}"')
        return f"{sel}[{max(1, int(window_s * 1000))}ms]"

    async def read(self, http: httpx.AsyncClient, edge: bool) -> dict[str, Reading | None]:
        if not edge:
            return {}
        called = time.time()
        if self._anchor is None:
            self._anchor = called - LOOKBACK_S
        deadline = time.monotonic() + FRESH_WAIT_S
        while True:
            now = time.time()
            series = await self.api.query(http, self._query(now - self._anchor), now)
            ups = {s["metric"].get("instance", "?"): s["values"] for s in series
                   if s["metric"].get("__name__") == "up"}
            fresh = ups and all(float(v[-1][0]) >= called for v in ups.values())
            if fresh or time.monotonic() >= deadline:
                break
            await asyncio.sleep(FRESH_POLL_S)
        return self._readings(series, ups)

    def _readings(self, series: list[dict[str, Any]], ups: dict[str, list[Any]]
                  ) -> dict[str, Reading | None]:
        out: dict[str, Reading | None] = {}
        for inst, values in ups.items():
            up = float(values[-1][1]) == 1.0
            out[inst] = Reading({}, identity=f"instance {inst}") if up else None
        for s in series:
            labels = s["metric"]
            hit = self._wanted.get(labels.get("__name__", ""))
            inst = labels.get("instance", "?")
            reading = out.get(inst)
            if hit is None or reading is None:
                continue
            ours, split = hit
            key = f"{ours}{labels.get(split, '')}" if split else ours
            total, resets = adjusted([float(v) for _, v in s["values"]])
            reading.counters[key] = reading.counters.get(key, 0.0) + total
            reading.resets += resets
        # instances the selector matched that serve none of the engine's counters (not engines)
        return {k: r for k, r in out.items() if r is None or r.counters}


def adjusted(values: list[float]) -> tuple[float, int]:
    """A counter series' total with its resets taken out: each drop starts a new run from
    zero. Returns (the reset-adjusted last value, the number of drops)."""
    if not values:
        return 0.0, 0
    total, resets = values[0], 0
    for x, y in itertools.pairwise(values):
        if y >= x:
            total += y - x
        else:
            total += y
            resets += 1
    return total, resets
