"""Across runs: SD speedup against the baseline, and capacity under SLOs (docs/METRICS.md).

- **Speedup** of an SD configuration at (dataset, load level, category) = its output tokens/s (or
  mean per-user tokens/s) / the baseline's at the same dataset and load level. Overall rows use
  the window throughput; per-category rows use the mean per-user tokens/s of the category's
  requests (throughput is a property of the whole mix, not of one category). ``pays`` is
  speedup >= 1.
- **SLOs** are ``<metric>_<stat>_ms=<limit>``, e.g. ``ttft_p99_ms=2000,tpot_p99_ms=50``, with
  metric in ttft, tpot, itl, e2e and stat in mean, p50, p90, p99, max. A run meets them if every
  named statistic of its summary is within its limit.
- **Capacity** of a configuration = the highest load level whose run meets every SLO (and whose
  requests all succeeded), provided every lower level met them too.
- **Goodput** of a run = requests per second, over its window, of the ok requests that meet every
  SLO individually (each request's own TTFT, TPOT, E2E against the limits; ITL limits are checked
  against the request's worst per-token gap).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from loadgen.analysis.metrics import e2e_ms, itl_values_ms, tpot_ms, ttft_ms
from loadgen.analysis.telemetry import energy_row
from loadgen.results.catalogue import BY_SLO, parse_slos
from loadgen.results.summary import Summary
from loadgen.results.sweepdir import Cell, Sweep

__all__ = ["capacity", "goodput", "meets_slos", "parse_slos", "request_meets_slos",
           "speedup_rows"]

def meets_slos(summary: Summary, slos: dict[str, float]) -> tuple[bool, list[str]]:
    failed = []
    for key, limit in slos.items():
        metric, stat, _ = BY_SLO[key].slo.split("_")  # type: ignore[union-attr]
        st = summary.latency_ms.metric(metric)
        value = st.get(stat) if st is not None else None
        if value is None or value > limit:
            failed.append(f"{metric} {stat} {value if value is None else round(value, 1)} ms "
                          f"> {limit:g} ms")
    if summary.requests.error or summary.requests.cancelled:
        failed.append(f"{summary.requests.error} failed requests")
    return not failed, failed


def request_meets_slos(r: dict[str, Any], slos: dict[str, float]) -> bool:
    if r["status"] != "ok":
        return False
    for key, limit in slos.items():
        metric = key.split("_")[0]
        if metric == "ttft":
            value = ttft_ms(r)
        elif metric == "e2e":
            value = e2e_ms(r)
        elif metric == "tpot":
            value = tpot_ms(r) or 0.0
        else:
            per_token, _ = itl_values_ms(r)
            value = max(per_token, default=0.0)
        if value > limit:
            return False
    return True


def goodput(records: Iterable[dict[str, Any]], summary: Summary,
            slos: dict[str, float]) -> float:
    w = summary.window
    good = sum(1 for r in records if not r["warmup"] and w.start_ns <= r["end_ns"]
               <= w.end_ns and request_meets_slos(r, slos))
    return good / w.duration_s if w.duration_s else 0.0


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def speedup_rows(sweep: Sweep) -> list[dict[str, Any]]:
    summaries = {c.id: sweep.summary(c) for c in sweep.cells if c.status == "complete"}
    # with repetitions, each SD cell is paired with the baseline of its own repetition
    base: dict[tuple[str, float, int], Cell] = {
        (c.dataset, c.load_level, c.repeat): c for c in sweep.cells
        if c.baseline and summaries.get(c.id)}
    rows = []
    for c in sweep.cells:
        s = summaries.get(c.id)
        b = base.get((c.dataset, c.load_level, c.repeat))
        if c.baseline or s is None or b is None:
            continue
        bs = summaries[b.id]
        row = {"dataset": c.dataset, "sd": c.sd, "load_kind": c.load_kind,
               "load_level": c.load_level, "repeat": c.repeat, "category": "all",
               "acceptance_length": s.acceptance.per_request.token_weighted
               or s.acceptance.acceptance_length,
               "output_tokens_per_s": s.throughput.output_tokens_per_s,
               "baseline_output_tokens_per_s": bs.throughput.output_tokens_per_s,
               "speedup_output_tokens_per_s": _ratio(s.throughput.output_tokens_per_s,
                                                     bs.throughput.output_tokens_per_s),
               "speedup_per_user_tokens_per_s": _ratio(s.per_user_tokens_per_s.mean,
                                                       bs.per_user_tokens_per_s.mean)}
        row.update(energy_row(s, bs))  # --telemetry: energy per token, SD against baseline
        row["pays"] = (row["speedup_output_tokens_per_s"] or 0) >= 1.0
        rows.append(row)
        for cat, cs in s.categories.items():
            bc = bs.categories.get(cat)
            if not bc:
                continue
            mine = cs.per_user_tokens_per_s_mean
            theirs = bc.per_user_tokens_per_s_mean
            sp = _ratio(mine, theirs)
            rows.append({"dataset": c.dataset, "sd": c.sd, "load_kind": c.load_kind,
                         "load_level": c.load_level, "repeat": c.repeat, "category": cat,
                         "acceptance_length": cs.acceptance_length,
                         "per_user_tokens_per_s": mine,
                         "baseline_per_user_tokens_per_s": theirs,
                         "speedup_per_user_tokens_per_s": sp,
                         "pays": (sp or 0) >= 1.0})
    return rows


def capacity(sweep: Sweep, slos: dict[str, float]) -> dict[str, Any]:
    """Per (dataset, SD configuration): each load level's SLO verdict and goodput, and the
    highest level that meets every SLO."""
    from loadgen.results.records import iter_run_records

    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    for c in sweep.cells:
        if c.status == "complete":
            groups[(c.dataset, c.sd)].append(c)
    out: dict[str, Any] = {"slos": slos, "configs": []}
    for (dataset, sd), cells in sorted(groups.items()):
        levels = []
        for c in sorted(cells, key=lambda c: c.load_level):
            s = sweep.summary(c)
            if s is None:
                continue
            ok, why = meets_slos(s, slos)
            recs = iter_run_records(sweep.cell_dir(c))
            levels.append({"load_level": c.load_level, "meets_slos": ok, "violations": why,
                           "goodput_requests_per_s": goodput(recs, s, slos),
                           "requests_per_s": s.throughput.requests_per_s,
                           "output_tokens_per_s": s.throughput.output_tokens_per_s})
        # capacity: the highest level such that it and every level below it meet the SLOs
        cap = None
        for lv in levels:
            if not lv["meets_slos"]:
                break
            cap = lv["load_level"]
        out["configs"].append({"dataset": dataset, "sd": sd,
                               "load_kind": cells[0].load_kind, "capacity": cap,
                               "levels": levels})
    out["recommendation"] = recommend(out)
    return out


def recommend(cap: dict[str, Any]) -> str:
    """A few plain sentences: which configuration carries the most load within the SLOs."""
    lines = []
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in cap["configs"]:
        by_dataset[c["dataset"]].append(c)
    slo_text = ", ".join(f"{k.replace('_ms', '')} <= {v:g} ms" for k, v in cap["slos"].items())
    for dataset, configs in by_dataset.items():
        meeting = [c for c in configs if c["capacity"] is not None]
        if not meeting:
            lines.append(f"{dataset}: no configuration meets {slo_text} at any load tested; "
                         "test lower loads or relax the SLOs.")
            continue
        def at_capacity(c: dict[str, Any]) -> float:
            return next(lv["goodput_requests_per_s"] for lv in c["levels"]
                        if lv["load_level"] == c["capacity"])

        # the most load within the SLOs; between equals, the most goodput there
        best = max(meeting, key=lambda c: (c["capacity"], at_capacity(c)))
        unit = "concurrent requests" if best["load_kind"] == "concurrency" else "requests/s"
        good = at_capacity(best)
        lines.append(f"{dataset}: {best['sd']} carries the most load within {slo_text}: up to "
                     f"{best['capacity']:g} {unit} (goodput {good:.2f} requests/s there).")
        others = [c for c in configs if c is not best]
        for c in others:
            if c["capacity"] is None:
                lines.append(f"  {c['sd']} meets the SLOs at no load tested.")
            else:
                lines.append(f"  {c['sd']}: up to {c['capacity']:g} {unit}.")
    return "\n".join(lines)
