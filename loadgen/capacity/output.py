"""What a capacity search writes: ``capacity.json``, ``capacity.png`` and the console lines
(docs/FORMATS.md, "capacity.json"; docs/METRICS.md, "Capacity")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.capacity.search import UNITS, SearchResult
from loadgen.capacity.slo import SloSet

DEFAULT_HEADROOM = 0.2  # --headroom: spare capacity kept on every replica


@dataclass(slots=True)
class TraceInfo:
    """The trace slice a time-scale search replays (loadgen/capacity/trace.py)."""

    rows: int
    span_s: float  # its first to last arrival_s, at time scale 1
    mean_rate: float  # its native mean rate: (rows - 1) / span_s, requests/s

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "span_s": self.span_s, "mean_rate": self.mean_rate}


@dataclass(slots=True)
class ConfigCapacity:
    label: str
    baseline: bool
    result: SearchResult
    trace: TraceInfo | None = None  # a time-scale search's slice

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        d = {"label": self.label, "baseline": self.baseline, "value": r.value,
             "unit": r.unit, "interval": [r.lo, r.hi], "binding_slo": r.binding,
             "converged": r.converged, "stopped_by": r.stopped_by}
        if self.trace is not None:
            d["trace"] = self.trace.to_dict()
            d["rate_equivalent"] = rate_equivalent(r, self.trace.mean_rate)
        d["probes"] = [{"level": p.level, "meets_slos": p.ok, "margin":
                        p.margin if math.isfinite(p.margin) else None,
                        "binding_slo": p.binding, "cut": p.cut, **p.info}
                       for p in r.probes]
        return d


def rate_equivalent(r: SearchResult, mean_rate: float) -> dict[str, Any]:
    """A time-scale capacity as a mean request rate: S x the slice's native mean rate, for the
    value and both ends of the interval."""

    def x(s: float | None) -> float | None:
        return None if s is None else s * mean_rate

    return {"value": x(r.value), "interval": [x(r.lo), x(r.hi)], "unit": UNITS["rate"]}


def replicas(target: float, value: float | None, lo: float | None, hi: float | None,
             headroom: float) -> dict[str, Any]:
    """Replicas needed for ``target`` (in the search's unit) with ``headroom`` spare on each:
    ceil(target x (1 + headroom) / capacity), at the value and at both ends of its interval."""
    need = target * (1.0 + headroom)

    def n(cap: float | None) -> int | None:
        return math.ceil(need / cap) if cap else None

    return {"target": target, "headroom": headroom, "replicas": n(value),
            "interval": [n(hi), n(lo)]}


def gain(sd: SearchResult, base: SearchResult) -> dict[str, Any] | None:
    """SD's capacity over the baseline's: the ratio of the values, with the interval from the
    two brackets (lo_sd / hi_base, hi_sd / lo_base); None when either has no value."""
    if not sd.value or not base.value:
        return None
    low = sd.lo / base.hi if sd.lo and base.hi else None
    high = sd.hi / base.lo if sd.hi and base.lo else None
    return {"value": sd.value / base.value, "interval": [low, high]}


def document(configs: list[ConfigCapacity], slos: SloSet, target: float | None,
             headroom: float) -> dict[str, Any]:
    """capacity.json. With one configuration its fields are at the top level too."""
    doc: dict[str, Any] = {"slos": {**slos.latency, **({"good_pct": slos.good_pct}
                                                      if slos.good_pct is not None else {})},
                           "configs": [c.to_dict() for c in configs]}
    base = next((c for c in configs if c.baseline), None)
    for c, d in zip(configs, doc["configs"], strict=True):
        if target is not None:  # a trace's: R in requests/s against the rate equivalent
            eq = d.get("rate_equivalent") or {"value": c.result.value,
                                              "interval": [c.result.lo, c.result.hi]}
            d["replicas"] = replicas(target, eq["value"], *eq["interval"], headroom)
        if base is not None and c is not base:
            d["gain_over_baseline"] = gain(c.result, base.result)
    if len(configs) == 1:
        doc.update({k: v for k, v in doc["configs"][0].items() if k != "probes"})
        doc["probes"] = doc["configs"][0]["probes"]
    return doc


def lines(doc: dict[str, Any]) -> list[str]:
    """The console's answer, one line per configuration."""
    out = []
    for c in doc["configs"]:
        lo, hi = c["interval"]
        if c["value"] is None:
            out.append(f"{c['label']}: no load tested meets the SLOs (lowest tried fails: "
                       f"{c['binding_slo'] or '-'})")
            continue
        head = (f"{c['label']}: capacity {c['value']:.4g} {c['unit']} "
                f"[{lo:.4g}, {'>' if hi is None else ''}{hi if hi is None else f'{hi:.4g}'}]"
                f", binding SLO {c['binding_slo'] or '-'}")
        if not c["converged"]:
            head += f" (search stopped: {c['stopped_by']})"
        out.append(head)
        eq = c.get("rate_equivalent")
        if eq:
            a, b = eq["interval"]
            out.append(f"  = {eq['value']:.4g} requests/s mean [{a:.4g}, "
                       f"{'-' if b is None else f'{b:.4g}'}] "
                       f"(trace slice of {c['trace']['rows']} requests, "
                       f"{c['trace']['mean_rate']:.4g} requests/s at time scale 1)")
        g = c.get("gain_over_baseline")
        if g:
            a, b = g["interval"]
            out.append(f"  capacity gain over the baseline {g['value']:.2f}x "
                       f"[{'-' if a is None else f'{a:.2f}'}, {'-' if b is None else f'{b:.2f}'}]")
        rp = c.get("replicas")
        if rp and rp["replicas"]:
            a, b = rp["interval"]
            unit = "requests/s" if eq else c["unit"]
            out.append(f"  replicas for {rp['target']:g} {unit} with "
                       f"{rp['headroom']:.0%} headroom: {rp['replicas']} "
                       f"(interval {a if a is not None else '-'}-{b if b is not None else '-'})")
    return out


def plot(doc: dict[str, Any], path: Path) -> bool:
    """Every SLO figure against load, one panel per objective, its limit and each
    configuration's boundary; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    except ImportError:
        return False
    keys = list(doc["slos"])
    fig, axes = plt.subplots(1, len(keys), figsize=(max(6.5, 5 * len(keys)), 4.2),
                             squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        limit = doc["slos"][key]
        measured = False
        for i, c in enumerate(doc["configs"]):
            color = f"C{i}"
            pts = sorted((p["level"], p["values"].get(key)) for p in c["probes"]
                         if p["values"].get(key) is not None)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=color,
                    label=c["label"])
            measured = measured or bool(pts)
            cut = [p["level"] for p in c["probes"] if p["cut"]]
            for lv in cut:
                ax.axvline(lv, color=color, ls=":", lw=0.8)
            if c["value"] is not None:
                ax.axvline(c["value"], color=color, ls="--", lw=1)
        ax.axhline(limit, color="k", lw=1, label=f"limit {limit:g}")
        ax.set_xlabel(doc["configs"][0]["unit"] + (" (x the trace's speed)"
                                                   if doc["configs"][0].get("trace") else ""))
        ax.set_ylabel(key)
        if measured:  # levels are > 0; no point at all (every probe failed) stays linear
            ax.set_xscale("log", base=2)
        trace = doc["configs"][0].get("trace")
        if trace:  # a time-scale search: the same axis as a mean request rate, on top
            r = trace["mean_rate"]
            top = ax.secondary_xaxis("top", functions=(lambda s, r=r: s * r,
                                                       lambda q, r=r: q / r))
            top.set_xlabel("requests/s (mean)")
            if measured:
                top.xaxis.set_major_locator(LogLocator(base=2))
            top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
            top.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    fig.suptitle("SLO figures against load\ndashed: capacity; dotted: step cut (over-saturated)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=96, metadata={"Software": None})
    plt.close(fig)
    return True
