"""Where SD stops paying, and which K to run (docs/METRICS.md, "SD policy").

From a sweep over load (and over K when several SD configurations differ in
``num_spec_tokens``), per (dataset, SD configuration, category) and overall ("all"), on the
**per-user speedup** (mean per-user tokens/s with SD / without, ``speedup_rows``):

- **Crossover**: the load at which the speedup crosses 1. At each level, the per-token time
  difference Δ = 1 / (SD's mean per-user tokens/s) − 1 / (the baseline's) (negative while SD
  pays); the crossover is interpolated linearly in load between the two measured levels around
  the first change from Δ <= 0 to Δ > 0. Δ is linear in load where a step's time is linear in
  the tokens it verifies (docs/SYNTHETIC.md), so the interpolation is exact there. Its interval
  is the Student-t interval (loadgen/analysis/repeats.py ``interval``) of the crossovers of each
  repetition's own curve, when at least two repetitions cross. ``value`` None with ``above``
  (SD paid at every level) or ``below`` (at none).
- **Recommended K per band**: each measured level starts a band that runs to the next level. In
  a band the recommendation is the configuration whose speedup has the highest lower bound of its
  interval across repetitions (geometric mean, t-interval: the same rule as every verdict), and
  "off" when no configuration's lower bound is above 1 (with one repetition there is no bound:
  the mean stands in, and the band says so). Adjacent bands with the same choice are merged.
  Each recommendation carries each engine's own setting for that K and method
  (loadgen/launch/commands.py): vLLM's ``--speculative-config``, SGLang's
  ``--speculative-num-steps``/``--speculative-num-draft-tokens``, TensorRT-LLM's
  ``speculative_config.max_draft_len``, llama.cpp's draft length flag.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

from loadgen.analysis.repeats import DEFAULT_CONFIDENCE, interval
from loadgen.results.sweepdir import Sweep

METRIC = "speedup_per_user_tokens_per_s"


def crossing(points: list[tuple[float, float | None]]) -> dict[str, Any]:
    """``points``: (load, Δ) sorted by load, Δ the per-token time difference (SD − baseline).
    The first change from Δ <= 0 to Δ > 0, interpolated linearly: {"value", "between"}; or
    {"value": None, "above"|"below"}."""
    pts = [(lv, d) for lv, d in points if d is not None]
    if not pts:
        return {"value": None}
    for (l0, d0), (l1, d1) in itertools.pairwise(pts):
        if d0 <= 0.0 < d1:
            return {"value": l0 + (0.0 - d0) / (d1 - d0) * (l1 - l0), "between": [l0, l1]}
    if pts[0][1] > 0.0:
        return {"value": None, "below": pts[0][0]}
    return {"value": None, "above": pts[-1][0]}


def _delta(r: dict[str, Any]) -> float | None:
    u, b = r.get("per_user_tokens_per_s"), r.get("baseline_per_user_tokens_per_s")
    return 1.0 / u - 1.0 / b if u and b else None


def engine_settings(method: str | None, k: int, draft: str | None = None) -> dict[str, Any]:
    """Each engine's own setting for SD ``method`` with K = ``k``."""
    from loadgen.launch.commands import (
        SPEC_METHODS,
        SpecConfig,
        llamacpp_spec_args,
        sglang_spec_args,
        trtllm_config,
        vllm_speculative_config,
    )

    if method not in SPEC_METHODS or method == "none":
        return {"num_spec_tokens": k}
    spec = SpecConfig(method, draft=draft, num_spec_tokens=k)
    return {"vllm": {"speculative_config": vllm_speculative_config(spec)},
            "sglang": sglang_spec_args(spec),
            "trtllm": {"speculative_config": trtllm_config(spec)["speculative_config"]},
            "llamacpp": llamacpp_spec_args(spec)}


