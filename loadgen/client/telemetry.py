"""Server telemetry beside the SD counters: scrape other Prometheus-format exporters (NVIDIA's
DCGM exporter, node exporter) over the same measurement window (``--telemetry URL``).

Each window has an opening and a closing edge scrape, taken with the SD counters' own, and
samples every ``interval_s`` between them (the power gauge's mean and peak need them). A target is
an exporter's metrics URL (``http://gpu-node:9400/metrics``), or ``prometheus+http://HOST:9090``:
the same series read through a Prometheus server's instant queries (loadgen/client/promql.py),
as fresh as its own scrape interval. A target that fails or does not answer within the timeout
is named (``TelemetryStats.unanswered``) and not asked again; nothing else of the run is lost.
The figures are computed in loadgen/analysis/telemetry.py (docs/METRICS.md, "Server telemetry").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadgen.client.promql import instant_query
from loadgen.results.redact import redact_url
from loadgen.results.telemetry import (
    CPU,
    SAMPLE_NAMES,
    TargetSamples,
    TelemetrySample,
)

PROMETHEUS_QUERY = '{__name__=~"' + "|".join(SAMPLE_NAMES) + '"}'
# each GPU's sample time (timestamp() drops the metric name: one series per GPU, energy first)
STAMPS_QUERY = ("timestamp(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION) or "
                "timestamp(DCGM_FI_DEV_POWER_USAGE)")


def series_key(name: str, labels: dict[str, str], node: str) -> tuple[str, str] | None:
    """``(kind|device, device)`` of one exposition sample, None when it is not one we read.
    GPUs: NODE/HOSTNAME/gpuN; CPUs: NODE|cpuN|MODE (node exporter)."""
    # prometheus_client's parser names a counter's sample NAME_total even when the exposition
    # says NAME (dcgm-exporter's DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION)
    kind = SAMPLE_NAMES.get(name) or SAMPLE_NAMES.get(name.removesuffix("_total"))
    if kind is None:
        return None
    if kind == CPU:
        dev = f"{node}|cpu{labels.get('cpu', '?')}|{labels.get('mode', '?')}"
    else:
        host = labels.get("Hostname") or labels.get("hostname")
        dev = "/".join(x for x in (node, host, f"gpu{labels.get('gpu', '?')}") if x)
    return f"{kind}|{dev}", dev


def parse_exposition(text: str, node: str,
                     info: dict[str, dict[str, str]]) -> dict[str, float]:
    """The series we read from an exporter's text exposition (summed when repeated)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            _add(out, info, s.name, dict(s.labels), s.value, node)
    return out


def _add(out: dict[str, float], info: dict[str, dict[str, str]], name: str,
         labels: dict[str, str], value: float, node: str) -> None:
    hit = series_key(name, labels, node)
    if hit is None:
        return
    key, dev = hit
    out[key] = out.get(key, 0.0) + value
    if "gpu" in labels and dev not in info:
        info[dev] = {k: labels[k] for k in ("UUID", "modelName") if k in labels}


