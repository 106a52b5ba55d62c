"""The console table printed at the end of a run."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from loadgen.engines.sampling import sampling_label
from loadgen.results.summary import Summary


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
    head.add_row("acceptance length", f"{fmt(acc.acceptance_length, 3)} ({smp}) "
                                      + escape(f"[{acc.source or 'no server counters'}]"))
    if acc.acceptance_rate is not None:
        head.add_row("acceptance rate", fmt(acc.acceptance_rate, 3))
    pr = acc.per_request
    if pr.token_weighted is not None:
        head.add_row("per-request AL", f"{pr.token_weighted:.3f} token-weighted, "
                                       f"{pr.request_weighted:.3f} request-weighted ({smp})")
    h = summary.host
    if h is not None:
        proxy = "" if h.proxy_cores is None else f"proxy {fmt(h.proxy_cores)}, "
        head.add_row("host CPU (cores)", f"client {fmt(h.client_cores)}, engine "
                                         f"{fmt(h.engine_cores)}, {proxy}others "
                                         f"{fmt(h.others_cores)}, steal {fmt(h.steal_cores)} "
                                         f"of {h.cpus}")
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
    if summary.client.workers:
        print_workers(summary, console)
    for w in summary.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for reason, n in summary.error_reasons.items():
        console.print(f"[red]{n} x[/red] {reason}")


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
