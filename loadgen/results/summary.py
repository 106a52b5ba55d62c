"""summary.json as typed objects: what `loadgen run` computes, and what every reader gets back.

docs/METRICS.md defines every number; docs/FORMATS.md the file. ``Summary.to_dict()`` gives the
file's exact JSON shape, ``Summary.from_dict()`` reads a file back (tolerant of fields that older
files lack: they come back as None / empty). Optional fields marked ``omit`` are left out of the
file when None, as they always were.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from loadgen.results.fleet import FleetStats
from loadgen.results.telemetry import TelemetryStats

T = TypeVar("T")
_OMIT = {"omit": True}  # field metadata: not written when None


def as_plain(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in fields(obj):
            v = getattr(obj, f.name)
            if v is None and f.metadata.get("omit"):
                continue
            out[f.name] = as_plain(v)
        return out
    if isinstance(obj, dict):
        return {k: as_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [as_plain(v) for v in obj]
    return obj


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass named by a field's type (``X``, ``X | None``), if any."""
    if is_dataclass(tp):
        return tp
    for arg in get_args(tp):
        if is_dataclass(arg):
            return arg
    return None


def from_plain(cls: type[T], d: Any) -> T:
    """Build ``cls`` from a dict, recursing into dataclass-typed fields and dict[str, dataclass]
    fields; keys the file lacks keep their defaults."""
    if not isinstance(d, dict):
        d = {}
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in d:
            continue
        v, tp = d[f.name], hints[f.name]
        if get_origin(tp) is dict and isinstance(v, dict):
            sub = _dataclass_in(get_args(tp)[1])
            if sub is not None:
                v = {k: from_plain(sub, x) for k, x in v.items()}
        elif isinstance(v, list) and (lt := [a for a in (tp, *get_args(tp))
                                            if get_origin(a) is list]):
            sub = _dataclass_in(get_args(lt[0])[0])
            if sub is not None:
                v = [from_plain(sub, x) for x in v]
        elif v is not None and (sub := _dataclass_in(tp)) is not None:
            v = from_plain(sub, v)
        kwargs[f.name] = v
    return cls(**kwargs)


@dataclass(slots=True)
class Stats:
    """Descriptive statistics of one quantity (analysis.metrics.stats)."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    count: int = 0
    # set when the percentiles come from a histogram (their bound on the relative error)
    relative_error: float | None = field(default=None, metadata=_OMIT)

    def get(self, stat: str) -> float | None:
        """A statistic by name (``mean``, ``p50``, ``p90``, ``p99``, ``max``)."""
        return getattr(self, stat)


@dataclass(slots=True)
class RequestCounts:
    total: int = 0
    ok: int = 0
    error: int = 0
    cancelled: int = 0
    warmup: int = 0
    retries: int = 0  # resends after 429 (--retry-429) of the measured requests
    retried: int = 0  # measured requests resent at least once
    rate_limited: int = 0  # measured requests whose final answer was 429
    reasoning_tokens: int | None = field(default=None, metadata=_OMIT)
    reasoning_share: float | None = field(default=None, metadata=_OMIT)


@dataclass(slots=True)
class Window:
    start_s: float = 0.0
    end_s: float = 0.0
    duration_s: float = 0.0
    start_ns: int = 0
    end_ns: int = 0
    includes_drain: bool = False
    # category windows: how many (duration_s is then their sum, start/end span all of them)
    category_windows: int | None = field(default=None, metadata=_OMIT)


@dataclass(slots=True)
class Throughput:
    output_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    window_output_tokens: int = 0
    neutral_tokens_per_engine_token: float | None = field(default=None, metadata=_OMIT)
    neutral_output_tokens_per_s: float | None = field(default=None, metadata=_OMIT)
    neutral_tokenizer: str | None = field(default=None, metadata=_OMIT)


@dataclass(slots=True)
class Latency:
    """Milliseconds; ``schedule_lag`` only in rate mode; ``send_delay``: the client's own delay
    between a request's turn and its start on the wire (not part of TTFT in closed loop)."""

    ttft: Stats = field(default_factory=Stats)
    tpot: Stats = field(default_factory=Stats)
    itl: Stats = field(default_factory=Stats)
    inter_chunk: Stats = field(default_factory=Stats)
    e2e: Stats = field(default_factory=Stats)
    schedule_lag: Stats | None = field(default=None, metadata=_OMIT)
    send_delay: Stats | None = field(default=None, metadata=_OMIT)

    def metric(self, name: str) -> Stats | None:
        return getattr(self, name, None)

    def items(self) -> list[tuple[str, Stats]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None]


@dataclass(slots=True)
class ChunkRatio:
    value: float | None = None
    note: str = ""


@dataclass(slots=True)
class PerRequestAL:
    request_weighted: float | None = None
    token_weighted: float | None = None
    requests: int = 0


@dataclass(slots=True)
class AcceptanceSummary:
    """Server-counter acceptance over the window (None fields when the server reports no SD),
    plus the client's own cross-checks."""

    source: str | None = None
    acceptance_length: float | None = None
    acceptance_rate: float | None = None
    per_position_rate: list[float] | None = None
    conditional_rate: list[float] | None = None
    drafts: float | None = None
    draft_tokens: float | None = None
    accepted_tokens: float | None = None
    client_tokens_per_chunk: ChunkRatio = field(default_factory=ChunkRatio)
    per_request: PerRequestAL = field(default_factory=PerRequestAL)
    # the AL to quote and where it comes from (analysis/gate.py: per_request or the counters')
    headline: float | None = field(default=None, metadata=_OMIT)
    headline_source: str | None = field(default=None, metadata=_OMIT)
    withheld: dict[str, str] | None = field(default=None, metadata=_OMIT)  # by the gate


