"""The report's content, independent of its format: sections of text, plots and tables, which
loadgen.report.html and loadgen.report.markdown render."""

from __future__ import annotations

import json
from typing import Any

from loadgen.engines.sampling import sampling_label
from loadgen.report import across as X
from loadgen.report import data as D
from loadgen.report.blocks import (
    METRICS_POINTER,
    Section,
    Table,
    V,
    missing_row,
    num,
    speedup,
    text,
)
from loadgen.report.conditions import conditions_section, random_section, repeats_section
from loadgen.report.plots import Plot
from loadgen.results.catalogue import LATENCY_METRICS

# ------------------------------------------------------------------ sections

def build(inp: D.ReportInput, plots: list[Plot], gpus: int,
          slos: dict[str, float] | None) -> tuple[str, list[Section]]:

    from loadgen.report.policy import capacity_search_sections, lossless_section, policy_section

    if inp.kind == "capacity":
        return f"loadgen report: capacity {inp.root.resolve().name}", capacity_search_sections(inp)
    by_key = {p.key: p for p in plots}
    if inp.kind == "run":
        title = f"loadgen report: run {inp.root.name}"
    else:
        title = f"loadgen report: sweep {inp.root.resolve().name}"
    # What a reader came for first (key numbers, warnings, AL per category, speedup), the
    # detail after, the configuration (the manifest) last and folded.
    steps: list[tuple[str, str, Any, tuple[Any, ...]]] = [
        ("overview", "Overview", _overview, (inp, gpus)),
        ("key_numbers", "Key numbers", _key_numbers, (inp, gpus)),
        ("warnings", "Warnings", _warnings, (inp,)),
        ("al_per_category", "Acceptance length per category", _al_section,
         (inp, by_key["al_per_category"]))]
    if inp.kind == "sweep":
        steps += [("repeats", "Speedup across repetitions", repeats_section, (inp,)),
                  ("speedup", "SD speedup (category × load)", _speedup_section,
                   (inp, by_key["speedup_heatmap"])),
                  ("sd_policy", "Where SD stops paying, and which K", policy_section, (inp,)),
                  ("lossless", "Lossless check", lossless_section, (inp,)),
                  ("pareto", "Throughput per GPU against per-user speed (Pareto)",
                   lambda p: Section("pareto", "Throughput per GPU against per-user speed "
                                     "(Pareto)", plot=p), (by_key["pareto"],))]
    steps.append(("conditions", "Conditions of each run", conditions_section, (inp,)))
    steps.append(("acceptance_by_position", "Acceptance by draft position", _position_section,
                  (inp, by_key["acceptance_by_position"])))
    if inp.kind == "sweep":
        steps += [("latency", "TTFT and TPOT percentiles against load", _latency_section,
                   (inp, by_key["latency_vs_load"])),
                  ("random_vs_real", "Random vs real prompts", random_section,
                   (inp, by_key["random_vs_real"], gpus))]
    else:
        steps.append(("latency", "Latency percentiles", _latency_section,
                      (inp, by_key["latency_percentiles"])))
    from loadgen.report.trace import is_trace_run, trace_section

    if is_trace_run(inp):
        steps.append(("trace", "Trace replay", trace_section, (inp, slos)))
    steps += [("per_category", "Per category", _per_category, (inp,)),
              ("capacity", "Capacity and recommendation", _capacity, (inp, slos)),
              ("config", "Configuration", _config, (inp,))]
    out = []
    for key, sec_title, make, args in steps:
        try:
            out.append(make(*args))
        except Exception as exc:  # an unexpected summary never stops the report
            out.append(Section(key, sec_title, text=[
                f"n/a (section could not be built: {type(exc).__name__}: {exc})"]))
    return title, out


def _overview(inp: D.ReportInput, gpus: int) -> Section:
    n_ok = sum(1 for v in inp.cells if v.summary)
    if inp.kind == "sweep":
        lines = [f"Sweep directory {inp.root}: {len(inp.cells)} cells, {n_ok} with a summary; "
                 f"SD configurations {', '.join(inp.sd_labels())}; datasets "
                 f"{', '.join(inp.datasets())}."]
    else:
        v = inp.cells[0]
        lines = [f"Run directory {inp.root}: {v.label}"
                 + ("" if v.summary else f" — {v.missing}") + "."]
        lines.append("A single run: the Pareto plot, latency against load, the speedup heatmap "
                     "and the random-vs-real comparison need a sweep (several runs) and are "
                     "not shown.")
    lines.append(f"Per-GPU figures divide output tokens/s by --gpus {gpus}.")
    lines.append(METRICS_POINTER)
    return Section("overview", "Overview", text=lines)


