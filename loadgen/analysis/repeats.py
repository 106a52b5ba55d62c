"""Across repetitions: every headline number with a confidence interval (docs/METRICS.md,
"Repetitions").

A sweep run with ``--repeats R`` holds R complete runs of every (SD configuration, dataset,
load) cell, run in alternation with the baseline. Each repetition's SD cell is paired with the
baseline cell of the same repetition; the speedup of repetition k is the ratio of the pair, and
the reported speedup is the geometric mean of the R ratios with a two-sided Student-t interval
on their logarithms, exponentiated: exp(m ± t(1 − α/2, R − 1) · s / √R), m and s the mean and
standard deviation of the log ratios. A row whose interval contains 1.0 is "no clear gain". With
one repetition there is no interval (None): a single run cannot tell its own run-to-run noise.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from loadgen.analysis.sanity import comparison_suspects
from loadgen.results.summary import Summary
from loadgen.results.sweepdir import Sweep

DEFAULT_CONFIDENCE = 0.95
# (label, how to read it from a summary) for the numbers reported per configuration
HEADLINE: tuple[tuple[str, str], ...] = (
    ("output_tokens_per_s", "throughput.output_tokens_per_s"),
    ("per_user_tokens_per_s_mean", "per_user_tokens_per_s.mean"),
    ("ttft_ms_p50", "latency_ms.ttft.p50"),
    ("ttft_ms_p99", "latency_ms.ttft.p99"),
    ("tpot_ms_p50", "latency_ms.tpot.p50"),
    ("tpot_ms_p99", "latency_ms.tpot.p99"),
    ("acceptance_length", "acceptance.per_request.token_weighted"),
    ("prefix_cache_hit_rate", "prefix_cache.hit_rate"),
    ("host_others_cores", "host.others_cores"),
    ("gpu_power_w", "telemetry.power_w"),
    ("energy_per_token_j", "telemetry.energy_per_token_j"),
)


def interval(values: Sequence[float | None], confidence: float = DEFAULT_CONFIDENCE,
             log: bool = False) -> dict[str, Any]:
    """Mean and Student-t interval of the repetitions' values (None values dropped). With
    ``log`` (ratios): computed on the logarithms and exponentiated, i.e. the geometric mean and
    an interval that stays positive and treats 2x and 0.5x alike."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)
                    and (x > 0 or not log)], dtype=float)
    if log:
        v = np.log(v)
    back = np.exp if log else (lambda x: x)
    out: dict[str, Any] = {"n": int(v.size), "mean": float(back(v.mean())) if v.size else None,
                           "low": None, "high": None, "std": None}
    if v.size >= 2:
        from scipy import stats as sps  # only when there is an interval to compute

        sd = float(v.std(ddof=1))
        half = float(sps.t.ppf(0.5 + confidence / 2, v.size - 1)) * sd / math.sqrt(v.size)
        m = float(v.mean())
        out.update(std=sd, low=float(back(m - half)), high=float(back(m + half)))
    return out


def _get(s: Summary, path: str) -> float | None:
    obj: Any = s
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return float(obj)


def verdict(ci: dict[str, Any]) -> str:
    """``gain`` (interval above 1), ``loss`` (below 1), ``no clear gain`` (contains 1), or
    ``single run`` (no interval)."""
    if ci["low"] is None:
        return "single run"
    if ci["low"] > 1.0:
        return "gain"
    if ci["high"] < 1.0:
        return "loss"
    return "no clear gain"


def fmt_speedup(r: dict[str, Any]) -> str:
    """``1.42x [1.31, 1.53]`` (the interval across repetitions), or ``1.42x``."""
    if r.get("speedup") is None:
        return "-"
    if r.get("speedup_low") is None:
        return f"{r['speedup']:.2f}x"
    return f"{r['speedup']:.2f}x [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"


