"""Report sections on whether a comparison holds: the speedup across repetitions (interval,
verdict, suspect reasons) and each run's conditions (host contention, prefix cache next to
TTFT). docs/METRICS.md ("Host", "Prefix cache", "Repetitions", "Sanity") defines each number."""

from __future__ import annotations

from typing import Any

from loadgen.report import data as D
from loadgen.report.sections import Section, Table, V, num, text


def _ci(r: dict[str, Any]) -> V:
    if r.get("speedup") is None:
        return V("n/a", "num na")
    s = f"{r['speedup']:.2f}×"
    if r.get("speedup_low") is not None:
        s += f" [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"
    return V(s, "num slower" if r["verdict"] == "loss" else "num")


def repeats_section(inp: D.ReportInput) -> Section:
    rows = inp.analysis.get("speedup_intervals")
    if rows is None and (sweep := inp.readable_sweep()) is not None:
        from loadgen.analysis.repeats import speedup_intervals
        from loadgen.analysis.sweeps import speedup_rows

        rows = speedup_intervals(sweep, speedup_rows(sweep))
    sec = Section("repeats", "Speedup across repetitions, and whether to believe it")
    if not rows:
        sec.text.append("n/a (no SD configuration with a baseline at the same load)")
        return sec
    n = max(r["repeats"] for r in rows)
    conf = rows[0].get("confidence", 0.95)
    sec.text.append(
        f"Each row pairs every repetition of the SD configuration with the baseline run of the "
        f"same repetition ({n} repetition(s), run in alternation). Overall rows: output "
        f"tokens/s; category rows: mean per-user tokens/s. Speedup = geometric mean of the "
        f"repetitions' ratios [{conf:.0%} Student-t interval on their logarithms]; 'no clear "
        f"gain' when the interval contains "
        f"1. A suspect row says why it should not be believed.")
    if n < 2:
        sec.text.append("One repetition: no interval. Run with --repeats 3 or more.")
    t = Table("Speedup across repetitions", ["dataset", "SD", "load", "category", "n", "AL",
                                              "speedup", "verdict", "suspect because"], [])
    for r in rows:
        t.rows.append([text(r["dataset"]), text(r["sd"]), text(f"{r['load_level']:g}"),
                       text(r["category"]), text(r["repeats"]), num(r["acceptance_length"]),
                       _ci(r), text(r["verdict"]),
                       text("; ".join(r["suspect"]) if r["suspect"] else "-")])
    sec.tables.append(t)
    return sec


def _cores(v: float | None) -> V:
    return num(v, 2)


def conditions_section(inp: D.ReportInput) -> Section:
    sec = Section("conditions", "Conditions of each run: host CPU and prefix cache")
    sec.text.append(
        "Cores = CPU-seconds per second of the window (1.00 = one core busy throughout). "
        "Proxy = a local reverse proxy in front of the engine (n/a: none). Others = host busy "
        "− client − engine − proxy: every other process. A prefix-cache hit rate "
        "above 0 means part of the prefill came from cache, which lowers TTFT; policy says "
        "how the run kept earlier runs' cache out (salted, flushed, disabled, kept on "
        "purpose, or unprotected).")
    t = Table("Host and prefix cache per run", [
        "run", "TTFT p50 (ms)", "TTFT p99 (ms)", "prefix-cache hit rate", "cache policy",
        "client cores", "engine cores", "proxy cores", "others cores", "steal cores",
        "disturbed by"], [])
    for v in inp.cells:
        label = v.label + (f" · r{v.cell.repeat}" if v.cell.repeat or "__r" in v.cell.id
                           else "")
        s = v.summary
        if s is None:
            t.rows.append([text(label), *[V("n/a", "num na")] * 10])
            continue
        ttft = (s.get("latency_ms") or {}).get("ttft") or {}
        pc = s.get("prefix_cache") or {}
        host = s.get("host") or {}
        rate = pc.get("hit_rate")
        t.rows.append([
            text(label), num(ttft.get("p50"), 1), num(ttft.get("p99"), 1),
            V(f"{rate:.1%}", "num") if rate is not None else V("n/a", "num na"),
            text(pc.get("policy") or "n/a"), _cores(host.get("client_cores")),
            _cores(host.get("engine_cores")), _cores(host.get("proxy_cores")),
            _cores(host.get("others_cores")),
            _cores(host.get("steal_cores")),
            text(", ".join(host.get("causes") or []) or ("-" if host else "n/a"))])
    sec.tables.append(t)
    return sec