@dataclass(slots=True)
class CounterDeltas:
    window_delta: dict[str, float] | None = None
    run_delta: dict[str, float] | None = None


@dataclass(slots=True)
class CategoryStats:
    requests: int = 0
    acceptance_length: float | None = None
    acceptance_length_request_weighted: float | None = None
    # "per_request", or "server_counters:ENGINE (category window)"
    acceptance_source: str | None = None
    acceptance_rate: float | None = field(default=None, metadata=_OMIT)
    per_position_rate: list[float] | None = field(default=None, metadata=_OMIT)
    output_tokens: int = 0
    ttft_ms_p50: float | None = None
    tpot_ms_p50: float | None = None
    per_user_tokens_per_s_mean: float | None = None
    window_s: float | None = field(default=None, metadata=_OMIT)  # category windows only
    output_tokens_per_s: float | None = field(default=None, metadata=_OMIT)
    # category windows: AL from this category's counter delta (also when per-request AL
    # exists), and the delta itself (its requests only: warm-up drained before, all after)
    window_acceptance_length: float | None = field(default=None, metadata=_OMIT)
    window_counters: dict[str, float] | None = field(default=None, metadata=_OMIT)
    withheld: dict[str, str] | None = field(default=None, metadata=_OMIT)  # by the gate


@dataclass(slots=True)
class WorkerClient:
    """One worker process's own cost and lag (a scaled-out run: loadgen/run)."""

    index: int = 0
    node: str | None = None
    status: str = "ok"  # ok | died
    requests: int = 0
    events: int = 0
    cpu_s: float | None = None
    cpu_us_per_event: float | None = None
    loop_lag_ms: Stats = field(default_factory=Stats)
    overloaded: bool = False
    error: str | None = None
    max_rss_mb: float | None = None  # the worker process's peak resident memory so far


@dataclass(slots=True)
class ClientStats:
    """The client's own cost and event-loop lag over the window (over every worker's samples
    in a scaled-out run, ``workers`` then giving each one's; overloaded when any is)."""

    cpu_s: float | None = None
    cpu_us_per_event: float | None = None
    cpu_ms_per_request: float | None = None
    loop_lag_ms: Stats = field(default_factory=Stats)
    lag_threshold_ms: float | None = None
    overloaded: bool = False
    workers: list[WorkerClient] | None = field(default=None, metadata=_OMIT)


@dataclass(slots=True)
class ConnectionStats:
    """Connections the client opened for the run's requests (warm-up included); None/empty for
    records written before ``connect_ns`` existed."""

    opened: int | None = None
    per_request: float | None = None
    connect_ms: Stats = field(default_factory=Stats)  # over the requests that opened one


@dataclass(slots=True)
class HostStats:
    """Who used the CPU during the window, in cores (CPU-seconds per wall second);
    loadgen/client/host.py measures, docs/METRICS.md ("Host") defines."""

    cpus: int = 0
    duration_s: float = 0.0
    samples: int = 0
    busy_cores: float | None = None
    client_cores: float | None = None
    client_processes: int = 1  # the client's processes (worker processes of --workers N)
    engine_cores: float | None = None  # None: the engine's PID is unknown (not launched here)
    engine_pid: int | None = None
    engine_lost: bool = False
    others_cores: float | None = None
    others_cores_peak: float | None = None
    steal_cores: float | None = None
    load_avg_1m_max: float | None = None
    mem_available_mb_min: float | None = None
    engine_rss_mb_max: float | None = None
    causes: list[str] = field(default_factory=list)  # "client", "engine_starved", "others", "steal"


@dataclass(slots=True)
class PrefixCacheStats:
    """The engine's prefix-cache reuse over the window (docs/METRICS.md, "Prefix cache")."""

    source: str | None = None  # e.g. server_counters:vllm, gauge:sglang
    unit: str | None = None  # tokens | blocks | rate (a gauge: no queries/hits)
    queries: float | None = None
    hits: float | None = None
    hit_rate: float | None = None
    policy: str | None = None  # salted | flushed | kept | unprotected
    note: str | None = None


@dataclass(slots=True)
class Summary:
    requests: RequestCounts = field(default_factory=RequestCounts)
    window: Window = field(default_factory=Window)
    throughput: Throughput = field(default_factory=Throughput)
    latency_ms: Latency = field(default_factory=Latency)
    per_user_tokens_per_s: Stats = field(default_factory=Stats)
    acceptance: AcceptanceSummary = field(default_factory=AcceptanceSummary)
    server_counters: CounterDeltas = field(default_factory=CounterDeltas)
    categories: dict[str, CategoryStats] = field(default_factory=dict)
    client: ClientStats = field(default_factory=ClientStats)
    connections: ConnectionStats = field(default_factory=ConnectionStats)
    warnings: list[str] = field(default_factory=list)
    error_reasons: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    token_count_source: str | None = field(default=None, metadata=_OMIT)
    # temperature, top_p, top_k, seed_per_request (None in files written before it)
    sampling: dict[str, Any] | None = field(default=None, metadata=_OMIT)
    host: HostStats | None = None
    prefix_cache: PrefixCacheStats | None = None
    telemetry: TelemetryStats | None = field(default=None, metadata=_OMIT)  # --telemetry
    # per-replica counter figures (several metrics targets, or Prometheus): results/fleet.py
    fleet: FleetStats | None = field(default=None, metadata=_OMIT)

    def to_dict(self) -> dict[str, Any]:
        return as_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        return from_plain(cls, d)