def _config(inp: D.ReportInput) -> Section:
    if inp.kind == "sweep":
        cfg = inp.config
        rows = [[text(v.cell.id), text(v.cell.sd + (" (baseline)" if v.cell.baseline else "")),
                 text(json.dumps(v.cell.sd_config, sort_keys=True) if v.cell.sd_config
                      else "-"),
                 text(v.cell.dataset), text(D.load_text(v.cell)),
                 V(v.cell.status + (f": {v.cell.error}" if v.cell.error else ""),
                   None if v.cell.status == "complete" else "na"),
                 _requests(v)] for v in inp.cells]
        t = Table("Cells", ["cell", "SD configuration", "SD config", "dataset", "load",
                            "status", "requests ok / error / cancelled"], rows)
        return Section("config", "Configuration", pre=json.dumps(cfg, indent=2, default=str),
                       pre_folded=True, tables=[t])
    m = inp.config or {}
    keep = {k: m.get(k) for k in ("command", "config", "endpoint", "dataset", "engine",
                                  "versions", "host", "status") if m.get(k) is not None}
    ds = keep.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("header"), dict):
        keep["dataset"] = dict(ds, header={k: v for k, v in ds["header"].items()
                                           if not isinstance(v, list | dict)})
    return Section("config", "Configuration (manifest.json)",
                   pre=json.dumps(keep, indent=2, default=str) if keep
                   else "manifest.json missing", pre_folded=bool(keep))


def _requests(v: D.CellView) -> V:
    if v.summary is None:
        return V(f"n/a ({v.missing})", "na")
    r = v.summary["requests"]
    return V(f"{r['ok']} / {r['error']} / {r['cancelled']}",
             "num slower" if r["error"] or r["cancelled"] else "num")


def _key_numbers(inp: D.ReportInput, gpus: int) -> Section:
    cols = ["SD", "dataset", "load", "requests ok / error / cancelled", "output tokens/s",
            f"output tokens/s per GPU (÷{gpus})", "requests/s", "per-user tokens/s (mean)",
            "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)", "TPOT p99 (ms)",
            "AL (per-request, token-weighted)", "AL (server counters, window)",
            "acceptance rate", "sampling"]
    rows = []
    for v in inp.cells:
        lead = [text(v.cell.sd), text(v.cell.dataset), text(D.load_text(v.cell))]
        if v.summary is None:
            rows.append(missing_row(v, lead, len(cols) - 3))
            continue
        rows.append([*lead, _requests(v), num(D.output_tps(v), 1), num(D.output_tps(v, gpus), 1),
                     num(D.get(v, "throughput", "requests_per_s"), 3),
                     num(D.per_user_tps(v), 1),
                     num(D.latency(v, "ttft", "p50")), num(D.latency(v, "ttft", "p99")),
                     num(D.latency(v, "tpot", "p50")), num(D.latency(v, "tpot", "p99")),
                     num(D.acceptance_length(v), 3), num(D.counter_al(v), 3),
                     num(D.acceptance_rate(v), 3), text(sampling_label(v.summary.get("sampling")))])
    return Section("key_numbers", "Key numbers", tables=[Table(
        "Per run" if inp.kind == "run" else "Per cell", cols, rows,
        note="Output tokens/s: tokens that arrived inside the measurement window / its "
             "duration. AL (per-request): Σ tokens / Σ tokens/AL over the requests, the "
             "measure the per-category AL uses; AL (server counters): 1 + accepted / drafts "
             "over the window, i.e. per verify step that drafted.")])


