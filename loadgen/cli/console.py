"""The console table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadgen.engines.sampling import sampling_label
from loadgen.results.summary import Summary
from loadgen.results.telemetry import TelemetryStats


def fmt(v: Any, digits: int = 2) -> str:
    """A number for a table: ``-`` for missing, floats with ``digits`` decimals."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def print_summary(summary: Summary, console: Console | None = None) -> None:
    console = console or Console(stderr=False)
    req = summary.requests
    thr = summary.throughput
    acc = summary.acceptance
    head = Table(title="loadgen run", show_header=False, box=None)
    smp = sampling_label(summary.sampling)
    head.add_row("requests", f"{req.ok} ok / {req.error} error / {req.cancelled} "
                             f"cancelled (of {req.total}; {req.warmup} warm-up)")
    if req.retries or req.rate_limited:
        head.add_row("429", f"{req.retries} retries over {req.retried} requests; "
                            f"{req.rate_limited} ended 429")
    if req.reasoning_tokens is not None:
        head.add_row("reasoning tokens", f"{req.reasoning_tokens} "
                                         f"({fmt(req.reasoning_share, 3)} of output)")
    nwin = summary.window.category_windows
    head.add_row("window", f"{summary.window.duration_s:.2f} s"
                 + (f" (sum of {nwin} category windows)" if nwin else "")
                 + (" (includes drain)" if summary.window.includes_drain else ""))
    head.add_row("output tokens/s", fmt(thr.output_tokens_per_s, 1))
    head.add_row("requests/s", fmt(thr.requests_per_s, 3))
    head.add_row("acceptance length", f"{fmt(headline_al(acc), 3)} ({smp}) "
                                      + escape(f"[{headline_source(acc)}]"))
    if acc.headline_source == "per_request" and acc.acceptance_length is not None:
        head.add_row("AL (server counters)", fmt(acc.acceptance_length, 3))
    if acc.acceptance_rate is not None:
        head.add_row("acceptance rate", fmt(acc.acceptance_rate, 3))
    pr = acc.per_request
    if pr.token_weighted is not None:
        head.add_row("per-request AL", f"{pr.token_weighted:.3f} token-weighted, "
                                       f"{pr.request_weighted:.3f} request-weighted ({smp})")
    h = summary.host
    if h is not None:
        head.add_row("host CPU (cores)", f"client {fmt(h.client_cores)}, engine "
                                         f"{fmt(h.engine_cores)}, others {fmt(h.others_cores)}, "
                                         f"steal {fmt(h.steal_cores)} of {h.cpus}")
    pc = summary.prefix_cache
    if pc is not None:
        rate = "-" if pc.hit_rate is None else f"{pc.hit_rate:.1%}"
        head.add_row("prefix-cache hits", f"{rate} (policy {pc.policy or '-'}; TTFT p50 "
                                          f"{fmt(summary.latency_ms.ttft.p50, 1)} ms)")
    console.print(head)
    lat = Table(title="latency (ms)")
    cols = ("mean", "p50", "p90", "p99", "max")
    for col in ("metric", *cols):
        lat.add_column(col, justify="right")
    for name, st in summary.latency_ms.items():
        lat.add_row(name, *(fmt(st.get(k)) for k in cols))
    pu = summary.per_user_tokens_per_s
    lat.add_row("per-user tok/s", *(fmt(pu.get(k), 1) for k in cols))
    console.print(lat)
    if summary.categories:
        cat = Table(title=f"per category (AL at {smp})")
        for col in ("category", "requests", "AL", "AL from", "output tokens", "TTFT p50",
                    "TPOT p50"):
            cat.add_column(col, justify="right")
        for name, c in summary.categories.items():
            src = c.acceptance_source or "-"
            cat.add_row(name, str(c.requests), fmt(c.acceptance_length, 3),
                        "window counters" if "category window" in src else src,
                        str(c.output_tokens), fmt(c.ttft_ms_p50), fmt(c.tpot_ms_p50))
        console.print(cat)
    if summary.telemetry is not None:
        print_telemetry(summary.telemetry, console)
    if summary.fleet is not None:
        print_fleet(summary, console)
    if summary.client.workers:
        print_workers(summary, console)
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for reason, n in summary.error_reasons.items():
        console.print(f"[red]{n} x[/red] {reason}")


