"""Server telemetry as typed objects: the raw scrapes of other exporters (DCGM, node exporter)
over the run's window, and summary.json's ``telemetry`` section computed from them
(loadgen/analysis/telemetry.py; docs/METRICS.md, "Server telemetry").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from loadgen.results.redact import redact_url

# series kinds read from exporters: (our kind, exposition sample name)
POWER = "power_w"
ENERGY = "energy_mj"
UTIL = "gpu_util_pct"
CPU = "cpu_s"
SAMPLE_NAMES: dict[str, str] = {
    "DCGM_FI_DEV_POWER_USAGE": POWER,  # gauge, W
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ENERGY,  # counter, mJ since boot
    "DCGM_FI_DEV_GPU_UTIL": UTIL,  # gauge, %
    "node_cpu_seconds_total": CPU,  # counter, s, labels cpu and mode
}

SCHEMES = ("http", "https", "prometheus+http", "prometheus+https")


def check_url(url: str) -> None:
    """A ValueError naming the flag when ``url`` is not a telemetry target."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ValueError(f"--telemetry {redact_url(url)}: expected http(s)://HOST[:PORT]/PATH or "
                         f"prometheus+http(s)://HOST:PORT")


@dataclass(slots=True)
class TelemetrySample:
    """One answered scrape of one target: ``values`` keyed ``kind|device``, e.g.
    ``power_w|host:9400/synthetic/gpu0`` or ``cpu_s|host:9100|cpu3|idle``."""

    name: str  # window_start, tick_N, window_end, run_end (with ":CATEGORY" in category windows)
    t_ns: int  # monotonic; the midpoint of the request's round trip
    rtt_ns: int  # the round trip: the exporter read its values within t_ns ± rtt_ns / 2
    values: dict[str, float]
    # when each GPU's values were read, where the source says (Prometheus: its sample times)
    read_ns: dict[str, int] | None = None

    def at(self, device: str) -> int:
        """When ``device``'s values were read: the source's time, else this sample's."""
        return self.read_ns.get(device, self.t_ns) if self.read_ns else self.t_ns


@dataclass(slots=True)
class TargetSamples:
    """Everything scraped from one ``--telemetry`` target."""

    url: str  # as shown (no credentials, no query string)
    samples: list[TelemetrySample] = field(default_factory=list)
    error: str | None = None  # why it did not answer (the first failure)
    gpu_info: dict[str, dict[str, str]] = field(default_factory=dict)  # device -> UUID, model


@dataclass(slots=True)
class GpuTelemetry:
    """One GPU over the window."""

    target: str = ""
    device: str = ""  # HOSTNAME/gpuN (Prometheus: INSTANCE/HOSTNAME/gpuN)
    uuid: str | None = None
    model: str | None = None
    mean_power_w: float | None = None
    power_source: str | None = None  # energy_counter | power_samples
    sampled_mean_power_w: float | None = None  # time-weighted mean of the power samples
    peak_power_w: float | None = None  # the highest power sample
    energy_j: float | None = None  # mean_power_w x the scraped span
    utilization_mean_pct: float | None = None
    utilization_peak_pct: float | None = None
    samples: int = 0
    energy_resets: int = 0  # segments left out: the energy counter went backwards
    repeated_samples: int = 0  # samples whose energy counter equals the previous one's


@dataclass(slots=True)
class NodeCpuTelemetry:
    """One node exporter's CPUs over the window."""

    target: str = ""
    node: str = ""
    cpus: int = 0
    busy_cores: float | None = None  # CPU-seconds not idle or iowait, per second
    utilization: float | None = None  # busy_cores / cpus


@dataclass(slots=True)
class TelemetryStats:
    """summary.json ``telemetry``: every figure over the measurement window's span
    (docs/METRICS.md, "Server telemetry")."""

    targets: list[str] = field(default_factory=list)
    unanswered: dict[str, str] = field(default_factory=dict)  # target -> why
    interval_s: float | None = None
    span_s: float = 0.0  # seconds between the edge scrapes (summed over category windows)
    start_ns: int | None = None  # the first window's opening edge (monotonic)
    end_ns: int | None = None  # the last window's closing edge
    edge_uncertainty_s: float | None = None  # the largest half round trip of an edge scrape
    # (``X | None``: how summary.py reads a list of dataclasses back)
    gpus: list[GpuTelemetry] | None = field(default_factory=list)
    power_w: float | None = None  # sum of the GPUs' mean power
    peak_power_w: float | None = None  # the highest sum of simultaneous power samples
    energy_j: float | None = None  # power_w x the window's duration
    energy_per_token_j: float | None = None  # power_w / output tokens per second
    energy_source: str | None = None  # energy_counter | power_samples | mixed
    gpu_utilization_pct: float | None = None  # mean over the GPUs of their mean
    nodes: list[NodeCpuTelemetry] | None = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
