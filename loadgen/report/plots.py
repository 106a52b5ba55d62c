"""The report's plots: matplotlib (the ``report`` extra) on the Agg backend, each returned as a
base64 PNG to embed in the HTML. docs/REPORT.md says what each shows and from which numbers."""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import TwoSlopeNorm

from loadgen.report import across as X
from loadgen.report import data as D
from loadgen.results.catalogue import LATENCY_METRICS

NO_SD = "SD off in every run here: no SD counters, no per-request AL"
PERCENTILES = (("p50", "-"), ("p90", "--"), ("p99", ":"))


@dataclass(slots=True)
class Plot:
    key: str
    title: str
    caption: str
    png_b64: str | None = None
    na: str | None = None  # why there is no plot


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colors(labels: list[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {lab: cycle[i % len(cycle)] for i, lab in enumerate(labels)}


def _grid(n: int, ncols: int = 2) -> tuple[int, int]:
    ncols = min(n, ncols)
    return math.ceil(n / ncols), ncols


def _subplots(n: int, w: float, h: float, ncols: int = 2):
    rows, cols = _grid(n, ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False,
                             layout="constrained")
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _nums(pairs: list[tuple[float, D.Num]]) -> tuple[list[float], list[float]]:
    pts = [(x, y) for x, y in pairs if not isinstance(y, D.NA)]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


# ------------------------------------------------------------------ sweep plots

def pareto(inp: D.ReportInput, gpus: int) -> Plot:
    title = "Pareto: output tokens/s per GPU against per-user tokens/s"
    caption = (f"One curve per SD configuration, points in order of load (labelled); y is the "
               f"window's output tokens/s divided by --gpus {gpus}; x is the mean per-user "
               f"decode speed. Failed cells are left out.")
    datasets = inp.datasets()
    ok = [v for v in inp.cells if v.summary]
    if not ok:
        return Plot("pareto", title, caption, na="no completed cell")
    colors = _colors(inp.sd_labels())
    fig, axes = _subplots(len(datasets), 5.6, 4.2)
    for ax, ds in zip(axes, datasets, strict=True):
        for sd in inp.sd_labels():
            pts = []
            for v in sorted((v for v in ok if v.cell.dataset == ds and v.cell.sd == sd),
                            key=lambda v: v.cell.load_level):
                x, y = D.per_user_tps(v), D.output_tps(v, gpus)
                if not isinstance(x, D.NA) and not isinstance(y, D.NA):
                    pts.append((x, y, D.load_text(v.cell)))
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colors[sd],
                    label=sd + (" (baseline)" if sd in _baselines(inp) else ""))
            for x, y, t in pts:
                ax.annotate(t, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(f"dataset {ds}", fontsize=10)
        ax.set_xlabel("per-user tokens/s (mean over requests)")
        ax.set_ylabel(f"output tokens/s per GPU (total ÷ {gpus} GPU{'s' if gpus != 1 else ''})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return Plot("pareto", title, caption, _png(fig))


def _baselines(inp: D.ReportInput) -> set[str]:
    return {v.cell.sd for v in inp.cells if v.cell.baseline}


def al_per_category(inp: D.ReportInput) -> Plot:
    title = "Acceptance length (AL) per category"
    caption = ("Per-request AL, token-weighted (Σ tokens / Σ tokens/AL) over the category's "
               "requests in every load level of the configuration. SD-off cells have no AL.")
    cats, cols = X.al_per_category(inp.cells)
    if not cols or not cats:
        return Plot("al_per_category", title, caption,
                    na=NO_SD if not cols else "no categories")
    if all(isinstance(v, D.NA) for col in cols.values() for v in col.values()):
        reasons = {v.reason for col in cols.values() for v in col.values()
                   if isinstance(v, D.NA)}
        return Plot("al_per_category", title, caption, na="; ".join(sorted(reasons)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cats) * max(1, len(cols)) + 2), 4.2),
                           layout="constrained")
    width = 0.8 / len(cols)
    for j, (col, vals) in enumerate(cols.items()):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(cats))]
        ys = [0.0 if isinstance(vals[c], D.NA) else float(vals[c]) for c in cats]
        bars = ax.bar(xs, ys, width, label=col)
        for b, c in zip(bars, cats, strict=True):
            v = vals[c]
            ax.annotate("n/a" if isinstance(v, D.NA) else f"{float(v):.2f}",
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_xticks(range(len(cats)), cats, rotation=30 if len(cats) > 5 else 0, ha="right"
                  if len(cats) > 5 else "center")
    ax.set_ylabel("acceptance length (tokens per target step)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return Plot("al_per_category", title, caption, _png(fig))


def acceptance_by_position(inp: D.ReportInput) -> Plot:
    title = "Acceptance by draft position"
    caption = ("Solid: share of verify steps whose draft was accepted up to position i "
               "(per_position_rate); dashed: the chance position i is accepted given i-1 was "
               "(conditional_rate). From server counters, weighted by each window's drafts.")
    curves, missing = X.acceptance_by_position(inp.cells)
    if not curves:
        return Plot("acceptance_by_position", title, caption,
                    na="; ".join(missing) or NO_SD)
    colors = _colors([c.label for c in curves])
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    for c in curves:
        xs = list(range(1, len(c.per_position) + 1))
        ax.plot(xs, c.per_position, "o-", color=colors[c.label], label=f"{c.label}")
        ax.plot(xs, c.conditional, "s--", color=colors[c.label], alpha=0.6,
                label=f"{c.label} (conditional)")
        kmax = len(c.per_position)
    ax.set_xticks(range(1, kmax + 1))
    ax.set_xlabel("draft position (1 = first drafted token)")
    ax.set_ylabel("acceptance rate")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if missing:
        caption += " No curve for " + "; ".join(missing) + "."
    return Plot("acceptance_by_position", title, caption, _png(fig))


def latency_vs_load(inp: D.ReportInput) -> Plot:
    title = "TTFT and TPOT percentiles against load"
    caption = ("p50 solid, p90 dashed, p99 dotted; one colour per SD configuration; one row "
               "per dataset. Milliseconds, over the ok measured requests of each cell.")
    datasets = inp.datasets()
    ok = [v for v in inp.cells if v.summary]
    if not ok:
        return Plot("latency_vs_load", title, caption, na="no completed cell")
    colors = _colors(inp.sd_labels())
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.8 * len(datasets)),
                             squeeze=False, layout="constrained")
    for row, ds in zip(axes, datasets, strict=True):
        for ax, metric in zip(row, ("ttft", "tpot"), strict=True):
            for sd in inp.sd_labels():
                views = sorted((v for v in ok if v.cell.dataset == ds and v.cell.sd == sd),
                               key=lambda v: v.cell.load_level)
                for stat, ls in PERCENTILES:
                    xs, ys = _nums([(v.cell.load_level, D.latency(v, metric, stat))
                                    for v in views])
                    if xs:
                        ax.plot(xs, ys, ls, marker="o", ms=3, color=colors[sd],
                                label=f"{sd} {stat}")
            kind = next((v.cell.load_kind for v in ok if v.cell.dataset == ds), "concurrency")
            ax.set_xlabel(D.load_unit(kind))
            ax.set_ylabel(f"{metric.upper()} (ms)")
            ax.set_title(f"{metric.upper()} · dataset {ds}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    return Plot("latency_vs_load", title, caption, _png(fig))


def speedup_heatmap(inp: D.ReportInput) -> Plot:
    title = "SD speedup over the baseline (category × load)"
    caption = ("Speedup = SD configuration ÷ SD off at the same dataset and load: per-user "
               "tokens/s per category and over all requests, and the whole run's output "
               "tokens/s (last row). Red below 1 (SD costs, marked ▼), green above; grey: n/a.")
    grids = X.speedup_grids(inp)
    if not grids:
        why = "no SD configuration" if not inp.sd_cells else "no baseline (SD off) cell"
        return Plot("speedup_heatmap", title, caption, na=why)
    vals = [float(v) for g in grids for v in g.values.values() if not isinstance(v, D.NA)]
    if not vals:
        reasons = sorted({v.reason for g in grids for v in g.values.values()
                          if isinstance(v, D.NA)})
        return Plot("speedup_heatmap", title, caption, na="; ".join(reasons))
    lo, hi = min([*vals, 0.99]), max([*vals, 1.01])
    norm = TwoSlopeNorm(vcenter=1.0, vmin=min(lo, 0.99), vmax=max(hi, 1.01))
    fig, axes = _subplots(len(grids), max(4.0, 1.1 * max(len(g.loads) for g in grids) + 2.5),
                          0.45 * max(len(g.rows) for g in grids) + 1.6)
    cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
    im = None
    for ax, g in zip(axes, grids, strict=True):
        arr = np.full((len(g.rows), len(g.loads)), np.nan)
        for i, r in enumerate(g.rows):
            for j, lv in enumerate(g.loads):
                v = g.values[(r, lv)]
                if not isinstance(v, D.NA):
                    arr[i, j] = float(v)
        im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, norm=norm, aspect="auto")
        for i, r in enumerate(g.rows):
            for j, lv in enumerate(g.loads):
                v = g.values[(r, lv)]
                txt = "n/a" if isinstance(v, D.NA) else (
                    f"{float(v):.2f}" + (" ▼" if float(v) < 1 else ""))
                dark = not isinstance(v, D.NA) and not 0.2 < norm(float(v)) < 0.8
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if dark else "black")
        ax.axhline(len(g.rows) - 2.5, color="black", lw=1)
        ax.set_xticks(range(len(g.loads)), [f"{lv:g}" for lv in g.loads])
        ax.set_yticks(range(len(g.rows)), g.rows, fontsize=8)
        ax.set_xlabel(D.load_unit(g.load_kind))
        ax.set_title(f"{g.sd} vs SD off · dataset {g.dataset}", fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label="speedup (×)")
    fig.suptitle(title, fontsize=11)
    return Plot("speedup_heatmap", title, caption, _png(fig))