def headline_al(acc: Any) -> float | None:
    """The AL to quote: the gate's headline (analysis/gate.py), else the counters' AL."""
    return acc.headline if acc.headline is not None else acc.acceptance_length


def headline_source(acc: Any) -> str:
    if acc.headline is not None:
        return acc.headline_source or "-"
    if acc.withheld and "acceptance_length" in acc.withheld:
        return "withheld: see warnings"
    return acc.source or "no server counters"


def print_fleet(summary: Summary, console: Console) -> None:
    """Counters from several replicas: each one's figures (docs/METRICS.md, "Fleets")."""
    fl = summary.fleet
    assert fl is not None
    t = Table(title=f"per replica (server counters, {fl.source})")
    t.add_column("replica", overflow="fold")
    for col in ("status", "AL", "acceptance rate", "drafted share", "resets", "identity"):
        t.add_column(col, justify="right")
    for r in fl.replicas or []:
        t.add_row(escape(r.name), r.status, fmt(r.acceptance_length, 3),
                  fmt(r.acceptance_rate, 3),
                  "-" if r.drafted_share is None else f"{r.drafted_share:.1%}", str(r.resets),
                  escape(r.identity or "-"))
    console.print(t)


def print_workers(summary: Summary, console: Console) -> None:
    """A scaled-out run: each worker's own load, cost and lag (docs/METRICS.md, Client cost)."""
    t = Table(title="client workers")
    for col in ("worker", "node", "requests", "events", "CPU µs/event", "lag p99 ms",
                "peak RSS MB", "status"):
        t.add_column(col, justify="right")
    for w in summary.client.workers or []:
        status = "died" if w.status == "died" else ("overloaded" if w.overloaded else "ok")
        t.add_row(str(w.index), w.node or "-", str(w.requests), str(w.events),
                  fmt(w.cpu_us_per_event, 1), fmt(w.loop_lag_ms.p99), fmt(w.max_rss_mb, 0),
                  status)
    console.print(t)


def print_telemetry(tel: TelemetryStats, console: Console) -> None:
    """Server telemetry over the window (docs/METRICS.md, "Server telemetry")."""
    head = Table(title="server telemetry", show_header=False, box=None)
    if tel.power_w is not None:
        head.add_row("GPU power", f"{tel.power_w:.1f} W mean, {fmt(tel.peak_power_w, 1)} W peak "
                                  f"({len(tel.gpus)} GPU(s); {tel.energy_source})")
        head.add_row("energy per output token", f"{fmt(tel.energy_per_token_j, 4)} J "
                                                f"({fmt(tel.energy_j, 1)} J over the window)")
    if tel.gpu_utilization_pct is not None:
        head.add_row("GPU utilization", f"{tel.gpu_utilization_pct:.1f}% mean")
    for n in tel.nodes:
        head.add_row(f"CPU {n.node}", f"{fmt(n.busy_cores)} of {n.cpus} cores busy")
    for url, why in tel.unanswered.items():
        head.add_row("[red]no answer[/red]", escape(f"{url}: {why}"))
    for note in tel.notes:
        head.add_row("note", escape(note))
    console.print(head)
    if len(tel.gpus) > 1:
        t = Table(title="GPUs over the window")
        for col in ("GPU", "mean W", "peak W", "util % mean", "util % peak", "samples"):
            t.add_column(col, justify="right", overflow="fold")
        for g in tel.gpus:
            t.add_row(escape(g.device), fmt(g.mean_power_w, 1), fmt(g.peak_power_w, 1),
                      fmt(g.utilization_mean_pct, 1), fmt(g.utilization_peak_pct, 1),
                      str(g.samples))
        console.print(t)
