"""The comparison: both runs' estimates, B − A and B / A with percentile CIs, verdicts, and
everything ``loadgen compare`` reports as one JSON-able dict (docs/COMPARE.md)."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.compare.comparability import LOAD_KEYS, comparability
from loadgen.compare.estimates import MIN_BLOCKS, TAIL_MIN, run_estimates
from loadgen.compare.load import RunData, load_run
from loadgen.results.catalogue import compared

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_REQUESTS = 10


@dataclass
class Spec:
    key: str
    group: str
    label: str
    unit: str
    better: str | None  # "higher", "lower" or None
    method: str



def _specs(categories: list[str]) -> list[Spec]:
    blocks = "time-block bootstrap of the window's arrivals"
    req = "bootstrap over requests"
    method = {"throughput": blocks, "per-user": req, "acceptance": req}
    out = []
    for m in compared():  # the catalogue's statistics (loadgen/results/catalogue.py)
        how = method.get(m.group, req)
        if m.group == "latency" and m.key.startswith("itl"):
            how = req + " (pooled tokens, resampled by request)"
        elif m.key in ("al_counters", "acceptance_rate"):
            how = "server counters: no CI"
        out.append(Spec(m.key, m.group, m.label, m.unit, m.better, how))
    for c in categories:
        out.append(Spec(f"category.{c}.al", "category", f"{c}: AL (token-weighted)", "",
                        "higher", req))
        out.append(Spec(f"category.{c}.tpot_ms.p50", "category", f"{c}: TPOT p50", "ms",
                        "lower", req))
    return out


def _pct(x: np.ndarray, alpha: float) -> tuple[float, float] | None:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    lo, hi = np.percentile(x, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def compare_runs(a: RunData, b: RunData, *, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                 min_requests: int = DEFAULT_MIN_REQUESTS) -> dict[str, Any]:
    """Everything ``loadgen compare`` prints, as one JSON-able dict."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    if resamples < 100:
        raise ValueError("use at least 100 resamples")
    t0 = time.perf_counter()
    alpha = 1 - confidence
    categories = sorted(set(a.category.tolist()) | set(b.category.tolist()))
    streams = np.random.SeedSequence(seed).spawn(4)
    rngs = [np.random.default_rng(s) for s in streams]
    ea = run_estimates(a, resamples, rngs[0], rngs[2], min_requests, categories)
    eb = run_estimates(b, resamples, rngs[1], rngs[3], min_requests, categories)
    rows = []
    for spec in _specs(categories):
        x, y = ea[spec.key], eb[spec.key]
        row: dict[str, Any] = {
            "key": spec.key, "group": spec.group, "label": spec.label, "unit": spec.unit,
            "better": spec.better, "method": spec.method,
            "a": x.value, "b": y.value, "n_a": x.n, "n_b": y.n,
            "diff": None, "ratio": None, "ci_a": None, "ci_b": None, "ci_diff": None,
            "ci_ratio": None, "ci_log_ratio": None, "significant": None,
            "verdict": "not compared", "reason": None,
        }
        if x.reps is not None:
            row["ci_a"] = _pct(x.reps, alpha)
        if y.reps is not None:
            row["ci_b"] = _pct(y.reps, alpha)
        if x.value is None or y.value is None:
            missing = [r.label for r, e in ((a, x), (b, y)) if e.value is None]
            row["reason"] = (x.reason if x.value is None else y.reason) or (
                f"missing in {' and '.join(missing)}")
            rows.append(row)
            continue
        row["diff"] = y.value - x.value
        if x.value != 0:
            row["ratio"] = y.value / x.value
        if x.reps is None or y.reps is None:
            row["reason"] = x.reason if x.reps is None else y.reason
            row["verdict"] = "no CI"
            rows.append(row)
            continue
        d = y.reps - x.reps
        ci = _pct(d, alpha)
        if ci is None:
            row["reason"] = "too few finite bootstrap replicates"
            row["verdict"] = "no CI"
            rows.append(row)
            continue
        row["ci_diff"] = ci
        if x.value > 0 and y.value > 0:
            with np.errstate(invalid="ignore", divide="ignore"):
                lr = np.log(y.reps / x.reps)
            cl = _pct(lr, alpha)
            if cl is not None:
                row["ci_log_ratio"] = cl
                row["ci_ratio"] = (math.exp(cl[0]), math.exp(cl[1]))
        sig = ci[0] > 0 or ci[1] < 0
        row["significant"] = bool(sig)
        if not sig:
            row["verdict"] = "not significant"
        else:
            up = ci[0] > 0
            if spec.better is None:
                row["verdict"] = "B higher" if up else "B lower"
            else:
                good = up == (spec.better == "higher")
                row["verdict"] = "B better" if good else "B worse"
        rows.append(row)

    warnings, notes = comparability(a, b)
    tested = [r for r in rows if r["significant"] is not None]
    nsig = sum(r["significant"] for r in tested)
    notes.append(f"{nsig} of {len(tested)} differences with a CI are significant at "
                 f"{confidence:.0%}; between identical configurations about "
                 f"{alpha * len(tested):.1f} would be flagged by chance")
    return {
        "loadgen_compare": 1,
        "a": _run_info(a), "b": _run_info(b),
        "settings": {"resamples": resamples, "confidence": confidence, "seed": seed,
                     "min_requests": min_requests, "tail_min": TAIL_MIN,
                     "min_blocks": MIN_BLOCKS},
        "warnings": warnings, "notes": notes,
        "statistics": rows,
        "errors": {"a": _errors(a), "b": _errors(b)},
        "runtime_s": time.perf_counter() - t0,
    }