def random_vs_real(inp: D.ReportInput, gpus: int) -> Plot:
    title = "Random vs real prompts: output tokens/s and AL"
    caption = ("Cells of a dataset whose name contains 'random' against the other datasets at "
               "the same SD configuration and load (SPEED-Bench: random inputs overstate SD "
               "throughput). Solid: real prompts; dashed: random.")
    pairs = X.random_pairs(inp)
    if not pairs:
        has_random = any(D.is_random(d) for d in inp.datasets())
        return Plot("random_vs_real", title, caption,
                    na="no dataset name contains 'random'" if not has_random
                    else "no other dataset at the random cells' SD configuration and load")
    colors = _colors(inp.sd_labels())
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    series: dict[tuple[str, str, str], list[tuple[float, D.Num, D.Num]]] = {}
    seen: set[tuple[str, str]] = set()
    for p in pairs:
        for which, v in (("random", p.random), ("real", p.real)):
            if (v.cell.id, which) in seen:
                continue
            seen.add((v.cell.id, which))
            series.setdefault((p.sd, v.cell.dataset, which), []).append(
                (p.load, D.output_tps(v, gpus), D.acceptance_length(v)))
    for (sd, ds, which), pts in series.items():
        pts.sort(key=lambda t: t[0])
        ls = "--" if which == "random" else "-"
        xs, ys = _nums([(x, y) for x, y, _ in pts])
        if xs:
            ax1.plot(xs, ys, ls, marker="o", color=colors[sd], label=f"{sd} · {ds}")
        xs, ys = _nums([(x, a) for x, _, a in pts])
        if xs:
            ax2.plot(xs, ys, ls, marker="o", color=colors[sd], label=f"{sd} · {ds}")
    kind = pairs[0].load_kind
    ax1.set_ylabel(f"output tokens/s per GPU (total ÷ {gpus})")
    ax2.set_ylabel("acceptance length")
    for ax, t in ((ax1, "output tokens/s"), (ax2, "AL (SD configurations only)")):
        ax.set_xlabel(D.load_unit(kind))
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    return Plot("random_vs_real", title, caption, _png(fig))


