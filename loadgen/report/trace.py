"""The report's trace-replay section (a run made with ``--arrival trace``): offered vs achieved
rate and the SLO figures over time, latency by input-length band, prefix-cache reuse measured vs
the trace's theoretical reuse, AL per category (loadgen/analysis/trace.py computes them)."""

from __future__ import annotations

from loadgen.analysis.trace import TraceAnalysis, analyse
from loadgen.report import data as D
from loadgen.report.blocks import Section, Table, num, text
from loadgen.report.plots import Plot


def rate_plot(a: TraceAnalysis) -> Plot:
    """Offered and achieved rate (left axis) and TTFT p99 (right axis) over the schedule."""
    import matplotlib.pyplot as plt

    from loadgen.report.plots import _png

    title = "Offered vs achieved rate over time"
    caption = (f"Requests scheduled (offered) and ended OK (achieved) per second in buckets of "
               f"{a.bucket_s:g} s of the schedule; TTFT p99 of the requests scheduled in each "
               f"bucket on the right axis.")
    xs = [b.start_s for b in a.buckets]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.step(xs, [b.offered_rate for b in a.buckets], where="post", label="offered req/s")
    ax.step(xs, [b.achieved_rate for b in a.buckets], where="post", label="achieved req/s")
    ax.set_xlabel("seconds from the first scheduled send")
    ax.set_ylabel("requests/s")
    right = ax.twinx()
    right.plot(xs, [b.ttft_p99_ms for b in a.buckets], color="tab:red", marker=".",
               linewidth=1, label="TTFT p99 (ms)")
    right.set_ylabel("TTFT p99 (ms)")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right", fontsize=8)
    fig.tight_layout()
    return Plot("trace_rate", title, caption, png_b64=_png(fig))


def is_trace_run(inp: D.ReportInput) -> bool:
    return (inp.kind == "run" and bool(inp.cells) and inp.cells[0].manifest is not None
            and (inp.cells[0].manifest.get("config") or {}).get("arrival") == "trace")


def trace_section(inp: D.ReportInput, slos: dict[str, float] | None) -> Section:
    v = inp.cells[0]
    a = analyse(inp.root, v.summary or {}, v.manifest or {}, slos)
    sec = Section("trace", "Trace replay", plot=rate_plot(a))
    sec.text.append(
        f"{a.requests} measured requests on the trace's schedule (time scale "
        f"{a.time_scale:g}); buckets of {a.bucket_s:g} s of the schedule. Offered: requests "
        f"scheduled in the bucket per second; achieved: requests that ended OK in it per "
        f"second; latency of the requests scheduled in it (from their scheduled time).")
    slo_col = ["met every SLO"] if slos else []
    rows = [[num(b.start_s, 1), num(b.offered_rate), num(b.achieved_rate), num(b.errors, 0),
             num(b.ttft_p50_ms), num(b.ttft_p99_ms), num(b.tpot_p99_ms), num(b.e2e_p99_ms),
             *([num(None if b.slo_ok is None else 100 * b.slo_ok, 1)] if slos else [])]
            for b in a.buckets]
    sec.tables.append(Table("Offered vs achieved rate and SLO figures over time",
                            ["start (s)", "offered req/s", "achieved req/s", "errors",
                             "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p99 (ms)",
                             "E2E p99 (ms)", *[c + " (%)" for c in slo_col]], rows))
    sec.tables.append(Table("Latency by input length", [
        "input tokens", "requests", "TTFT p50 (ms)", "TTFT p99 (ms)", "TPOT p50 (ms)",
        "TPOT p99 (ms)", "E2E p50 (ms)"], [
        [text(f"{b.lo}-{b.hi - 1}" if b.hi else f">= {b.lo}"), num(b.requests, 0),
         num(b.ttft_p50_ms), num(b.ttft_p99_ms), num(b.tpot_p50_ms), num(b.tpot_p99_ms),
         num(b.e2e_p50_ms)] for b in a.bands]))
    theo = (D.NA("the trace has no prefix hash ids") if a.theoretical_reuse is None
            else 100 * a.theoretical_reuse)
    meas = (D.NA("the engine reports no prefix-cache counters in tokens")
            if a.measured_hit_rate is None else 100 * a.measured_hit_rate)
    sec.tables.append(Table("Prefix cache: measured vs the trace's theoretical reuse",
                            ["theoretical reuse (% of input tokens)",
                             "measured hit rate (% of prompt tokens)"],
                            [[num(theo, 1), num(meas, 1)]]))
    sec.tables.append(Table("Acceptance length per category under trace load",
                            ["category", "AL"],
                            [[text(c), num(D.NA("no per-request AL") if al is None else al, 3)]
                             for c, al in a.al_per_category.items()]))
    return sec



