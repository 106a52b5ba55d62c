"""Snapshots of the server's counters at named moments, and their deltas, over every replica.

The counters come from the run's metrics sources (loadgen/scrape): ``<endpoint>/metrics`` by
default, else each ``--metrics`` target (a URL per replica, a DNS name expanded to one target
per address, or a Prometheus server speaking for every replica it scrapes). Every scrape of a
source is bounded (``RunConfig.probe_timeout_s``); a source that does not answer in time is
skipped at later edges (it would cost the timeout again at each one). Counters are also scraped
every ``scrape_interval_s`` inside the window, so a counter that went backwards (the server
restarted) can be located: a replica's delta sums only its consistent segments between
consecutive snapshots and says which ones it left out.

Who answered each scrape is recorded (loadgen/scrape/identity.py): a URL whose answerer changes
and comes back (a load-balanced ``/metrics``) has every counter figure withheld, with the cause
and the fix; a replica that did not answer at an edge is named and left out, the others summed.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import TYPE_CHECKING, Any

import httpx

from loadgen.config.targets import MetricsTarget, parse_targets
from loadgen.engines.base import EngineAdapter, one_line
from loadgen.scrape.log import CounterLog, Delta
from loadgen.scrape.sources import (
    FRESH_WAIT_S,
    EndpointSource,
    PrometheusSource,
    Reading,
    UrlSource,
)
from loadgen.scrape.targets import expand, with_path

if TYPE_CHECKING:
    from loadgen.config import RunConfig


class Scrapes:
    """Takes the run's scrapes; what they read is kept in ``log`` (a ``CounterLog``)."""

    def __init__(self, adapter: EngineAdapter, warnings: list[str],
                 timeout_s: float = 5.0, targets: list[MetricsTarget] | None = None,
                 endpoint: str = "", verify: bool | ssl.SSLContext = True) -> None:
        self.adapter = adapter
        self.warnings = warnings
        self.timeout_s = timeout_s
        self.targets = targets  # None: <endpoint>/metrics; []: --metrics none
        self.endpoint = endpoint
        self.verify = verify  # TLS of --metrics targets: the run's CA bundle, or --insecure
        self.sources: list[Any] | None = None  # resolved at the first scrape (DNS)
        self.log = CounterLog(kind="endpoint" if targets is None else (
            "prometheus" if any(t.kind == "prometheus" for t in targets) else "targets"))
        # the log's own containers, filled as scrapes are taken
        self.kind, self.snapshots = self.log.kind, self.log.snapshots
        self.names, self.readings = self.log.names, self.log.readings
        self._silent: set[str] = set()  # sources that did not answer in time
        self._warned: set[str] = set()
        self._keys: dict[str, set[str]] = {}  # source -> the replicas it answered for

    async def _resolve(self) -> list[Any]:
        if self.targets is None:
            return [EndpointSource(self.adapter, self.endpoint)]
        out: list[Any] = []
        for t in self.targets:
            for one in await expand(with_path(t, self.adapter.metrics_path)):
                out.append(PrometheusSource(self.adapter, one) if one.kind == "prometheus"
                           else UrlSource(self.adapter, one))
        return out

    async def take(self, http: httpx.AsyncClient, name: str) -> None:
        """Scrape every source now and keep the snapshot as ``name``; a failure is a warning
        naming the source, not an error."""
        if self.sources is None:
            self.sources = await self._resolve()
        edge = not name.startswith("tick_")
        ns = time.monotonic_ns()
        live = [s for s in self.sources if s.name not in self._silent]
        if self.targets:  # their own client: the endpoint's headers and keys stay with it
            async with httpx.AsyncClient(timeout=self.timeout_s, verify=self.verify) as own:
                answers = await asyncio.gather(*(self._read(s, own, name, edge)
                                                 for s in live))
        else:
            answers = await asyncio.gather(*(self._read(s, http, name, edge) for s in live))
        got = False
        total: dict[str, float] = {}
        idx = len(self.names)  # readings are keyed by the snapshot's index (tick names repeat)
        for src, ans in zip(live, answers, strict=True):
            if ans is None:  # no answer: every replica this source spoke for is missing here
                for key in self._keys_of(src):
                    self.readings.setdefault(key, {})[idx] = None
                continue
            for key, reading in ans.items():
                self._keys.setdefault(src.name, set()).add(key)
                self.readings.setdefault(key, {})[idx] = reading
                if reading is not None:
                    got = True
                    for k, v in reading.counters.items():
                        total[k] = total.get(k, 0.0) + v
        if got:
            self.snapshots[name] = total
        if any(a is None or a for a in answers):  # someone answered, or failed to
            self.names.append((name, ns))

    def _keys_of(self, src: Any) -> list[str]:
        """The replicas a source speaks for (a Prometheus server: those it named so far)."""
        return sorted(self._keys.get(src.name, ())) or [src.name]

    async def _read(self, src: Any, http: httpx.AsyncClient, name: str,
                    edge: bool) -> dict[str, Reading | None] | None:
        bound = self.timeout_s + (FRESH_WAIT_S if isinstance(src, PrometheusSource) else 0.0)
        who = src.name if self.kind != "endpoint" else "server statistics"
        try:
            return await asyncio.wait_for(src.read(http, edge), bound)
        except TimeoutError:
            self._silent.add(src.name)
            self.warnings.append(f"{who}: no answer to the scrape at {name} within "
                                 f"{bound:g} s; later scrapes skipped")
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            if src.name not in self._warned:
                self._warned.add(src.name)
                where = "" if self.kind == "endpoint" else f" from {src.name}"
                why = (one_line(str(exc) or type(exc).__name__, 160)
                       if isinstance(exc, httpx.HTTPError) else
                       f"the metrics page is not in Prometheus text format "
                       f"({one_line(str(exc), 120)})")
                self.warnings.append(f"could not scrape server statistics{where} at {name}: "
                                     f"{why}")
        return None

    async def every(self, http: httpx.AsyncClient, interval_s: float,
                    until: asyncio.Event) -> None:
        """Scrape every ``interval_s`` until ``until`` is set (snapshots ``tick_1``, ...)."""
        n = 0
        while not until.is_set():
            try:
                await asyncio.wait_for(until.wait(), interval_s)
                return
            except TimeoutError:
                n += 1
                await self.take(http, f"tick_{n}")

    def delta(self, a: str, b: str) -> Delta | None:
        return self.log.delta(a, b)


def scrapes_for(cfg: RunConfig, adapter: EngineAdapter, warnings: list[str]) -> Scrapes:
    """The run's scrapes: ``--metrics`` targets (read with their own client: credentials
    only from their own URLs; the run's CA bundle or ``--insecure``), else
    ``<endpoint>/metrics`` through the run's client."""
    ep = cfg.endpoint
    return Scrapes(adapter, warnings, ep.probe_timeout_s,
                   parse_targets(ep.metrics, ep.metrics_selector), ep.url,
                   verify=False if cfg.tls.insecure else (
                       ssl.create_default_context(cafile=cfg.tls.ca_bundle) if cfg.tls.ca_bundle
                       else True))