# ------------------------------------------------------------------ single-run plots

def latency_percentiles(inp: D.ReportInput) -> Plot:
    title = "Latency percentiles"
    caption = ("TTFT, TPOT, per-token ITL and E2E of the run's ok measured requests, in "
               "milliseconds (p50, p90, p99, max).")
    v = inp.cells[0]
    if v.summary is None:
        return Plot("latency_percentiles", title, caption, na=v.missing or "no summary")
    metrics = tuple(LATENCY_METRICS)  # the catalogue's (loadgen/results/catalogue.py)
    stats = ("p50", "p90", "p99", "max")
    fig, axes = plt.subplots(1, len(metrics), figsize=(13, 3.6), layout="constrained")
    for ax, m in zip(axes, metrics, strict=True):
        ys = [D.latency(v, m, s) for s in stats]
        ax.bar(stats, [0.0 if isinstance(y, D.NA) else float(y) for y in ys],
               color="#4c72b0")
        for i, y in enumerate(ys):
            ax.annotate("n/a" if isinstance(y, D.NA) else f"{float(y):.1f}", (i, 0 if
                        isinstance(y, D.NA) else float(y)), ha="center", va="bottom", fontsize=7)
        ax.set_title(m.upper(), fontsize=10)
        ax.set_ylabel("ms")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{title} · {v.label}", fontsize=11)
    return Plot("latency_percentiles", title, caption, _png(fig))


def _safe(key: str, title: str, make, *args) -> Plot:
    """A plot, or n/a with the error: a summary of an unexpected shape never stops the report."""
    try:
        return make(*args)
    except Exception as exc:  # a summary of an unexpected shape never stops the report
        plt.close("all")
        return Plot(key, title, "", na=f"plot failed: {type(exc).__name__}: {exc}")


def all_plots(inp: D.ReportInput, gpus: int) -> list[Plot]:
    if inp.kind == "run":
        todo = [("al_per_category", "Acceptance length (AL) per category", al_per_category,
                 inp),
                ("acceptance_by_position", "Acceptance by draft position",
                 acceptance_by_position, inp),
                ("latency_percentiles", "Latency percentiles", latency_percentiles, inp)]
    else:
        todo = [("pareto", "Pareto plot", pareto, inp, gpus),
                ("al_per_category", "Acceptance length (AL) per category", al_per_category,
                 inp),
                ("acceptance_by_position", "Acceptance by draft position",
                 acceptance_by_position, inp),
                ("latency_vs_load", "TTFT and TPOT percentiles against load", latency_vs_load,
                 inp),
                ("speedup_heatmap", "SD speedup heatmap", speedup_heatmap, inp),
                ("random_vs_real", "Random vs real prompts", random_vs_real, inp, gpus)]
    return [_safe(*t) for t in todo]
