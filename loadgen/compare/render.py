"""Rendering a comparison: the terminal table (rich), Markdown and JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.3g}" if a < 10 else f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ci(ci: tuple[float, float] | list[float] | None) -> str:
    return "-" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def table_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(rows: statistic, A, B, B−A, CI of B−A, B/A, CI of B/A, verdict; footnotes: why a
    statistic has no CI or was not compared, each reason once, cited as [n])."""
    out, notes = [], []
    for r in result["statistics"]:
        verdict = r["verdict"]
        if r["reason"] and not r["significant"]:
            if r["reason"] not in notes:
                notes.append(r["reason"])
            verdict = f"{verdict} [{notes.index(r['reason']) + 1}]"
        label = r["label"] + (f" ({r['unit']})" if r["unit"] else "")
        out.append([label, fmt(r["a"]), fmt(r["b"]), fmt(r["diff"]), fmt_ci(r["ci_diff"]),
                    fmt(r["ratio"]), fmt_ci(r["ci_ratio"]), verdict])
    return out, [f"[{i}] {n}" for i, n in enumerate(notes, 1)]


HEADERS = ["statistic", "A", "B", "B − A", "CI of B − A", "B / A", "CI of B / A", "verdict"]


def _describe(info: dict[str, Any]) -> str:
    load = ", ".join(f"{k} {v}" for k, v in info["load"].items()) or "?"
    return (f"engine {info['engine']}, {info['ok_requests']} ok requests, {load}, output_len "
            f"{info['output_len']}")


def replicas_line(fleet: dict[str, Any]) -> str:
    """A run's replicas (summary.json ``fleet``) on one line: each one's AL and share of the
    drafted tokens, or why it is out."""
    parts = []
    for r in fleet.get("replicas") or []:
        if r.get("status") != "ok":
            parts.append(f"{r.get('name')} {r.get('status')}")
            continue
        share, al = r.get("drafted_share"), r.get("acceptance_length")
        parts.append(f"{r.get('name')} AL {'-' if al is None else f'{al:.3f}'}"
                     + ("" if share is None else f" ({share:.0%} of drafted)"))
    return f"[{fleet.get('source')}] " + "; ".join(parts)


def print_result(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no need to wrap at 80 columns
            console = Console(width=160)
    a, b = result["a"], result["b"]
    conf = result["settings"]["confidence"]
    for side, info in (("A", a), ("B", b)):
        console.print(f"[bold]{side}[/bold] {info['path']}: {_describe(info)}")
        if info.get("fleet"):
            console.print(f"  {side} per replica: {replicas_line(info['fleet'])}",
                          highlight=False)
    t = Table(title=f"loadgen compare: B − A, {conf:.0%} bootstrap CIs "
                    f"({result['settings']['resamples']} resamples)")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("statistic", "verdict") else "right",
                     overflow="fold")
    group = None
    style = {"B better": "green", "B worse": "red", "B higher": "cyan", "B lower": "cyan"}
    rows, footnotes = table_rows(result)
    for r, cells in zip(result["statistics"], rows, strict=True):
        if r["group"] != group:
            if group is not None:
                t.add_section()
            group = r["group"]
        s = style.get(r["verdict"])
        if s:
            cells[-1] = f"[{s}]{cells[-1]}[/{s}]"
        t.add_row(*cells)
    console.print(t)
    for f in footnotes:
        console.print(f, highlight=False)
    print_across(result, console)
    ea, eb = result["errors"]["a"], result["errors"]["b"]
    console.print(f"requests: A {ea['ok']} ok / {ea['error']} error / {ea['cancelled']} "
                  f"cancelled; B {eb['ok']} ok / {eb['error']} error / {eb['cancelled']} "
                  f"cancelled")
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for w in result.get("suspect", []):
        console.print(f"[red]suspect:[/red] {w}")
    for n in result["notes"]:
        console.print(f"note: {n}")


ACROSS_HEADERS = ["statistic", "A mean", "B mean", "B − A", "CI across runs",
                  "CI within run", "B / A", "verdict"]


def across_rows(result: dict[str, Any]) -> list[list[str]]:
    """The across-run table (compare/across.py): only with two or more runs a side."""
    ac = result.get("across_runs")
    if not ac or len(ac["runs"]["a"]) < 2 or len(ac["runs"]["b"]) < 2:
        return []
    out = []
    for r in ac["rows"]:
        if r["significant"] is None:
            verdict = "no CI"
        elif not r["significant"]:
            verdict = "not significant"
        else:
            up = r["ci_diff_across"][0] > 0
            verdict = ("B higher" if up else "B lower") if r["better"] is None else (
                "B better" if up == (r["better"] == "higher") else "B worse")
        if r["within_too_narrow"]:
            verdict += " (within-run CI too narrow)"
        out.append([r["label"] + (f" ({r['unit']})" if r["unit"] else ""),
                    f"{fmt(r['a_mean'])} (n={len(r['a_values'])})",
                    f"{fmt(r['b_mean'])} (n={len(r['b_values'])})", fmt(r["diff"]),
                    fmt_ci(r["ci_diff_across"]), fmt_ci(r["ci_diff_within"]),
                    fmt(r["ratio"]), verdict])
    return out


def print_across(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    rows = across_rows(result)
    if not rows:
        return
    ac = result["across_runs"]
    t = Table(title=f"across runs: {len(ac['runs']['a'])} A runs, {len(ac['runs']['b'])} B "
                    f"runs; {ac['confidence']:.0%} Welch t-interval of B − A")
    for h in ACROSS_HEADERS:
        t.add_column(h, justify="left" if h in ("statistic", "verdict") else "right",
                     overflow="fold")
    for cells in rows:
        t.add_row(*cells)
    console.print(t)


def to_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = ["# loadgen compare", ""]
    for side in ("a", "b"):
        info = result[side]
        lines.append(f"- **{side.upper()}** `{info['path']}`: {_describe(info)}, dataset "
                     f"`{info['dataset']}`")
    lines += ["", f"B − A with {s['confidence']:.0%} bootstrap confidence intervals "
                  f"({s['resamples']} resamples, seed {s['seed']}); a difference is "
                  f"significant when its CI excludes 0. Methods: docs/COMPARE.md.", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    rows, footnotes = table_rows(result)
    for cells in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if footnotes:
        lines += [""] + [f"{f}  " for f in footnotes]
    across = across_rows(result)
    if across:
        lines += ["", "## Across runs", "",
                  "| " + " | ".join(ACROSS_HEADERS) + " |", "|" + "---|" * len(ACROSS_HEADERS)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
                  for cells in across]
    ea, eb = result["errors"]["a"], result["errors"]["b"]
    lines += ["", "| requests | A | B |", "|---|---|---|"]
    for k in ("total", "ok", "error", "cancelled"):
        lines.append(f"| {k} | {ea[k]} | {eb[k]} |")
    if result["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    if result.get("suspect"):
        lines += ["", "## Suspect (docs/METRICS.md, \"Sanity\")", ""] + [
            f"- {w}" for w in result["suspect"]]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> str:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if isinstance(o, np.floating | np.integer):
            return clean(o.item())
        return o

    return json.dumps(clean(result), indent=2) + "\n"
