"""What a report is made of: a run or a sweep directory read into cells, and the numbers each
plot and table shows, computed from the summaries (docs/METRICS.md defines every one).

A missing number is never invented: it is an :class:`NA` carrying the reason (SD off, a failed
cell, an engine that exposes no per-position counters, ...), which the HTML and Markdown print.
"""

from __future__ import annotations

import json
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
    kind: str  # "run", "sweep" or "capacity"
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
        return unique(c.cell.dataset for c in self.cells)

    def sd_labels(self) -> list[str]:
        """SD configurations, the baseline first."""
        base = unique(c.cell.sd for c in self.cells if c.cell.baseline)
        return base + [s for s in unique(c.cell.sd for c in self.cells) if s not in base]


def unique(items: Any) -> list[Any]:
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
    if (root / "capacity.json").exists():  # a `loadgen capacity` directory
        doc, why = _read_json(root / "capacity.json")
        if doc is None:
            raise ValueError(f"{root}/capacity.json: {why}")
        return ReportInput("capacity", root, doc, [])
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
