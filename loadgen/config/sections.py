"""The sections of a run's configuration, each a frozen dataclass that checks its values when
it is built (a ValueError, one line naming the flag). Changing a value means building a new
section (``dataclasses.replace``, or ``RunConfig.replace`` with flat names), which checks again.

Each field's default here is its default everywhere: the CLI flags, sweep ``run:`` keys and the
embedded default read it through ``loadgen.config.default(name)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from loadgen.config.checks import at_least, fraction, one_of, positive
from loadgen.config.targets import parse_targets

ARRIVALS = ("poisson", "constant", "gamma", "trace")  # trace: each record's arrival_s
OPENAI_MODES = ("completions", "chat")
# Default warm-up in rate mode: this many seconds of arrivals at the requested rate.
WARMUP_SECONDS = 3.0


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How hard and how long the endpoint is driven, and which prompts in which order."""

    concurrency: int | None = None
    request_rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    # None: the default warm-up (effective_warmup()); 0 keeps cold-start requests measured
    warmup_requests: int | None = None
    output_len: int | None = None
    # the run's seed: prompt order, arrival times and the per-request sampling seeds
    seed: int = 0
    multi_turn: bool = True
    shuffle: bool = True
    # --arrival trace (loadgen/client/trace.py): the schedule runs this many times faster than
    # the records' arrival_s (set from --time-scale or --target-rate)
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of --concurrency or --request-rate")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give --num-requests or --duration")
        at_least("--concurrency", self.concurrency, 1)
        at_least("--max-concurrency", self.max_concurrency, 1)
        at_least("--num-requests", self.num_requests, 1)
        at_least("--output-len", self.output_len, 1)
        at_least("--warmup-requests", self.warmup_requests, 0)
        positive("--request-rate", self.request_rate)
        positive("--burstiness", self.burstiness)
        positive("--duration", self.duration_s)
        positive("--time-scale", self.time_scale)
        one_of("--arrival", self.arrival, ARRIVALS)

    def effective_warmup(self) -> int:
        """Warm-up requests actually sent: the explicit count, else the concurrency (closed
        loop), else WARMUP_SECONDS of arrivals at the request rate (rate mode), at least 1."""
        if self.warmup_requests is not None:
            return self.warmup_requests
        if self.concurrency is not None:
            return self.concurrency
        assert self.request_rate is not None
        return max(1, math.ceil(self.request_rate * WARMUP_SECONDS))


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    """The server under test and how it is spoken to (flat name of ``url``: ``endpoint``)."""

    url: str
    engine: str
    model: str | None = None
    api_key_env: str | None = None
    # request headers 'Name: value' ('Name: env:VAR' reads VAR); values never written anywhere
    headers: list[str] = field(default_factory=list)
    openai_mode: str = "completions"
    timeout_s: float = 600.0
    retry_429: int = 0  # retries of a request answered 429 (waiting Retry-After)
    probe_timeout_s: float = 5.0  # each probe and counter scrape (they never wait longer)
    # counters from these metrics targets instead of <endpoint>/metrics (loadgen/scrape):
    # URLs (one per replica; a DNS name expands to its addresses), prometheus+http://HOST:PORT,
    # or ["none"]; the selector narrows a Prometheus server's series
    metrics: list[str] = field(default_factory=list)
    metrics_selector: str | None = None

    def __post_init__(self) -> None:
        at_least("--retry-429", self.retry_429, 0)
        positive("--timeout", self.timeout_s)
        positive("--probe-timeout", self.probe_timeout_s)
        one_of("--openai-mode", self.openai_mode, OPENAI_MODES)
        parse_targets(self.metrics, self.metrics_selector)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How the connection to the endpoint is made (certificates, proxy)."""

    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    insecure: bool = False  # do not verify the server's TLS certificate (warned, in manifest)
    proxy: str | None = None  # http://[user:pw@]host:port; "" = none; None = from environment


@dataclass(frozen=True, slots=True)
class SamplingOptions:
    """Sampling (default greedy), sent in each engine's own fields (loadgen/engines/sampling.py);
    ``dataclasses.asdict`` of it is summary.json's ``sampling``."""

    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed_per_request: bool = False

    def __post_init__(self) -> None:
        at_least("--top-k", self.top_k, 1)
        if self.temperature != 0:  # 0 = greedy
            positive("--temperature", self.temperature)
        positive("--top-p", self.top_p)
        if self.top_p is not None and self.top_p > 1:
            raise ValueError(f"--top-p must be in (0, 1], not {self.top_p:g}")


@dataclass(frozen=True, slots=True)
class ScaleOptions:
    """Where the client runs (loadgen/run): this process, N worker processes, or Ray actors.
    ``workers`` "auto" stays "auto" here; the run picks the number (run/share.py)."""

    workers: int | str | None = None  # None = this process; N processes; "auto" = from the load
    ray: str | None = None  # a Ray cluster's address, or "local" (a throwaway local cluster)
    workers_per_node: int = 1  # with ray: worker actors per node

    def __post_init__(self) -> None:
        if self.workers != "auto":
            try:
                at_least("--workers", self.workers, 1)  # type: ignore[arg-type]
            except ValueError:
                raise ValueError("--workers must be a number >= 1 or 'auto'") from None
        if self.ray and self.workers is not None:
            raise ValueError("give --workers or --ray (with --workers-per-node), not both")
        at_least("--workers-per-node", self.workers_per_node, 1)


@dataclass(frozen=True, slots=True)
class MeasurementOptions:
    """What the run measures and keeps beside the requests: windows, scrapes, telemetry, the
    host monitor, the event-loop lag threshold, token ids, the prefix-cache policy."""

    lag_threshold_ms: float = 5.0
    scrape_interval_s: float = 5.0  # counters are also scraped this often inside the window
    # Category windows: None = on when the engine gives no per-request SD (the run decides)
    category_windows: bool | None = None
    keep_token_ids: bool = False
    # reuse the engine's prefix cache across runs on purpose (default: a per-run cache salt,
    # a flush, or cache_prompt: false, whatever the engine offers; docs/METRICS.md)
    keep_prefix_cache: bool = False
    # server telemetry (loadgen/client/telemetry.py): exporters' metrics URLs (DCGM, node
    # exporter) or prometheus+http://HOST:PORT, scraped at the window's edges and this often
    telemetry: list[str] = field(default_factory=list)
    telemetry_interval_s: float = 1.0
    # the engine's PID for the host monitor (default: launched by loadgen, else the listener on
    # a loopback endpoint's port, followed through a local proxy: client/listener.py)
    engine_pid: int | None = None
    # `loadgen run` exits 1 when more than this share of the measured requests failed (its
    # figures then describe a minority of what was asked); 1 never, 0 at any failure
    max_error_rate: float = 0.05

    def __post_init__(self) -> None:
        positive("lag_threshold_ms", self.lag_threshold_ms)
        fraction("--max-error-rate", self.max_error_rate)
        positive("scrape_interval_s", self.scrape_interval_s)
        positive("--telemetry-interval", self.telemetry_interval_s)
        if isinstance(self.telemetry, str) or not isinstance(self.telemetry, list | tuple):
            raise ValueError("telemetry: a list of URLs")
        from loadgen.results.telemetry import check_url

        for url in self.telemetry:
            check_url(str(url))
        at_least("--engine-pid", self.engine_pid, 1)
