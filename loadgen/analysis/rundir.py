"""A run's summary as a pure function of its run directory.

``summarize_run(run_dir)`` reads manifest.json (the configuration: engine, load, sampling),
facts.json (windows, counter scrapes, clock offsets, client and host statistics, the run's own
warnings) and the records (requests.jsonl, or every requests.<k>.jsonl), and computes every
number of summary.json (docs/METRICS.md). The run itself writes summary.json with it, a second
interrupt writes its partial summary with it, and ``loadgen summarize`` reproduces the file
with it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from loadgen.analysis.accumulate import SummaryAccumulator
from loadgen.analysis.publish import publish, window_edges
from loadgen.analysis.streaming import EXACT_LIMIT
from loadgen.analysis.telemetry import attach_telemetry
from loadgen.config import RunConfig
from loadgen.engines import adapter_for
from loadgen.engines.base import EngineAdapter
from loadgen.results.facts import RunFacts, read_facts
from loadgen.results.files import ResultFileError, read_json
from loadgen.results.records import iter_records
from loadgen.results.summary import (
    AcceptanceSummary,
    PrefixCacheStats,
    RequestCounts,
    Summary,
)
from loadgen.scrape.log import CounterLog, consistent

# above this hit rate an unprotected run says its TTFT may measure someone else's cache
UNPROTECTED_HIT_RATE_WARN = 0.05
NO_CATEGORY_AL = ("no per-category acceptance: the engine sent no per-request SD numbers; "
                  "rerun with --category-windows (or --warmup-requests >= 1, so a first "
                  "request tells)")


def summarize_run(run_dir: Path, exact_limit: int | None = None) -> Summary:
    """Every number of the run in ``run_dir``. ``exact_limit``: latency values kept exactly per
    distribution before a histogram takes over (default as the run: EXACT_LIMIT)."""
    try:
        manifest = read_json(run_dir / "manifest.json")
        facts = read_facts(run_dir)
    except FileNotFoundError as exc:
        raise ResultFileError(f"{run_dir}: no {Path(exc.filename).name}: not a run directory "
                              f"this version of loadgen wrote") from None
    cfg = RunConfig.from_manifest(manifest.get("config") or {})
    adapter = adapter_for(cfg)
    return summarize_facts(run_dir, facts, adapter, cfg.load.request_rate is not None,
                           asdict(cfg.sampling), exact_limit, cfg.measurement.telemetry_interval_s)


def summarize_facts(run_dir: Path, facts: RunFacts, adapter: EngineAdapter, rate_mode: bool,
                    sampling: dict[str, object], exact_limit: int | None = None,
                    telemetry_interval_s: float | None = None) -> Summary:
    notes: list[str] = []
    wins = facts.windows or []
    log = CounterLog.from_dict(None if facts.partial else facts.counters)
    cat_acc: dict[str, AcceptanceSummary] = {}
    cat_delta: dict[str, dict[str, float]] = {}
    window_delta: dict[str, float] | None = None
    if facts.category_windows:
        # each category's delta covers exactly its requests; the run's is their sum
        for w in wins:
            d = consistent(log.delta(w.start_scrape or "", w.end_scrape or ""),
                           f"{w.category} window", notes)
            if d is None or w.category is None:
                continue
            cat_delta[w.category] = d
            if (acc := adapter.acceptance(d)) is not None:
                cat_acc[w.category] = acc
            window_delta = d if window_delta is None else {
                k: window_delta.get(k, 0.0) + d.get(k, 0.0) for k in {*window_delta, *d}}
        window = merged_window(wins)
    else:
        window = wins[0].edges() if wins else {"start_ns": 0, "end_ns": 0,
                                               "includes_drain": False}
        window_delta = consistent(log.delta(
            "window_start", "run_end" if window["includes_drain"] else "window_end"),
            "window", notes)
    run_delta = consistent(log.delta("run_start", "run_end"), "run", notes)
    acceptance = adapter.acceptance(window_delta) if window_delta else None
    end_name = "run_end" if window["includes_drain"] else "window_end"
    end = log.snapshots.get(end_name)
    acc = SummaryAccumulator(window, rate_mode, exact_limit=exact_limit or EXACT_LIMIT,
                             windows=[w.edges() for w in wins] if facts.category_windows
                             else None)
    for rf in facts.records:
        acc.edges(window["start_ns"] + rf.clock_offset_ns, window["end_ns"] + rf.clock_offset_ns)
        path = run_dir / rf.file
        if path.exists():
            for r in iter_records(path):
                acc.add(r)
    summary = acc.finish(acceptance=acceptance, counter_delta=window_delta,
                         run_counter_delta=run_delta, client=facts.client,
                         category_acceptance=cat_acc, window_counters=cat_delta,
                         sampling=sampling, host=facts.host)
    pc_warnings: list[str] = []
    if not facts.partial:
        summary.prefix_cache = prefix_cache_stats(adapter, facts.prefix_cache_policy,
                                                  window_delta, end, acc.window_prompt_tokens,
                                                  pc_warnings)
    if facts.telemetry and not facts.partial:  # exporters over the same windows
        attach_telemetry(summary, facts.telemetry, telemetry_interval_s,
                         [{"start_scrape": w.start_scrape, "end_scrape": w.end_scrape}
                          for w in wins] if facts.category_windows else [])
    warnings = [*facts.warnings, *notes, *summary.warnings]
    if (failed := failed_requests(summary.requests)) is not None:
        warnings.insert(0, failed)
    if (acceptance is not None and len(summary.categories) > 1
            and all(c.acceptance_length is None for c in summary.categories.values())):
        warnings.append(NO_CATEGORY_AL)
    warnings.extend(pc_warnings)
    if facts.client is not None and len(facts.client.workers or []) > 1:
        warnings.extend(f"worker {w.index} is overloaded (event-loop lag p99 "
                        f"{w.loop_lag_ms.p99:.2f} ms)"
                        for w in facts.client.workers or [] if w.overloaded)
    summary.warnings = warnings
    summary.interrupted = facts.interrupted
    summary.token_count_source = facts.token_count_source
    # each replica's figures, then the acceptance gate, the cross-check and the headline
    cat_edges = [w.edges() | {"start_scrape": w.start_scrape, "end_scrape": w.end_scrape}
                 for w in wins] if facts.category_windows else None
    publish(summary, log, adapter, window_edges(window, cat_edges))
    if adapter.neutral_tokenizer:
        summary.throughput.neutral_tokenizer = adapter.neutral_tokenizer
    return summary


def failed_requests(requests: RequestCounts) -> str | None:
    """The warning of a run some of whose measured requests failed: its latencies and AL are
    those of the requests that succeeded, its throughput what they delivered."""
    if not requests.error:
        return None
    return (f"{requests.error} of {requests.total} measured requests failed "
            f"({requests.error / requests.total:.1%}): latency and acceptance describe the "
            f"{requests.ok} that succeeded, throughput what they delivered")


def merged_window(windows: list) -> dict[str, object]:
    """The run's window when it has several (category windows): from the first start to the
    last end; its duration for throughput is the sum of the windows' (docs/METRICS.md)."""
    return {"start_ns": windows[0].start_ns, "end_ns": windows[-1].end_ns,
            "includes_drain": any(w.includes_drain for w in windows)}


def prefix_cache_stats(adapter: EngineAdapter, policy: str | None,
                       window_delta: dict[str, float] | None, end: dict[str, float] | None,
                       sent: float, warnings: list[str]) -> PrefixCacheStats:
    """The engine's prefix-cache reuse over the window and how the run protected itself from a
    cache warmed by earlier runs (docs/METRICS.md, "Prefix cache"): from the window's counter
    delta, the window-end snapshot and the prompt tokens whose first token came inside the
    window (``sent``, counted by the summary's own pass over the records); a warning when an
    unprotected run saw a warm cache."""
    pc = adapter.prefix_cache(window_delta, end, sent) or PrefixCacheStats(
        note="the engine reports no prefix-cache counters")
    pc.policy = policy
    if pc.policy == "unprotected" and (pc.hit_rate or 0.0) > UNPROTECTED_HIT_RATE_WARN:
        warnings.append(
            f"prefix-cache hit rate {pc.hit_rate:.0%} and the engine offers neither a cache "
            f"salt nor a flush: TTFT measures prefill partly served from cache (warmed by "
            f"earlier runs or shared prefixes)")
    return pc
