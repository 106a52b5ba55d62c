"""What a trace replay shows over time (docs/METRICS.md, "Trace replay"), from a run directory.

One streamed pass over the records (workers' shards too): per time bucket of the schedule, the
offered rate (requests scheduled in it), the achieved rate (requests that ended OK in it) and
the latency SLO figures of the requests scheduled in it; per input-length band, the latency
percentiles; the engine's measured prefix-cache hit rate beside the trace's theoretical reuse;
AL per category. Only the measured requests count (no warm-up).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.analysis.metrics import e2e_ms, tpot_ms, ttft_ms
from loadgen.results.records import iter_run_records

BUCKETS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MAX_BUCKETS = 30
# input-length bands (tokens): [lo, hi)
BANDS = ((0, 512), (512, 2048), (2048, 8192), (8192, 32768), (32768, None))


@dataclass
class TimeBucket:
    start_s: float  # from the first scheduled send
    offered_rate: float  # requests scheduled in the bucket / its width
    achieved_rate: float  # requests that ended OK in the bucket / its width
    errors: int  # requests scheduled in the bucket that failed
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    tpot_p99_ms: float | None = None
    e2e_p99_ms: float | None = None
    slo_ok: float | None = None  # share of its requests that met every SLO given


@dataclass
class Band:
    lo: int
    hi: int | None
    requests: int
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    e2e_p50_ms: float | None


@dataclass
class TraceAnalysis:
    bucket_s: float
    buckets: list[TimeBucket]
    bands: list[Band]
    requests: int
    theoretical_reuse: float | None  # tokens (the build report's reuse_tokens)
    measured_hit_rate: float | None  # the engine's, summary.prefix_cache.hit_rate
    al_per_category: dict[str, float | None] = field(default_factory=dict)
    time_scale: float | None = None


SLO_KEYS = {"ttft_p99_ms": "ttft", "tpot_p99_ms": "tpot", "e2e_p99_ms": "e2e"}


def analyse(run_dir: str | Path, summary: dict[str, Any], manifest: dict[str, Any],
            slos: dict[str, float] | None = None) -> TraceAnalysis:
    """The trace figures of one run directory. ``slos``: bounds such as ``ttft_p99_ms=2000``
    (each request's TTFT/TPOT/E2E is held to the bound of that quantity)."""
    bounds = {SLO_KEYS[k]: v for k, v in (slos or {}).items() if k in SLO_KEYS}
    # per request: scheduled_ns, end_ns, ok, ttft, tpot, e2e, input_tokens (56 bytes)
    rows = array("d")
    for r in iter_run_records(run_dir):
        if r["warmup"] or r.get("turn", 0):
            continue
        ok = r["status"] == "ok"
        tp = tpot_ms(r) if ok else None
        rows.extend((r["scheduled_ns"], r["end_ns"], ok, ttft_ms(r) if ok else np.nan,
                     np.nan if tp is None else tp, e2e_ms(r) if ok else np.nan,
                     r["input_tokens"]))
    data = np.frombuffer(rows, dtype=np.float64).reshape(-1, 7)
    n = len(data)
    if n == 0:
        raise ValueError(f"{run_dir}: no measured request")
    ok = data[:, 2] > 0
    t0 = data[:, 0].min()
    # the buckets run to the last OK end: the backlog a burst left shows as achieved > offered
    span = (max(data[:, 0].max(), data[ok, 1].max() if ok.any() else 0.0) - t0) / 1e9
    width = next((w for w in BUCKETS_S if span / w < MAX_BUCKETS), BUCKETS_S[-1])
    nb = int(span // width) + 1
    sched_b = ((data[:, 0] - t0) / 1e9 // width).astype(int)
    end_b = ((data[:, 1] - t0) / 1e9 // width).astype(int)
    buckets = []
    for b in range(nb):
        sel = sched_b == b
        good = sel & ok
        met = None
        if bounds and sel.any():
            passed = good.copy()
            for col, key in ((3, "ttft"), (4, "tpot"), (5, "e2e")):
                if key in bounds:
                    vals = data[:, col]
                    passed &= ~(vals > bounds[key])  # NaN TPOT (one token) passes
            met = float(passed.sum() / sel.sum())
        tb = TimeBucket(start_s=round(b * width, 3), offered_rate=float(sel.sum() / width),
                        achieved_rate=float((ok & (end_b == b)).sum() / width),
                        errors=int((sel & ~ok).sum()), slo_ok=met)
        if good.any():
            tb.ttft_p50_ms, tb.ttft_p99_ms = (float(np.nanpercentile(data[good, 3], q))
                                              for q in (50, 99))
            tp = data[good, 4]
            tb.tpot_p99_ms = float(np.nanpercentile(tp, 99)) if (~np.isnan(tp)).any() else None
            tb.e2e_p99_ms = float(np.nanpercentile(data[good, 5], 99))
        buckets.append(tb)
    bands = []
    for lo, hi in BANDS:
        sel = ok & (data[:, 6] >= lo) & ((data[:, 6] < hi) if hi is not None else True)
        if not sel.any():
            continue
        tt, tp = data[sel, 3], data[sel, 4]
        has_tp = (~np.isnan(tp)).any()
        bands.append(Band(lo=lo, hi=hi, requests=int(sel.sum()),
                          ttft_p50_ms=float(np.percentile(tt, 50)),
                          ttft_p99_ms=float(np.percentile(tt, 99)),
                          tpot_p50_ms=float(np.nanpercentile(tp, 50)) if has_tp else None,
                          tpot_p99_ms=float(np.nanpercentile(tp, 99)) if has_tp else None,
                          e2e_p50_ms=float(np.percentile(data[sel, 5], 50))))
    header = ((manifest.get("dataset") or {}).get("header") or {})
    rep = (header.get("trace") or {}).get("report") or {}
    pc = summary.get("prefix_cache") or {}
    return TraceAnalysis(
        bucket_s=width, buckets=buckets, bands=bands, requests=n,
        theoretical_reuse=rep.get("reuse_tokens"),
        measured_hit_rate=pc.get("hit_rate") if pc.get("unit") == "tokens" else None,
        al_per_category={c: v.get("acceptance_length")
                         for c, v in (summary.get("categories") or {}).items()},
        time_scale=(manifest.get("config") or {}).get("time_scale"))
