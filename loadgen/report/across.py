"""Numbers across the cells of a report: AL per category, acceptance by position, speedup grids,
random-vs-real pairs and capacity, each computed from the cells' summaries (loadgen.report.data)
or NA with its reason."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadgen.report.data import NA, CellView, Num, ReportInput, is_random, unique

# ------------------------------------------------------------------ aggregates across cells

def group(cells: list[CellView], *, by: tuple[str, ...]) -> dict[tuple[Any, ...], list[CellView]]:
    out: dict[tuple[Any, ...], list[CellView]] = defaultdict(list)
    for v in cells:
        out[tuple(getattr(v.cell, k) for k in by)].append(v)
    return dict(out)


def al_per_category(cells: list[CellView]) -> tuple[list[str], dict[str, dict[str, Num]]]:
    """{column label: {category: AL}} for the SD cells, with AL token-weighted over every load
    level of the column (Σ tokens / Σ tokens/AL, from each cell's per-category AL and output
    tokens). Columns are SD configuration (· dataset when there are several)."""
    datasets = unique(v.cell.dataset for v in cells)
    cats = sorted({c for v in cells if v.summary for c in v.summary.get("categories", {})})
    out: dict[str, dict[str, Num]] = {}
    for (sd, ds), views in group([v for v in cells if not v.cell.baseline],
                                 by=("sd", "dataset")).items():
        col = sd if len(datasets) == 1 else f"{sd} · {ds}"
        ok = [v for v in views if v.summary]
        row: dict[str, Num] = {}
        for cat in cats:
            toks = steps = 0.0
            for v in ok:
                c = v.summary["categories"].get(cat)  # type: ignore[index]
                if c and c.get("acceptance_length"):
                    toks += c["output_tokens"]
                    steps += c["output_tokens"] / c["acceptance_length"]
            if steps:
                row[cat] = toks / steps
            elif not ok:
                row[cat] = NA("; ".join(unique(v.missing or "no summary" for v in views)))
            elif any(cat in v.summary["categories"] for v in ok):  # type: ignore[index]
                row[cat] = NA("engine reported no per-request AL")
            else:
                row[cat] = NA("no requests of this category")
        out[col] = row
    return cats, out


@dataclass(slots=True)
class PositionCurve:
    label: str
    per_position: list[float]
    conditional: list[float]
    drafts: float | None


def acceptance_by_position(cells: list[CellView]) -> tuple[list[PositionCurve], list[str]]:
    """Per (SD configuration, dataset): per-position acceptance over all its cells, weighted by
    each window's drafts (so it equals Σ accepted_pos[i] / Σ drafts), and the conditional rate
    derived from it. Also the reasons for configurations with none."""
    datasets = unique(v.cell.dataset for v in cells)
    curves, missing = [], []
    for (sd, ds), views in group([v for v in cells if not v.cell.baseline],
                                 by=("sd", "dataset")).items():
        label = sd if len(datasets) == 1 else f"{sd} · {ds}"
        num: dict[int, float] = defaultdict(float)
        den = 0.0
        plain: list[list[float]] = []
        for v in views:
            acc = (v.summary or {}).get("acceptance") or {}
            rates = acc.get("per_position_rate")
            if not rates:
                continue
            w = acc.get("drafts")
            if w:
                for i, r in enumerate(rates):
                    num[i] += r * w
                den += w
            else:
                plain.append(rates)
        if den:
            pos = [num[i] / den for i in range(len(num))]
        elif plain:
            k = min(len(p) for p in plain)
            pos = [sum(p[i] for p in plain) / len(plain) for i in range(k)]
        else:
            srcs = unique(((v.summary or {}).get("acceptance") or {}).get("source")
                           for v in views if v.summary)
            if not any(v.summary for v in views):
                why = "; ".join(unique(v.missing or "no summary" for v in views))
            elif not any(srcs):
                why = "no SD counters"
            else:
                why = f"{', '.join(s for s in srcs if s)} gives no per-position counters"
            missing.append(f"{label}: {why}")
            continue
        cond = [pos[i] / (pos[i - 1] if i else 1.0) if (pos[i - 1] if i else 1.0) else 0.0
                for i in range(len(pos))]
        curves.append(PositionCurve(label, pos, cond, den or None))
    return curves, missing


@dataclass(slots=True)
class SpeedupGrid:
    dataset: str
    sd: str
    load_kind: str
    loads: list[float]
    rows: list[str]  # categories, then "all requests", then "output tokens/s"
    values: dict[tuple[str, float], Num]
    # each value's interval across repetitions (repeats.interval: mean, low, high)
    cis: dict[tuple[str, float], dict[str, Any]] = field(default_factory=dict)


ALL_USER = "all requests (per-user tok/s)"
ALL_TPUT = "output tokens/s (whole run)"


def _mean_speedups(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The repetitions' speedups as loadgen/analysis/repeats.py takes them: geometric mean, and
    the interval under ``<key>_ci``."""
    from loadgen.analysis.repeats import interval

    out = dict(rows[0])
    for key in ("speedup_output_tokens_per_s", "speedup_per_user_tokens_per_s"):
        ci = interval([r.get(key) for r in rows], log=True)
        out[key], out[f"{key}_ci"] = ci["mean"], ci
    return out