def _al_section(inp: D.ReportInput, plot: Plot) -> Section:
    cats, cols = X.al_per_category(inp.cells)
    sec = Section("al_per_category", "Acceptance length per category", plot=plot)
    if not cols:
        sec.text.append("n/a (no SD configuration: every cell has SD off)")
        return sec
    rows = [[text(c), *(num(cols[col][c], 3) for col in cols)] for c in cats]
    sec.tables.append(Table("AL per category (tokens per target step)",
                            ["category", *cols], rows))
    return sec


def _position_section(inp: D.ReportInput, plot: Plot) -> Section:
    curves, missing = X.acceptance_by_position(inp.cells)
    sec = Section("acceptance_by_position", "Acceptance by draft position", plot=plot)
    sec.items.extend(f"n/a for {m}" for m in missing)
    if curves:
        k = max(len(c.per_position) for c in curves)
        cols = ["position"]
        for c in curves:
            cols += [f"{c.label}: per-position rate", f"{c.label}: conditional rate"]
        rows = []
        for i in range(k):
            row = [V(str(i + 1), "num")]
            for c in curves:
                row += [num(c.per_position[i] if i < len(c.per_position) else None, 3),
                        num(c.conditional[i] if i < len(c.conditional) else None, 3)]
            rows.append(row)
        sec.tables.append(Table("Acceptance by draft position (1 = first drafted token)",
                                cols, rows))
    return sec


def _latency_section(inp: D.ReportInput, plot: Plot) -> Section:
    title = ("TTFT and TPOT percentiles against load" if inp.kind == "sweep"
             else "Latency percentiles")
    stats = ("p50", "p90", "p99")
    head = ("ttft", "tpot")  # with every stat; the catalogue's other latencies at p99
    rest = [m for m in LATENCY_METRICS if m not in head]
    cols = ["SD", "dataset", "load"] + [f"{LATENCY_METRICS[m]} {s} (ms)" for m in head
                                        for s in stats] + [f"{LATENCY_METRICS[m]} p99 (ms)"
                                                           for m in rest]
    rows = []
    for v in sorted(inp.cells, key=lambda v: (v.cell.dataset, v.cell.sd, v.cell.load_level)):
        lead = [text(v.cell.sd), text(v.cell.dataset), text(D.load_text(v.cell))]
        if v.summary is None:
            rows.append(missing_row(v, lead, len(cols) - 3))
            continue
        rows.append([*lead, *(num(D.latency(v, m, s)) for m in head for s in stats),
                     *(num(D.latency(v, m, "p99")) for m in rest)])
    return Section("latency", title, plot=plot, tables=[Table("Latency (ms)", cols, rows)])


def _speedup_section(inp: D.ReportInput, plot: Plot) -> Section:
    sec = Section("speedup", "SD speedup (category × load)", plot=plot)
    grids = X.speedup_grids(inp)
    if not grids:
        sec.text.append(f"n/a ({plot.na or 'no SD configuration with a baseline'})")
    slower = []
    for g in grids:
        rows = []
        for r in g.rows:
            cells = [speedup(g.values[(r, lv)], g.cis.get((r, lv))) for lv in g.loads]
            rows.append([text(r), *cells])
            slower += [f"{g.sd} · {g.dataset} · {r} at {lv:g}: {c.text}"
                       for lv, c in zip(g.loads, cells, strict=True) if c.cls == "num slower"]
        sec.tables.append(Table(f"{g.sd} vs SD off · dataset {g.dataset} (speedup, ×)",
                                ["category", *(f"{D.load_unit(g.load_kind).split(' ')[0]} "
                                               f"{lv:g}" for lv in g.loads)], rows))
    if slower:
        sec.text.append(f"SD is slower than the baseline (marked ▼: the interval across "
                        f"repetitions below 1, or a single run below 1) in "
                        f"{len(slower)} place(s):")
        sec.items.extend(slower)
    elif grids:
        sec.text.append("SD is at least as fast as the baseline everywhere it was measured.")
    return sec


