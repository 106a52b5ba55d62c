"""What a report is made of: a run or a sweep directory read into cells, and the numbers each
plot and table shows, computed from the summaries (docs/METRICS.md defines every one).

A missing number is never invented: it is an :class:`NA` carrying the reason (SD off, a failed
cell, an engine that exposes no per-position counters, ...), which the HTML and Markdown print.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.results.sweepdir import Cell, Sweep, is_run_dir, is_sweep_dir, load_sweep


@dataclass(frozen=True, slots=True)
class NA:
    """A number that is not available, and why."""

    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


Num = float | NA


@dataclass(slots=True)
class CellView:
    """One run of the report: a sweep cell, or the single run of a run directory."""

    cell: Cell
    summary: dict[str, Any] | None
    manifest: dict[str, Any] | None
    missing: str | None = None  # why summary is None

    @property
    def ok(self) -> bool:
        return self.summary is not None

    @property
    def label(self) -> str:
        return f"{self.cell.sd} · {self.cell.dataset} · {load_text(self.cell)}"


@dataclass(slots=True)
class ReportInput:
    kind: str  # "run" or "sweep"
    root: Path
    config: dict[str, Any]
    cells: list[CellView]
    sweep: Sweep | None = None
    analysis: dict[str, Any] = field(default_factory=dict)

    @property
    def sd_cells(self) -> list[CellView]:
        return [c for c in self.cells if not c.cell.baseline]

    def readable_sweep(self) -> Sweep | None:
        """The sweep restricted to the cells whose summary could be read, for
        loadgen.analysis.sweeps (which reads every complete cell's summary and would stop at a
        broken one)."""
        if self.sweep is None:
            return None
        return Sweep(root=self.sweep.root, config=self.sweep.config,
                     cells=[v.cell for v in self.cells if v.summary is not None],
                     analysis=self.sweep.analysis)

    def datasets(self) -> list[str]:
        return _unique(c.cell.dataset for c in self.cells)

    def sd_labels(self) -> list[str]:
        """SD configurations, the baseline first."""
        base = _unique(c.cell.sd for c in self.cells if c.cell.baseline)
        return base + [s for s in _unique(c.cell.sd for c in self.cells) if s not in base]


def _unique(items: Any) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def load_text(cell: Cell) -> str:
    lv = cell.load_level
    return f"c={lv:g}" if cell.load_kind == "concurrency" else f"{lv:g} req/s"


def load_unit(kind: str) -> str:
    return "concurrency (requests in flight)" if kind == "concurrency" else "request rate (req/s)"


def is_random(dataset: str) -> bool:
    return "random" in dataset.lower()


def _read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.exists():
        return None, f"{path.name} missing"
    try:
        return json.loads(path.read_text()), None
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable: {exc}"


# ------------------------------------------------------------------ loading

def load(path: str | Path) -> ReportInput:
    """Read a sweep directory (sweep.json + cells/) or a run directory (summary.json)."""
    root = Path(path)
    if is_sweep_dir(root):
        return _load_sweep(root)
    if is_run_dir(root) or (root / "manifest.json").exists():
        return _load_run(root)
    raise ValueError(f"{root}: neither a sweep directory (sweep.json) nor a run directory "
                     f"(summary.json)")


def _load_sweep(root: Path) -> ReportInput:
    sweep = load_sweep(root)
    views = []
    for cell in sweep.cells:
        d = sweep.cell_dir(cell)
        manifest, _ = _read_json(d / "manifest.json")
        if cell.status != "complete":
            why = f"cell {cell.status}" + (f": {cell.error}" if cell.error else "")
            views.append(CellView(cell, None, manifest, why))
            continue
        summary, why = _read_json(d / "summary.json")
        views.append(CellView(cell, summary, manifest, why))
    return ReportInput("sweep", root, sweep.config, views, sweep, sweep.analysis)


def _load_run(root: Path) -> ReportInput:
    summary, why = _read_json(root / "summary.json")
    manifest, _ = _read_json(root / "manifest.json")
    m = manifest or {}
    cfg = m.get("config") or {}
    engine = m.get("engine") or {}
    sd_info = engine.get("sd") or {}
    acc = (summary or {}).get("acceptance") or {}
    sd_on = acc.get("source") is not None or bool(sd_info)
    sd = str(sd_info.get("spec") or sd_info.get("method") or ("SD" if sd_on else "off"))
    ds = m.get("dataset") or {}
    header = ds.get("header") or {}
    dataset = str(header.get("dataset") or (Path(ds["path"]).stem if ds.get("path") else "run"))
    if cfg.get("request_rate") is not None:
        load_ = {"request_rate": float(cfg["request_rate"])}
    else:
        load_ = {"concurrency": float(cfg.get("concurrency") or 1)}
    status = {"running": "interrupted"}.get(m.get("status", "complete"),
                                            m.get("status", "complete"))
    cell = Cell(id=root.name, sd=sd, dataset=dataset, load=load_, dir=".", sd_config=sd_info,
                baseline=not sd_on, status=status if summary else "failed", error=why)
    return ReportInput("run", root, m, [CellView(cell, summary, manifest, why)])


# ------------------------------------------------------------------ per-cell numbers

def get(view: CellView, *keys: str) -> Num:
    """A number from the summary by key path, or NA with the reason."""
    if view.summary is None:
        return NA(view.missing or "no summary")
    cur: Any = view.summary
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return NA(f"{'.'.join(keys)} not in summary")
        cur = cur[k]
    if cur is None:
        return NA("no value")
    return float(cur)


def no_sd_reason(view: CellView) -> str | None:
    """Why a cell has no SD numbers at all, or None when it has some."""
    if view.summary is None:
        return view.missing or "no summary"
    if view.cell.baseline:
        return "SD off"
    return None


def acceptance_length(view: CellView) -> Num:
    """Overall AL: the per-request token-weighted AL (the categories' measure), else the
    server counters' window AL."""
    if (why := no_sd_reason(view)) is not None:
        return NA(why)
    acc = view.summary["acceptance"]  # type: ignore[index]
    per_req = (acc.get("per_request") or {}).get("token_weighted")
    if per_req is not None:
        return float(per_req)
    if acc.get("acceptance_length") is not None:
        return float(acc["acceptance_length"])
    return NA("engine reported no AL" if acc.get("source") else "no SD counters")


def counter_al(view: CellView) -> Num:
    if (why := no_sd_reason(view)) is not None:
        return NA(why)
    acc = view.summary["acceptance"]  # type: ignore[index]
    if acc.get("acceptance_length") is None:
        return NA("no SD counters" if not acc.get("source") else "counters give no AL")
    return float(acc["acceptance_length"])


def acceptance_rate(view: CellView) -> Num:
    if (why := no_sd_reason(view)) is not None:
        return NA(why)
    acc = view.summary["acceptance"]  # type: ignore[index]
    if acc.get("acceptance_rate") is None:
        return NA("no SD counters" if not acc.get("source") else "not from this engine")
    return float(acc["acceptance_rate"])


def output_tps(view: CellView, gpus: int = 1) -> Num:
    v = get(view, "throughput", "output_tokens_per_s")
    return v if isinstance(v, NA) else v / gpus


def per_user_tps(view: CellView) -> Num:
    return get(view, "per_user_tokens_per_s", "mean")


def latency(view: CellView, metric: str, stat: str) -> Num:
    v = get(view, "latency_ms", metric, stat)
    if isinstance(v, NA) and view.summary is not None:
        return NA("no requests with a value")
    return v


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
    datasets = _unique(v.cell.dataset for v in cells)
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
                row[cat] = NA("; ".join(_unique(v.missing or "no summary" for v in views)))
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
    datasets = _unique(v.cell.dataset for v in cells)
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
            srcs = _unique(((v.summary or {}).get("acceptance") or {}).get("source")
                           for v in views if v.summary)
            if not any(v.summary for v in views):
                why = "; ".join(_unique(v.missing or "no summary" for v in views))
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


ALL_USER = "all requests (per-user tok/s)"
ALL_TPUT = "output tokens/s (whole run)"


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
    by_key = {(r["dataset"], r["sd"], r["load_level"], r["category"]): r for r in rows}
    base_ok = {(v.cell.dataset, v.cell.load_level): v for v in inp.cells
               if v.cell.baseline and v.summary}
    base_any = {(v.cell.dataset, v.cell.load_level): v for v in inp.cells if v.cell.baseline}
    grids = []
    for (ds, sd), views in group(inp.sd_cells, by=("dataset", "sd")).items():
        loads = sorted({v.cell.load_level for v in views})
        cats = sorted({c for v in views if v.summary for c in v.summary.get("categories", {})})
        rlabels = [*cats, ALL_USER, ALL_TPUT]
        values: dict[tuple[str, float], Num] = {}
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
                values[(rl, lv)] = (float(val) if val is not None else
                                    NA("category absent from the baseline" if r is None
                                       else "baseline value is zero or missing"))
        grids.append(SpeedupGrid(ds, sd, views[0].cell.load_kind, loads, rlabels, values))
    return grids


@dataclass(slots=True)
class RandomPair:
    sd: str
    load: float
    load_kind: str
    random: CellView
    real: CellView


def random_pairs(inp: ReportInput) -> list[RandomPair]:
    """Each cell on a dataset whose name contains "random", with each cell of another dataset at
    the same SD configuration and load level."""
    pairs = []
    for r in inp.cells:
        if not is_random(r.cell.dataset):
            continue
        for o in inp.cells:
            if (not is_random(o.cell.dataset) and o.cell.sd == r.cell.sd
                    and o.cell.load_level == r.cell.load_level
                    and o.cell.load_kind == r.cell.load_kind):
                pairs.append(RandomPair(r.cell.sd, r.cell.load_level, r.cell.load_kind, r, o))
    return pairs


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
    from loadgen.results.records import read_records
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
        good: Num = analysis.goodput(read_records(inp.root / "requests.jsonl"), summary, slos)
    except (OSError, ValueError, KeyError) as exc:
        good = NA(f"requests.jsonl unreadable: {exc}")
    return {"slos": slos, "source": "--slo", "run": {"meets_slos": ok, "violations": why,
                                                      "goodput_requests_per_s": good}}
