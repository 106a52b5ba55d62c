"""Every headline number declared once: its key, its path in summary.json, unit, which direction
is better, whether an SLO can name it, its label and its section of docs/METRICS.md.

``compare`` (its statistics and across-run intervals), SLO parsing and checks (sweeps,
``loadgen report --slo``), the report's latency tables and plots, and the console read this
catalogue instead of keeping their own lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

METRICS_DOC = "docs/METRICS.md"


@dataclass(frozen=True, slots=True)
class Metric:
    key: str  # the comparison's name: "ttft_ms.p99", "output_tokens_per_s"
    path: str  # summary.json: "latency_ms.ttft.p99"
    label: str  # "TTFT p99"
    unit: str  # "ms", "tok/s", "req/s", "" (a ratio)
    better: str | None  # "higher" | "lower" | None
    group: str  # latency | throughput | per-user | acceptance
    slo: str | None  # the SLO key that names it ("ttft_p99_ms"), None when no SLO can
    anchor: str  # the section of docs/METRICS.md that defines it

    @property
    def doc(self) -> str:
        return f"{METRICS_DOC}#{self.anchor}"


# Per-request latencies an SLO can name (METRIC_STAT_ms=LIMIT), and their statistics.
LATENCY_METRICS: dict[str, str] = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}
LATENCY_STATS = ("mean", "p50", "p90", "p99", "max")
COMPARED_STATS = ("mean", "p50", "p90", "p99")  # max has no stable interval
_LATENCY_ANCHOR = "latency-milliseconds-over-ok-non-warm-up-requests"


def _latency() -> list[Metric]:
    return [Metric(f"{m}_ms.{s}", f"latency_ms.{m}.{s}", f"{label} {s}", "ms", "lower",
                   "latency", f"{m}_{s}_ms", _LATENCY_ANCHOR)
            for m, label in LATENCY_METRICS.items() for s in LATENCY_STATS]


CATALOGUE: tuple[Metric, ...] = (
    Metric("output_tokens_per_s", "throughput.output_tokens_per_s", "output tokens/s", "tok/s",
           "higher", "throughput", None, "throughput"),
    Metric("requests_per_s", "throughput.requests_per_s", "requests/s", "req/s", "higher",
           "throughput", None, "throughput"),
    Metric("per_user_tokens_per_s.mean", "per_user_tokens_per_s.mean",
           "per-user tokens/s mean", "tok/s", "higher", "per-user", None, "throughput"),
    Metric("per_user_tokens_per_s.p50", "per_user_tokens_per_s.p50", "per-user tokens/s p50",
           "tok/s", "higher", "per-user", None, "throughput"),
    *_latency(),
    Metric("al_counters", "acceptance.acceptance_length", "AL (server counters)", "", "higher",
           "acceptance", None, "speculative-decoding"),
    Metric("acceptance_rate", "acceptance.acceptance_rate", "acceptance rate (server counters)",
           "", "higher", "acceptance", None, "speculative-decoding"),
    Metric("al_per_request.token_weighted", "acceptance.per_request.token_weighted",
           "AL per request, token-weighted", "", "higher", "acceptance", None,
           "speculative-decoding"),
    Metric("al_per_request.request_weighted", "acceptance.per_request.request_weighted",
           "AL per request, request-weighted", "", "higher", "acceptance", None,
           "speculative-decoding"),
)
BY_KEY: dict[str, Metric] = {m.key: m for m in CATALOGUE}
BY_SLO: dict[str, Metric] = {m.slo: m for m in CATALOGUE if m.slo}


def compared() -> list[Metric]:
    """The statistics ``loadgen compare`` estimates with intervals (latency: no max)."""
    return [m for m in CATALOGUE
            if m.group != "latency" or m.key.rsplit(".", 1)[1] in COMPARED_STATS]


def value_at(summary: dict[str, Any] | None, path: str) -> float | None:
    """The number at ``path`` in a summary.json dict, or None."""
    obj: Any = summary or {}
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return float(obj) if isinstance(obj, int | float) and not isinstance(obj, bool) else None


def parse_slos(text: str | None) -> dict[str, float]:
    """``ttft_p99_ms=2000,tpot_p99_ms=50`` -> {"ttft_p99_ms": 2000.0, "tpot_p99_ms": 50.0};
    ValueError (one line) for a name no SLO can take or a limit that is not a number > 0."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, eq, value = part.partition("=")
        if not eq or key.strip() not in BY_SLO:
            raise ValueError(f"bad SLO {part!r}: use METRIC_STAT_ms=LIMIT with METRIC in "
                             f"{', '.join(LATENCY_METRICS)} and STAT in "
                             f"{', '.join(LATENCY_STATS)}")
        try:
            limit = float(value)
        except ValueError:
            raise ValueError(f"bad SLO {part!r}: the limit must be a number") from None
        if not limit > 0 or limit == float("inf"):
            raise ValueError(f"bad SLO {part!r}: the limit must be a finite number > 0")
        out[key.strip()] = limit
    return out