def speedup_grids(inp: ReportInput) -> list[SpeedupGrid]:
    """Category × load grids of SD speedup over the baseline at the same dataset and load
    (loadgen.analysis.sweeps.speedup_rows): per-user tokens/s per category and overall, and the
    run's output tokens/s."""
    from loadgen.analysis.sweeps import speedup_rows

    sweep = inp.readable_sweep()
    if sweep is None:
        return []
    failure = None
    try:
        rows = speedup_rows(sweep)
    except (KeyError, TypeError, ValueError) as exc:  # a summary missing a field
        rows, failure = [], f"speedup not computable: {type(exc).__name__} {exc}"
    # with repetitions (--repeats): the mean of the repetitions' speedups (analysis/repeats.py)
    reps: dict[tuple[str, str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        reps.setdefault((r["dataset"], r["sd"], r["load_level"], r["category"]), []).append(r)
    by_key = {k: _mean_speedups(rs) for k, rs in reps.items()}
    base_ok = {(v.cell.dataset, v.cell.load_level): v for v in inp.cells
               if v.cell.baseline and v.summary}
    base_any = {(v.cell.dataset, v.cell.load_level): v for v in inp.cells if v.cell.baseline}
    grids = []
    for (ds, sd), views in group(inp.sd_cells, by=("dataset", "sd")).items():
        loads = sorted({v.cell.load_level for v in views})
        cats = sorted({c for v in views if v.summary for c in v.summary.get("categories", {})})
        rlabels = [*cats, ALL_USER, ALL_TPUT]
        values: dict[tuple[str, float], Num] = {}
        cis: dict[tuple[str, float], dict[str, Any]] = {}
        for lv in loads:
            v = next(x for x in views if x.cell.load_level == lv)
            if v.summary is None:
                why: str | None = v.missing or "no summary"
            elif failure:
                why = failure
            elif (ds, lv) not in base_any:
                why = "no baseline cell at this load"
            elif (ds, lv) not in base_ok:
                why = f"baseline {base_any[(ds, lv)].missing}"
            else:
                why = None
            for rl in rlabels:
                if why:
                    values[(rl, lv)] = NA(why)
                    continue
                cat = "all" if rl in (ALL_USER, ALL_TPUT) else rl
                r = by_key.get((ds, sd, lv, cat))
                key = ("speedup_output_tokens_per_s" if rl == ALL_TPUT
                       else "speedup_per_user_tokens_per_s")
                val = r.get(key) if r else None
                if r and r.get(f"{key}_ci"):
                    cis[(rl, lv)] = r[f"{key}_ci"]
                values[(rl, lv)] = (float(val) if val is not None else
                                    NA("category absent from the baseline" if r is None
                                       else "baseline value is zero or missing"))
        grids.append(SpeedupGrid(ds, sd, views[0].cell.load_kind, loads, rlabels, values, cis))
    return grids


@dataclass(slots=True)
class RandomPair:
    """A random-prompt dataset against a real one at one SD configuration and load: their
    cells paired repetition by repetition (one pair without repetitions)."""

    sd: str
    load: float
    load_kind: str
    randoms: list[CellView]
    reals: list[CellView]

    @property
    def random(self) -> CellView:
        return self.randoms[0]

    @property
    def real(self) -> CellView:
        return self.reals[0]


def random_pairs(inp: ReportInput) -> list[RandomPair]:
    """Each dataset whose name contains "random" with each other dataset at the same SD
    configuration and load level, repetition k of one with repetition k of the other."""
    groups: dict[tuple[str, float, str, str, str], dict[int, list[CellView]]] = {}
    for r in inp.cells:
        if not is_random(r.cell.dataset):
            continue
        for o in inp.cells:
            if (not is_random(o.cell.dataset) and o.cell.sd == r.cell.sd
                    and o.cell.load_level == r.cell.load_level
                    and o.cell.load_kind == r.cell.load_kind
                    and o.cell.repeat == r.cell.repeat):
                key = (r.cell.sd, r.cell.load_level, r.cell.load_kind, r.cell.dataset,
                       o.cell.dataset)
                groups.setdefault(key, {})[r.cell.repeat] = [r, o]
    return [RandomPair(sd, lv, kind, [by[k][0] for k in sorted(by)],
                       [by[k][1] for k in sorted(by)])
            for (sd, lv, kind, _, _), by in groups.items()]


def paired_ratio(pair: RandomPair, value) -> dict[str, Any]:
    """random ÷ real of ``value(view)`` per repetition: geometric mean and interval
    (repeats.interval), or ``{"na": reason}``."""
    from loadgen.analysis.repeats import interval

    ratios = []
    for a, b in zip(pair.randoms, pair.reals, strict=True):
        r = ratio(value(a), value(b))
        if isinstance(r, NA):
            return {"na": str(r)}
        ratios.append(r)
    return interval(ratios, log=True)


def mean_of(views: list[CellView], value) -> Num:
    vals = [value(v) for v in views]
    bad = next((v for v in vals if isinstance(v, NA)), None)
    return bad if bad is not None else sum(vals) / len(vals)


def ratio(a: Num, b: Num) -> Num:
    if isinstance(a, NA):
        return a
    if isinstance(b, NA):
        return b
    return a / b if b else NA("division by zero")


def capacity_section(inp: ReportInput, slos: dict[str, float] | None) -> dict[str, Any]:
    """Capacity under the SLOs (loadgen.analysis.sweeps.capacity) for a sweep; for a run, its SLO
    verdict and goodput. Returns {"na": reason} when there is nothing to say."""
    from loadgen.analysis import sweeps as analysis
    from loadgen.results.records import iter_run_records
    from loadgen.results.summary import Summary

    if not slos:
        stored = (inp.analysis or {}).get("capacity")
        if isinstance(stored, dict) and stored.get("configs") is not None:
            return dict(stored, source="sweep.json analysis")
        return {"na": "no SLO given (loadgen report DIR --slo ttft_p99_ms=...,tpot_p99_ms=...)"}
    if inp.kind == "sweep":
        sweep = inp.readable_sweep()
        assert sweep is not None
        try:
            return dict(analysis.capacity(sweep, slos), source="--slo")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"na": f"capacity could not be computed: {exc}"}
    v = inp.cells[0]
    if v.summary is None:
        return {"na": v.missing or "no summary"}
    summary = Summary.from_dict(v.summary)
    ok, why = analysis.meets_slos(summary, slos)
    try:
        good: Num = analysis.goodput(iter_run_records(inp.root), summary, slos)
    except (OSError, ValueError, KeyError) as exc:
        good = NA(f"requests.jsonl unreadable: {exc}")
    return {"slos": slos, "source": "--slo", "run": {"meets_slos": ok, "violations": why,
                                                      "goodput_requests_per_s": good}}
