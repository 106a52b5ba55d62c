"""The configuration of one run: one definition of every field and default.

``loadgen run`` flags, sweep configs (``run:`` keys) and the embedded default all build this one
dataclass; its defaults are the defaults everywhere (``default(name)``).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

ARRIVALS = ("poisson", "constant", "gamma", "trace")  # trace: each record's arrival_s
OPENAI_MODES = ("completions", "chat")
# Default warm-up in rate mode: this many seconds of arrivals at the requested rate.
WARMUP_SECONDS = 3.0


@dataclass(slots=True)
class RunConfig:
    endpoint: str
    engine: str
    out: Path
    output_len: int | None = None
    concurrency: int | None = None
    request_rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    # None: the default warm-up (effective_warmup()); 0 keeps cold-start requests measured
    warmup_requests: int | None = None
    model: str | None = None
    api_key_env: str | None = None
    # request headers 'Name: value' ('Name: env:VAR' reads VAR); values never written anywhere
    headers: list[str] = field(default_factory=list)
    ca_bundle: str | None = None  # PEM file of CAs to trust instead of the system store
    insecure: bool = False  # do not verify the server's TLS certificate (warned, in manifest)
    proxy: str | None = None  # http://[user:pw@]host:port; "" = none; None = from environment
    seed: int = 0
    timeout_s: float = 600.0
    keep_token_ids: bool = False
    openai_mode: str = "completions"
    lag_threshold_ms: float = 5.0
    probe_timeout_s: float = 5.0  # each probe and counter scrape (they never wait longer)
    scrape_interval_s: float = 5.0  # counters are also scraped this often inside the window
    multi_turn: bool = True
    shuffle: bool = True
    progress: bool = True
    # Sampling (default greedy). Sent in each engine's own fields (loadgen/engines/sampling.py).
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed_per_request: bool = False
    # Category windows: None = on when the engine gives no per-request SD (runner decides)
    category_windows: bool | None = None
    retry_429: int = 0  # retries of a request answered 429 (waiting Retry-After)
    # reuse the engine's prefix cache across runs on purpose (default: a per-run cache salt,
    # a flush, or cache_prompt: false, whatever the engine offers; docs/METRICS.md)
    keep_prefix_cache: bool = False
    # Scale-out (loadgen/run): None = this process; N worker processes; "auto" = from the load
    workers: int | str | None = None
    ray: str | None = None  # a Ray cluster's address, or "local" (a throwaway local cluster)
    workers_per_node: int = 1  # with ray: worker actors per node
    extra: dict[str, Any] = field(default_factory=dict)
    # server telemetry (loadgen/client/telemetry.py): exporters' metrics URLs (DCGM, node
    # exporter) or prometheus+http://HOST:PORT, scraped at the window's edges and this often
    telemetry: list[str] = field(default_factory=list)
    telemetry_interval_s: float = 1.0
    # counters from these metrics targets instead of <endpoint>/metrics (loadgen/scrape):
    # URLs (one per replica; a DNS name expands to its addresses), prometheus+http://HOST:PORT,
    # or ["none"]; the selector narrows a Prometheus server's series
    metrics: list[str] = field(default_factory=list)
    metrics_selector: str | None = None
    # the engine's PID for the host monitor (default: launched by loadgen, else the listener on
    # a loopback endpoint's port, followed through a local proxy: client/listener.py)
    engine_pid: int | None = None
    # --arrival trace (loadgen/client/trace.py): the schedule runs this many times faster than
    # the records' arrival_s (set from --time-scale or --target-rate)
    time_scale: float = 1.0

    def validate(self) -> None:
        """Every value checked up front; a ValueError names the flag in one line."""
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of --concurrency or --request-rate")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give --num-requests or --duration")
        _at_least("--concurrency", self.concurrency, 1)
        _at_least("--max-concurrency", self.max_concurrency, 1)
        _at_least("--num-requests", self.num_requests, 1)
        _at_least("--output-len", self.output_len, 1)
        _at_least("--warmup-requests", self.warmup_requests, 0)
        _at_least("--top-k", self.top_k, 1)
        _at_least("--retry-429", self.retry_429, 0)
        _positive("--request-rate", self.request_rate)
        _positive("--burstiness", self.burstiness)
        _positive("--duration", self.duration_s)
        _positive("--timeout", self.timeout_s)
        _positive("lag_threshold_ms", self.lag_threshold_ms)
        _positive("probe_timeout_s", self.probe_timeout_s)
        _positive("scrape_interval_s", self.scrape_interval_s)
        if self.arrival not in ARRIVALS:
            raise ValueError(f"--arrival must be one of {', '.join(ARRIVALS)}")
        if self.openai_mode not in OPENAI_MODES:
            raise ValueError(f"--openai-mode must be one of {', '.join(OPENAI_MODES)}")
        if self.temperature != 0:  # 0 = greedy
            _positive("--temperature", self.temperature)
        _positive("--top-p", self.top_p)
        if self.top_p is not None and self.top_p > 1:
            raise ValueError(f"--top-p must be in (0, 1], not {self.top_p:g}")
        if self.workers != "auto":
            try:
                _at_least("--workers", self.workers, 1)
            except ValueError:
                raise ValueError("--workers must be a number >= 1 or 'auto'") from None
        if self.ray and self.workers is not None:
            raise ValueError("give --workers or --ray (with --workers-per-node), not both")
        _at_least("--workers-per-node", self.workers_per_node, 1)
        _positive("--telemetry-interval", self.telemetry_interval_s)
        if isinstance(self.telemetry, str) or not isinstance(self.telemetry, list | tuple):
            raise ValueError("telemetry: a list of URLs")
        from loadgen.results.telemetry import check_url

        for url in self.telemetry:
            check_url(str(url))
        from loadgen.scrape.targets import parse_targets

        parse_targets(self.metrics, self.metrics_selector)
        _at_least("--engine-pid", self.engine_pid, 1)

    def effective_warmup(self) -> int:
        """Warm-up requests actually sent: the explicit count, else the concurrency (closed
        loop), else WARMUP_SECONDS of arrivals at the request rate (rate mode), at least 1."""
        if self.warmup_requests is not None:
            return self.warmup_requests
        if self.concurrency is not None:
            return self.concurrency
        assert self.request_rate is not None
        return max(1, math.ceil(self.request_rate * WARMUP_SECONDS))

    def sampling(self) -> dict[str, Any]:
        """The sampling parameters as summary.json and the console show them."""
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "seed_per_request": self.seed_per_request}


def _at_least(flag: str, value: int | None, low: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag} must be a whole number, not {value!r}")
    if value < low:
        raise ValueError(f"{flag} must be >= {low}, not {value}")


def _positive(flag: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{flag} must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{flag} must be a finite number > 0, not {value:g}")


# What a run is pointed at and how hard it is driven: set per cell by a sweep, not by `run:`.
PER_CELL = frozenset({"endpoint", "engine", "out", "concurrency", "request_rate", "progress",
                      "extra"})
# The keys a sweep config's `run:` section may set.
SWEEP_RUN_KEYS = frozenset(f.name for f in fields(RunConfig)) - PER_CELL


def default(name: str) -> Any:
    """RunConfig's default for field ``name``."""
    for f in fields(RunConfig):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            raise KeyError(f"RunConfig.{name} has no default")
    raise KeyError(name)


def config_from_manifest(config: dict[str, Any]) -> RunConfig:
    """The RunConfig a run directory's manifest.json recorded (its secrets were never there:
    the endpoint without credentials, header values masked). Keys that are not RunConfig
    fields (what the run added, e.g. ``warmup_requests_effective``) are left out."""
    names = {f.name for f in fields(RunConfig)}
    kwargs = {k: v for k, v in config.items() if k in names}
    kwargs["out"] = Path(kwargs.get("out") or ".")
    return RunConfig(**kwargs)