class Telemetry:
    def __init__(self, urls: list[str], warnings: list[str], timeout_s: float = 5.0,
                 interval_s: float = 1.0) -> None:
        self._urls = list(urls)
        self.targets = [TargetSamples(url=redact_url(u)) for u in urls]
        self.warnings = warnings
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self._http: httpx.AsyncClient | None = None
        self._sampler: asyncio.Task[None] | None = None
        self._ticks = 0
        # Prometheus' sample times (wall clock, ms) to this process's monotonic clock: one
        # offset for the run, so that one sample read twice has one time
        self._wall_to_mono = time.time_ns() - time.monotonic_ns()

    @property
    def active(self) -> bool:
        return bool(self._urls)

    async def take(self, name: str) -> None:
        """Scrape every target that still answers, now, as ``name``."""
        if not self._urls:
            return
        if self._http is None:  # its own client: the endpoint's headers never go to exporters
            self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
        await asyncio.gather(*(self._one(k, name) for k in range(len(self._urls))))

    async def _one(self, k: int, name: str) -> None:
        target, url = self.targets[k], self._urls[k]
        if target.error is not None:
            return
        t0 = time.monotonic_ns()
        try:
            values, read_ns = await asyncio.wait_for(self._read(url, target), self.timeout_s)
        except TimeoutError:
            self._fail(target, f"no answer within {self.timeout_s:g} s (at {name})")
            return
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._fail(target, f"{type(exc).__name__} at {name}: {self._scrub(url, exc)}")
            return
        t1 = time.monotonic_ns()
        target.samples.append(TelemetrySample(name, (t0 + t1) // 2, t1 - t0, values, read_ns))

    async def _read(self, url: str, target: TargetSamples
                    ) -> tuple[dict[str, float], dict[str, int] | None]:
        """The series we read, and (through Prometheus) when each GPU's were read."""
        assert self._http is not None
        parts = urlsplit(url)
        if parts.scheme.startswith("prometheus+"):
            base = urlunsplit((parts.scheme.removeprefix("prometheus+"), parts.netloc,
                               parts.path, "", ""))
            # the sample times before and after the values: equal, no scrape landed between
            # them and the values are those samples' (else try again; at last, no times)
            for _ in range(3):
                stamps = await instant_query(self._http, base, STAMPS_QUERY)
                values = await instant_query(self._http, base, PROMETHEUS_QUERY)
                if stamps == await instant_query(self._http, base, STAMPS_QUERY):
                    break
            else:
                stamps = []
            out: dict[str, float] = {}
            for labels, value in values:
                _add(out, target.gpu_info, labels.pop("__name__", ""), labels, value,
                     labels.get("instance", ""))
            # each GPU's sample time (its scrape's start), on this process's monotonic clock
            read_ns = {}
            for labels, at_s in stamps:
                hit = series_key("DCGM_FI_DEV_POWER_USAGE", labels, labels.get("instance", ""))
                if hit is not None and "gpu" in labels:
                    read_ns[hit[1]] = round(at_s * 1e3) * 1_000_000 - self._wall_to_mono
            return out, read_ns
        resp = await self._http.get(url)
        resp.raise_for_status()
        return parse_exposition(resp.text, f"{parts.hostname}:{parts.port or ''}".rstrip(":"),
                                target.gpu_info), None

    def _fail(self, target: TargetSamples, why: str) -> None:
        target.error = why
        self.warnings.append(f"telemetry {target.url} did not answer: {why}; not asked again "
                             f"(its figures are missing, nothing else is)")

    @staticmethod
    def _scrub(url: str, exc: BaseException) -> str:
        text = (str(exc) or type(exc).__name__).splitlines()[0]  # one line
        p = urlsplit(url)
        for secret in (p.password, p.username, p.query):
            if secret:
                text = text.replace(secret, "***")
        return text

    # -- the window -----------------------------------------------------------------------------
    async def open(self, name: str, at_ns: int | None = None) -> None:
        """The window's opening edge: scrape now as ``name`` (or, with ``at_ns``, at that
        monotonic time, in the background), then sample every ``interval_s`` until ``close``."""
        if not self._urls:
            return
        if at_ns is None:
            await self.take(name)
        self._sampler = asyncio.get_running_loop().create_task(self._sample(name, at_ns))

    async def _sample(self, name: str, at_ns: int | None) -> None:
        if at_ns is not None:
            await asyncio.sleep(max(0.0, (at_ns - time.monotonic_ns()) / 1e9))
            await self.take(name)
        while True:
            await asyncio.sleep(self.interval_s)
            self._ticks += 1
            await self.take(f"tick_{self._ticks}")

    async def close(self, name: str) -> None:
        """The window's closing edge: stop sampling, scrape as ``name``."""
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.take(name)

    async def aclose(self) -> None:
        """Stop sampling (an interrupted run) and release the HTTP client."""
        task, self._sampler = self._sampler, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.aclose()
            self._http = None