def _per_category(inp: D.ReportInput) -> Section:
    cols = ["SD", "dataset", "load", "category", "requests", "AL (token-weighted)",
            "AL (request-weighted)", "AL from", "sampling", "output tokens", "TTFT p50 (ms)",
            "TPOT p50 (ms)", "per-user tokens/s (mean)"]
    rows = []
    for v in inp.cells:
        if v.summary is None:
            rows.append(missing_row(v, [text(v.cell.sd), text(v.cell.dataset),
                                        text(D.load_text(v.cell))], len(cols) - 3))
            continue
        why = D.no_sd_reason(v)
        for cat, c in v.summary.get("categories", {}).items():
            al = c.get("acceptance_length")
            alr = c.get("acceptance_length_request_weighted")
            rows.append([text(v.cell.sd), text(v.cell.dataset), text(D.load_text(v.cell)),
                         text(cat), num(c.get("requests"), 0),
                         num(D.NA(why or "engine reported no per-request AL")
                             if al is None else al, 3),
                         num(D.NA(why or "engine reported no per-request AL")
                             if alr is None else alr, 3),
                         text(c.get("acceptance_source") or "-"),
                         text(sampling_label(v.summary.get("sampling"))),
                         num(c.get("output_tokens"), 0), num(c.get("ttft_ms_p50")),
                         num(c.get("tpot_ms_p50")), num(c.get("per_user_tokens_per_s_mean"), 1)])
    return Section("per_category", "Per category", tables=[Table(
        "Per category" + ("" if inp.kind == "run" else ", every cell"), cols, rows,
        collapsed=inp.kind == "sweep" and len(rows) > 12)])


def _capacity(inp: D.ReportInput, slos: dict[str, float] | None) -> Section:
    cap = X.capacity_section(inp, slos)
    sec = Section("capacity", "Capacity and recommendation")
    if "na" in cap:
        sec.text.append(f"n/a ({cap['na']})")
        return sec
    slo_text = ", ".join(f"{k} <= {v:g}" for k, v in cap.get("slos", {}).items())
    sec.text.append(f"SLOs ({cap.get('source')}): {slo_text}.")
    if "run" in cap:
        r = cap["run"]
        sec.text.append("The run meets every SLO." if r["meets_slos"] else
                        "The run does not meet the SLOs: " + "; ".join(r["violations"]) + ".")
        sec.tables.append(Table("SLO verdict", ["meets SLOs", "goodput (requests/s)"],
                                [[text("yes" if r["meets_slos"] else "no"),
                                  num(r["goodput_requests_per_s"], 3)]]))
        return sec
    rows = []
    for c in cap.get("configs", []):
        unit = "concurrency" if c.get("load_kind") == "concurrency" else "req/s"
        for lv in c.get("levels", []):
            rows.append([text(c["dataset"]), text(c["sd"]), text(f"{lv['load_level']:g}"),
                         V("yes") if lv["meets_slos"] else V("no", "slower"),
                         text("; ".join(lv.get("violations") or []) or "-"),
                         num(lv.get("goodput_requests_per_s"), 3),
                         num(lv.get("requests_per_s"), 3),
                         num(lv.get("output_tokens_per_s"), 1),
                         text(f"{c['capacity']:g} ({unit})" if c.get("capacity") is not None
                              else "n/a (meets the SLOs at no load tested)")])
    sec.tables.append(Table("Capacity per configuration and load",
                            ["dataset", "SD", "load", "meets SLOs", "violations",
                             "goodput (requests/s)", "requests/s", "output tokens/s",
                             "capacity"], rows))
    failed = [v for v in inp.cells if v.summary is None]
    if failed:
        sec.text.append("Cells without a summary are not part of the capacity: "
                        + "; ".join(f"{v.cell.id} ({v.missing})" for v in failed) + ".")
    rec = cap.get("recommendation")
    if rec:
        sec.text.append("Recommendation:")
        sec.pre = rec
    return sec


def _warnings(inp: D.ReportInput) -> Section:
    sec = Section("warnings", "Warnings")
    for v in inp.cells:
        if v.summary is None:
            sec.items.append(f"{v.cell.id}: no summary ({v.missing})")
            continue
        for w in v.summary.get("warnings", []):
            sec.items.append(f"{v.cell.id}: {w}")
        for reason, n in (v.summary.get("error_reasons") or {}).items():
            sec.items.append(f"{v.cell.id}: {n} request(s) failed: {reason}")
        if v.summary.get("interrupted"):
            sec.items.append(f"{v.cell.id}: the run was interrupted")
    if not sec.items:
        sec.text.append("No warnings in any summary.")
    return sec