def sd_policy(sweep: Sweep, rows: list[dict[str, Any]],
              confidence: float = DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """``{"crossover": [...], "recommended_k": [...]}`` (see the module doc)."""
    # (dataset, sd, category) -> level -> repeat -> speedup
    by: dict[tuple[str, str, str], dict[float, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict))
    deltas: dict[tuple[str, str, str], dict[float, dict[int, float | None]]] = defaultdict(
        lambda: defaultdict(dict))
    kinds: dict[str, str] = {}
    for r in rows:
        if r.get(METRIC) is not None:
            key = (r["dataset"], r["sd"], r["category"])
            by[key][r["load_level"]][r["repeat"]] = r[METRIC]
            deltas[key][r["load_level"]][r["repeat"]] = _delta(r)
            kinds[r["dataset"]] = r["load_kind"]
    cis: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    crossovers = []
    for (dataset, sd, cat), levels in sorted(by.items()):
        lv = sorted(levels)
        for level in lv:
            cis[(dataset, sd, cat, level)] = interval(list(levels[level].values()), confidence,
                                                      log=True)
        dl = deltas[(dataset, sd, cat)]

        def mean(vals: list[float | None]) -> float | None:
            v = [x for x in vals if x is not None]
            return sum(v) / len(v) if v else None

        c = crossing([(level, mean(list(dl[level].values()))) for level in lv])
        reps = sorted({k for level in lv for k in levels[level]})
        per_rep = [crossing([(level, dl[level].get(k)) for level in lv])["value"]
                   for k in reps] if len(reps) > 1 else []
        ci = interval([v for v in per_rep if v is not None], confidence)
        c["interval"] = [ci["low"], ci["high"]] if ci["low"] is not None else None
        c["repeats_crossing"] = sum(v is not None for v in per_rep)
        crossovers.append({"dataset": dataset, "sd": sd, "category": cat,
                           "load_kind": kinds[dataset], "crossover": c})
    return {"metric": METRIC, "confidence": confidence, "crossover": crossovers,
            "recommended_k": _recommend(sweep, by, cis)}


def _recommend(sweep: Sweep, by: dict, cis: dict) -> list[dict[str, Any]]:
    sd_cfg = {c.sd: c.sd_config for c in sweep.cells if not c.baseline}
    out = []
    for dataset, cat in sorted({(d, c) for d, _, c in by}):
        configs = sorted(sd for d, sd, c in by if d == dataset and c == cat)
        levels = sorted({lv for d, sd, c in by if d == dataset and c == cat
                         for lv in by[(d, sd, c)]})
        bands: list[dict[str, Any]] = []
        for i, level in enumerate(levels):
            best, best_low, single = None, -math.inf, False
            for sd in configs:
                ci = cis.get((dataset, sd, cat, level))
                if ci is None or ci["mean"] is None:
                    continue
                low = ci["low"] if ci["low"] is not None else ci["mean"]
                single = single or ci["low"] is None
                if low > best_low:
                    best, best_low = sd, low
            choice = best if best is not None and best_low > 1.0 else None
            upper = levels[i + 1] if i + 1 < len(levels) else None
            if bands and bands[-1]["config"] == choice:
                bands[-1]["to"] = upper
                continue
            cfg = sd_cfg.get(choice or "", {})
            k = cfg.get("num_spec_tokens") or _launch_default_k(cfg)
            band = {"from": level, "to": upper, "config": choice,
                    "k": "off" if choice is None else k,
                    "speedup_low": best_low if math.isfinite(best_low) else None,
                    "bound": "mean (one repetition)" if single else "interval low"}
            if choice is not None and k is not None:
                band["settings"] = engine_settings(cfg.get("spec"), int(k), cfg.get("draft"))
            bands.append(band)
        out.append({"dataset": dataset, "category": cat, "bands": bands})
    return out


def _launch_default_k(cfg: dict[str, Any]) -> int | None:
    """K of a configuration the sweep launched without --num-spec-tokens: the launcher's
    default for its method (a fixed endpoint's K is unknown unless its entry says)."""
    from loadgen.launch.commands import SPEC_METHODS, SpecConfig

    spec = cfg.get("spec")
    if cfg.get("endpoint") or spec not in SPEC_METHODS or spec == "none":
        return None
    return SpecConfig(spec).k


def band_text(b: dict[str, Any]) -> str:
    """``4-16: K=3 (sd-k3)`` / ``16+: off``."""
    span = f"{b['from']:g}-{b['to']:g}" if b["to"] is not None else f"{b['from']:g}+"
    if b["config"] is None:
        return f"{span}: off"
    k = b["k"] if b["k"] is not None else "?"
    return f"{span}: K={k} ({b['config']})"
