"""Run a benchmark end to end: manifest, requests, summary, in one output directory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from loadgen.analysis.metrics import summarize
from loadgen.client.runner import Run, RunOutcome
from loadgen.data.prompts import PromptFile
from loadgen.results.config import RunConfig
from loadgen.results.files import write_json
from loadgen.results.manifest import build_manifest
from loadgen.results.records import iter_records
from loadgen.results.summary import Summary


def run_benchmark(cfg: RunConfig, prompts: PromptFile, dataset_path: Path | None = None,
                  argv: list[str] | None = None, use_uvloop: bool = True,
                  progress: bool = False,
                  engine: dict[str, Any] | None = None) -> Summary:
    """Execute one run and write manifest.json, requests.jsonl and summary.json to cfg.out.
    ``progress`` shows a live line on a terminal (never when stderr is not a TTY); ``engine`` is
    what a launched engine says about itself (EngineProcess.describe()), kept in the manifest."""
    if cfg.workers is not None or cfg.ray:
        from loadgen.scale.coordinator import run_scaled

        return run_scaled(cfg, prompts, dataset_path, argv or sys.argv, use_uvloop, engine)
    cfg.out.mkdir(parents=True, exist_ok=True)
    req_file = cfg.out / "requests.jsonl"
    if req_file.exists():
        req_file.unlink()  # a run directory holds one run
    manifest = build_manifest(cfg, dataset_path, prompts.header, argv or sys.argv)
    manifest["status"] = "running"
    manifest["config"]["warmup_requests_effective"] = cfg.effective_warmup()
    if engine is not None:
        manifest["engine"] = engine
    write_json(cfg.out / "manifest.json", manifest)
    run = Run(cfg, prompts)
    for notice in run.wire.notices:
        print(f"loadgen: WARNING: {notice}", file=sys.stderr)
    run.notify = lambda text: print(f"loadgen: warning: {text}", file=sys.stderr)

    live = None
    if progress and sys.stderr.isatty():
        from loadgen.cli.progress import LiveProgress

        live = LiveProgress(run, label=cfg.out.name)
        run.progress_cb = live.on_record
        live.__enter__()
    try:
        if use_uvloop:
            import uvloop

            outcome = uvloop.run(run.execute())
        else:
            outcome = asyncio.run(run.execute())
    finally:
        if live is not None:
            live.__exit__(None, None, None)
    summary = summarize_outcome(outcome, run, rate_mode=cfg.request_rate is not None)
    write_json(cfg.out / "summary.json", summary.to_dict())
    manifest["status"] = "interrupted" if outcome.interrupted else "complete"
    manifest["server"] = outcome.probe
    manifest["config"]["category_windows_effective"] = run.category_windows
    write_json(cfg.out / "manifest.json", manifest)
    return summary


def summarize_outcome(outcome: RunOutcome, run: Run, rate_mode: bool) -> Summary:
    """The summary of an executed run: counter deltas over the window, then every number,
    streamed from the records file (no record is held in memory)."""
    counters = outcome.counters
    window = outcome.window
    cat_acc = {}
    cat_delta = {}
    if outcome.windows:
        # each category's delta covers exactly its requests; the run's is their sum
        window_delta = None
        for w in outcome.windows:
            d = counters.delta(w["start_scrape"], w["end_scrape"])
            if d is None:
                continue
            cat_delta[w["category"]] = d
            if (a := run.adapter.acceptance(d)) is not None:
                cat_acc[w["category"]] = a
            window_delta = d if window_delta is None else {
                k: window_delta.get(k, 0.0) + d.get(k, 0.0) for k in {*window_delta, *d}}
    else:
        window_delta = counters.delta("window_start",
                                      "run_end" if window["includes_drain"] else "window_end")
    acceptance = run.adapter.acceptance(window_delta) if window_delta else None
    summary = summarize(iter_records(outcome.records_path), window, acceptance=acceptance,
                        counter_delta=window_delta,
                        run_counter_delta=counters.delta("run_start", "run_end"),
                        rate_mode=rate_mode, client=outcome.client,
                        windows=outcome.windows or None, category_acceptance=cat_acc,
                        window_counters=cat_delta,
                        sampling=run.cfg.sampling())
    summary.warnings = outcome.warnings + summary.warnings
    if (acceptance is not None and len(summary.categories) > 1
            and all(c.acceptance_length is None for c in summary.categories.values())):
        summary.warnings.append(
            "no per-category acceptance: the engine sent no per-request SD numbers; rerun "
            "with --category-windows (or --warmup-requests >= 1, so a first request tells)")
    summary.interrupted = outcome.interrupted
    summary.token_count_source = run.adapter.token_count_source
    if run.adapter.neutral_tokenizer:
        summary.throughput.neutral_tokenizer = run.adapter.neutral_tokenizer
    return summary
