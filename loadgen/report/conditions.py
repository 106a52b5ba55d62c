"""Report sections on whether a comparison holds: the speedup across repetitions (interval,
verdict, suspect reasons) and each run's conditions (host contention, prefix cache next to
TTFT, server counters per replica). docs/METRICS.md ("Host", "Prefix cache", "Repetitions",
"Sanity", "Fleets") defines each number."""

from __future__ import annotations

from typing import Any

from loadgen.report import data as D
from loadgen.report.blocks import Section, Table, V, num, text


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
    energy = [r for r in rows if r.get("energy_ratio") is not None]
    if energy:  # --telemetry on both sides (docs/METRICS.md, "Server telemetry")
        from loadgen.analysis.repeats import fmt_energy

        sec.tables.append(Table(
            "Energy per output token, SD against the baseline (GPU telemetry)",
            ["dataset", "SD", "load", "n", "energy per token", "verdict"],
            [[text(r["dataset"]), text(r["sd"]), text(f"{r['load_level']:g}"),
              text(r["repeats"]), text(fmt_energy(r)), text(r["energy_verdict"])]
             for r in energy]))
    return sec


def _cores(v: float | None) -> V:
    return num(v, 2)


def _gpu_cells(tel: dict[str, Any] | None) -> list[V]:
    """GPU utilization, power and energy per token of a run with --telemetry (else n/a)."""
    tel = tel or {}
    power = tel.get("power_w")
    return [num(tel.get("gpu_utilization_pct"), 1),
            V(f"{power:,.1f} / {tel.get('peak_power_w') or 0:,.1f}", "num") if power is not None
            else V("n/a", "num na"), num(tel.get("energy_per_token_j"), 4)]


def conditions_section(inp: D.ReportInput) -> Section:
    sec = Section("conditions", "Conditions of each run: host CPU, prefix cache and GPUs")
    sec.text.append(
        "Cores = CPU-seconds per second of the window (1.00 = one core busy throughout). "
        "Others = host busy − client − engine: every other process. A prefix-cache hit rate "
        "above 0 means part of the prefill came from cache, which lowers TTFT; policy says "
        "how the run kept earlier runs' cache out (salted, flushed, disabled, kept on "
        "purpose, or unprotected). GPU columns (runs with --telemetry): the GPUs' mean "
        "utilization, their summed mean power / highest summed power sample, and energy per "
        "output token (summed mean power / output tokens per second).")
    t = Table("Host and prefix cache per run", [
        "run", "TTFT p50 (ms)", "TTFT p99 (ms)", "prefix-cache hit rate", "cache policy",
        "client cores", "engine cores", "others cores", "steal cores", "disturbed by",
        "GPU util %", "GPU power W (mean / peak)", "J per token"], [])
    for v in inp.cells:
        label = v.label + (f" · r{v.cell.repeat}" if v.cell.repeat or "__r" in v.cell.id
                           else "")
        s = v.summary
        if s is None:
            t.rows.append([text(label), *[V("n/a", "num na")] * 12])
            continue
        ttft = (s.get("latency_ms") or {}).get("ttft") or {}
        pc = s.get("prefix_cache") or {}
        host = s.get("host") or {}
        rate = pc.get("hit_rate")
        t.rows.append([
            text(label), num(ttft.get("p50"), 1), num(ttft.get("p99"), 1),
            V(f"{rate:.1%}", "num") if rate is not None else V("n/a", "num na"),
            text(pc.get("policy") or "n/a"), _cores(host.get("client_cores")),
            _cores(host.get("engine_cores")), _cores(host.get("others_cores")),
            _cores(host.get("steal_cores")),
            text(", ".join(host.get("causes") or []) or ("-" if host else "n/a")),
            *_gpu_cells(s.get("telemetry"))])
    sec.tables.append(t)
    gpus = Table("GPUs of each run (--telemetry)", [
        "run", "GPU", "mean power W", "peak power W", "power from", "util % mean",
        "util % peak", "samples"], [], collapsed=True)
    for v in inp.cells:
        for g in ((v.summary or {}).get("telemetry") or {}).get("gpus") or []:
            gpus.rows.append([
                text(v.label + (f" · r{v.cell.repeat}" if v.cell.repeat else "")),
                text(g.get("device")), num(g.get("mean_power_w"), 1),
                num(g.get("peak_power_w"), 1), text(g.get("power_source") or "n/a"),
                num(g.get("utilization_mean_pct"), 1), num(g.get("utilization_peak_pct"), 1),
                text(g.get("samples"))])
    if gpus.rows:
        sec.tables.append(gpus)
    fleet = fleet_table(inp)
    if fleet.rows:
        sec.tables.append(fleet)
    return sec


def fleet_table(inp: D.ReportInput) -> Table:
    """Runs whose counters came from several replicas (summary.json ``fleet``): each replica's
    counter figures (docs/METRICS.md, "Fleets")."""
    t = Table("Server counters per replica", [
        "run", "replica", "status", "AL", "acceptance rate", "share of drafted tokens",
        "resets"], [])
    for v in inp.cells:
        fleet = (v.summary or {}).get("fleet") or {}
        for r in fleet.get("replicas") or []:
            share = r.get("drafted_share")
            t.rows.append([text(v.label), text(r.get("name") or "?"),
                           text(r.get("status") or "?"), num(r.get("acceptance_length"), 3),
                           num(r.get("acceptance_rate"), 3),
                           V(f"{share:.1%}", "num") if share is not None
                           else V("n/a", "num na"), num(r.get("resets"), 0)])
    return t
