"""Across runs: several run directories per side (repetitions), B − A with a Welch t-interval
over the runs' own values, next to the within-run bootstrap CI of the first pair
(docs/COMPARE.md, "Repeated runs").

Within-run CIs resample one run's requests: they cover the noise inside a window, not what
changes between two windows (the machine's other load, the engine's state, a warm cache). Two
identical configurations run one after the other can differ by more than those CIs. With R runs
per side, each run's summary number is one observation: the across-run interval of B − A is
``(mean_B − mean_A) ± t(1 − α/2, ν) · sqrt(s_A²/n_A + s_B²/n_B)`` with Welch–Satterthwaite ν.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loadgen.analysis.sanity import AL_TOLERANCE, comparison_suspects
from loadgen.compare.load import RunData
from loadgen.results.catalogue import compared, value_at
from loadgen.results.summary import Summary

# statistic key of compare/core.py -> its path in summary.json (the catalogue's)
ACROSS: tuple[tuple[str, str], ...] = tuple(
    (m.key, m.path) for m in compared() if m.key not in ("requests_per_s", "acceptance_rate",
                                                          "per_user_tokens_per_s.p50",
                                                          "al_per_request.request_weighted"))


def welch(a: list[float], b: list[float], confidence: float) -> tuple[float, float] | None:
    """The Welch t-interval of mean(b) − mean(a); None with fewer than two runs a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats as sps

    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    se = math.sqrt(va + vb)
    d = float(np.mean(b) - np.mean(a))
    if se == 0:
        return d, d
    nu = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(sps.t.ppf(0.5 + confidence / 2, nu)) * se
    return d - half, d + half


def across_runs(runs_a: list[RunData], runs_b: list[RunData], within: list[dict[str, Any]],
                confidence: float) -> dict[str, Any]:
    """Rows of the across-run comparison, and why the comparison is suspect."""
    wrow = {r["key"]: r for r in within}
    rows = []
    for key, path in ACROSS:
        xa = [v for r in runs_a if (v := value_at(r.summary, path)) is not None]
        xb = [v for r in runs_b if (v := value_at(r.summary, path)) is not None]
        if not xa or not xb:
            continue
        ma, mb = float(np.mean(xa)), float(np.mean(xb))
        ci = welch(xa, xb, confidence)
        w = wrow.get(key, {})
        rows.append({
            "key": key, "label": w.get("label", key), "unit": w.get("unit", ""),
            "better": w.get("better"), "a_values": xa, "b_values": xb, "a_mean": ma,
            "b_mean": mb, "diff": mb - ma, "ratio": mb / ma if ma else None,
            "ci_diff_across": ci, "ci_diff_within": w.get("ci_diff"),
            "significant": None if ci is None else bool(ci[0] > 0 or ci[1] < 0),
            # run-to-run variation the within-run CI does not cover
            "within_too_narrow": (ci is not None and w.get("ci_diff") is not None
                                  and (ci[1] - ci[0]) > (w["ci_diff"][1] - w["ci_diff"][0])),
        })
    sa = [Summary.from_dict(r.summary) for r in runs_a if r.summary]
    sb = [Summary.from_dict(r.summary) for r in runs_b if r.summary]
    suspect = []
    # whichever side is faster per user cannot be faster than its own AL allows
    for fast, slow, name in ((sb, sa, "B"), (sa, sb, "A")):
        uf = [s.per_user_tokens_per_s.mean for s in fast if s.per_user_tokens_per_s.mean]
        us = [s.per_user_tokens_per_s.mean for s in slow if s.per_user_tokens_per_s.mean]
        al = [s.acceptance.per_request.token_weighted or s.acceptance.acceptance_length
              for s in fast]
        al = [x for x in al if x]
        if uf and us and al:
            ratio = float(np.mean(uf) / np.mean(us))
            suspect += [f"{name}: {r}" for r in comparison_suspects(
                [], [], per_user_speedup=ratio, acceptance_length=float(np.mean(al)))]
    suspect += comparison_suspects(sb, sa, per_user_speedup=None, acceptance_length=None,
                                   names=("B", "A"))
    return {"runs": {"a": [str(r.path) for r in runs_a], "b": [str(r.path) for r in runs_b]},
            "confidence": confidence, "rows": rows, "suspect": suspect,
            "al_tolerance": AL_TOLERANCE}