def energy_interval(ratios: Sequence[float | None],
                    confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Energy per output token, SD over baseline, across repetitions (``--telemetry``): the
    geometric mean of the per-repetition ratios with its interval, as a speedup's; the saving is
    1 − ratio. ``energy_verdict``: saves (interval below 1), costs (above 1), no clear
    difference, single run, or None without telemetry on both sides."""
    ci = interval(ratios, confidence, log=True)
    out = {"energy_ratio": ci["mean"], "energy_ratio_low": ci["low"],
           "energy_ratio_high": ci["high"], "energy_verdict": None}
    if ci["mean"] is not None:
        out["energy_verdict"] = ("single run" if ci["low"] is None else "saves"
                                 if ci["high"] < 1.0 else "costs" if ci["low"] > 1.0
                                 else "no clear difference")
    return out


def fmt_energy(r: dict[str, Any]) -> str | None:
    """``SD saves 23.4% energy per token [18.1%, 28.3%]`` (or ``costs 5.0% more``), the interval
    across repetitions when there is one; None without an energy ratio."""
    ratio = r.get("energy_ratio")
    if ratio is None:
        return None
    word = "saves" if ratio <= 1 else "costs"
    text = f"SD {word} {abs(1 - ratio):.1%} {'more ' if ratio > 1 else ''}energy per token"
    if r.get("energy_ratio_low") is not None:
        lo, hi = 1 - r["energy_ratio_high"], 1 - r["energy_ratio_low"]  # as savings
        if ratio > 1:
            lo, hi = -hi, -lo
        text += f" [{lo:.1%}, {hi:.1%}]"
    return text


def speedup_intervals(sweep: Sweep, rows: list[dict[str, Any]],
                      confidence: float = DEFAULT_CONFIDENCE) -> list[dict[str, Any]]:
    """One row per (dataset, SD configuration, load, category) from the per-repetition rows
    of ``speedup_rows``: mean speedup with its interval, AL, the verdict and why the result is
    suspect (analysis/sanity.py)."""
    groups: dict[tuple[str, str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["sd"], r["load_level"], r["category"])].append(r)
    summaries = {c.id: sweep.summary(c) for c in sweep.cells if c.status == "complete"}
    by_key: dict[tuple[str, str, float, bool], list[Summary]] = defaultdict(list)
    for c in sweep.cells:
        s = summaries.get(c.id)
        if s is not None:
            by_key[(c.dataset, c.sd, c.load_level, c.baseline)].append(s)
    base_sd = next((c.sd for c in sweep.cells if c.baseline), None)
    out = []
    for (dataset, sd, level, cat), rs in groups.items():
        metric = ("speedup_output_tokens_per_s" if cat == "all"
                  else "speedup_per_user_tokens_per_s")
        sp = interval([r[metric] for r in rs], confidence, log=True)
        user = interval([r["speedup_per_user_tokens_per_s"] for r in rs], confidence, log=True)
        al = interval([r["acceptance_length"] for r in rs], confidence)
        sd_runs = by_key.get((dataset, sd, level, False), [])
        base_runs = by_key.get((dataset, base_sd, level, True), []) if base_sd else []
        suspect = comparison_suspects(
            sd_runs if cat == "all" else [], base_runs if cat == "all" else [],
            per_user_speedup=user["mean"], acceptance_length=al["mean"],
            compares_ttft=cat == "all")
        out.append({"dataset": dataset, "sd": sd, "load_kind": rs[0]["load_kind"],
                    "load_level": level, "category": cat, "metric": metric,
                    "repeats": sp["n"], "speedup": sp["mean"], "speedup_low": sp["low"],
                    "speedup_high": sp["high"], "confidence": confidence,
                    "per_user_speedup": user["mean"], "per_user_speedup_low": user["low"],
                    "per_user_speedup_high": user["high"], "per_user_verdict": verdict(user),
                    "acceptance_length": al["mean"], "verdict": verdict(sp),
                    "suspect": suspect,
                    **energy_interval([r.get("energy_ratio") for r in rs], confidence)})
    return out


def headline_intervals(sweep: Sweep, confidence: float = DEFAULT_CONFIDENCE
                       ) -> list[dict[str, Any]]:
    """Per (dataset, SD configuration, load): every HEADLINE number's mean and interval over
    the repetitions."""
    groups: dict[tuple[str, str, float], list[Summary]] = defaultdict(list)
    for c in sweep.cells:
        if c.status == "complete" and (s := sweep.summary(c)) is not None:
            groups[(c.dataset, c.sd, c.load_level)].append(s)
    return [{"dataset": d, "sd": sd, "load_level": lv, "repeats": len(ss),
             **{name: interval([_get(s, path) for s in ss], confidence)
                for name, path in HEADLINE}}
            for (d, sd, lv), ss in sorted(groups.items())]