def _run_info(r: RunData) -> dict[str, Any]:
    cfg = r.config
    return {"label": r.label, "path": str(r.path), "engine": cfg.get("engine"),
            "endpoint": (r.manifest or {}).get("endpoint"), "model": cfg.get("model"),
            "dataset": ((r.manifest or {}).get("dataset") or {}).get("path"),
            "load": {k: cfg.get(k) for k in LOAD_KEYS if cfg.get(k) is not None},
            "output_len": cfg.get("output_len"), "ok_requests": len(r.ok),
            "acceptance_source": ((r.summary or {}).get("acceptance") or {}).get("source"),
            "window_s": ((r.summary or {}).get("window") or {}).get("duration_s"),
            "fleet": (r.summary or {}).get("fleet")}


def _errors(r: RunData) -> dict[str, Any]:
    st = Counter(x.get("status") for x in r.measured)
    reasons = Counter((x.get("error") or "")[:120] for x in r.measured
                      if x.get("status") != "ok")
    return {"total": len(r.measured), "ok": st.get("ok", 0), "error": st.get("error", 0),
            "cancelled": st.get("cancelled", 0), "reasons": dict(reasons)}


def compare_dirs(path_a: Path | str, path_b: Path | str, *, label_a: str | None = None,
                 label_b: str | None = None, more_a: tuple[Path | str, ...] = (),
                 more_b: tuple[Path | str, ...] = (), **kw: Any) -> dict[str, Any]:
    """A against B; with ``more_a`` / ``more_b`` (repetitions of each side) also the
    across-run intervals (compare/across.py) next to the within-run CIs of the first pair."""
    from loadgen.compare.across import across_runs

    a = load_run(path_a, label_a or "A")
    b = load_run(path_b, label_b or "B")
    result = compare_runs(a, b, **kw)
    runs_a = [a, *(load_run(p, f"{label_a or 'A'}{i}") for i, p in enumerate(more_a, 2))]
    runs_b = [b, *(load_run(p, f"{label_b or 'B'}{i}") for i, p in enumerate(more_b, 2))]
    result["across_runs"] = across_runs(runs_a, runs_b, result["statistics"],
                                        result["settings"]["confidence"])
    # conditions (host, cache, AL bound), apart from the comparability warnings
    result["suspect"] = list(result["across_runs"]["suspect"])
    if len(runs_a) < 2 or len(runs_b) < 2:
        result["notes"].append(
            "one run per side: the CIs cover the noise within each run's window only, not "
            "what changes between runs (give repetitions with --a DIR / --b DIR, or use "
            "loadgen sweep --repeats)")
    return result
