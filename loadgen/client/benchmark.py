"""Run a benchmark end to end: manifest, requests, summary, in one output directory."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from loadgen.analysis.metrics import summarize
from loadgen.client.host import pid_listening_on
from loadgen.client.runner import Run, RunOutcome
from loadgen.client.scrape import Scrapes, consistent
from loadgen.client.stop import StopSignals
from loadgen.data.prompts import PromptFile
from loadgen.engines.base import EngineAdapter
from loadgen.results.config import RunConfig
from loadgen.results.files import write_json
from loadgen.results.manifest import build_manifest
from loadgen.results.records import iter_records
from loadgen.results.summary import PrefixCacheStats, Summary


class RunDirError(ValueError):
    """``--out`` cannot take this run (it holds one already, or cannot be written)."""


class RunFailed(Exception):
    """The run started but stopped on its own (a record or the summary could not be written);
    what could be saved was saved."""


RUN_FILES = ("manifest.json", "requests.jsonl", "summary.json")


def check_run_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that is a file, or that holds a run unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory")
    held = [n for n in RUN_FILES if (out / n).exists()]
    if held and not overwrite:
        raise RunDirError(f"--out {out} already holds a run ({', '.join(held)}); give "
                          f"--overwrite to replace it, or another --out")


def _write(path: Path, obj: Any) -> None:
    try:
        write_json(path, obj)
    except OSError as exc:
        raise RunFailed(f"cannot write {path} ({exc.strerror or exc})") from None


def run_benchmark(cfg: RunConfig, prompts: PromptFile, dataset_path: Path | None = None,
                  argv: list[str] | None = None, use_uvloop: bool = True,
                  progress: bool = False,
                  engine: dict[str, Any] | None = None, overwrite: bool = False,
                  signals: StopSignals | None = None) -> Summary:
    """Execute one run and write manifest.json, requests.jsonl and summary.json to cfg.out.
    ``progress`` shows a live line on a terminal (never when stderr is not a TTY); ``engine`` is
    what a launched engine says about itself (EngineProcess.describe()), kept in the manifest.

    An ``--out`` holding a run is refused unless ``overwrite``; even then nothing of it is
    removed before the new run has passed every check. ``signals`` (one for the command's
    whole life; else one is installed for this call) stops the run on a first SIGINT/SIGTERM
    and, on a second, writes the partial summary and exits at once. Raises ``RunDirError`` /
    ``ValueError`` before anything is written, ``RunFailed`` when the run stopped on its own."""
    check_run_dir(cfg.out, overwrite)
    if cfg.workers is not None or cfg.ray:
        from loadgen.scale.coordinator import run_scaled

        return run_scaled(cfg, prompts, dataset_path, argv or sys.argv, use_uvloop, engine,
                          signals)
    run = Run(cfg, prompts)  # every check (config, endpoint, API key, open files) before --out
    asyncio.run(run.check_endpoint())
    for notice in run.wire.notices:
        print(f"loadgen: WARNING: {notice}", file=sys.stderr)
    run.notify = lambda text: print(f"loadgen: warning: {text}", file=sys.stderr)
    if run.host_monitor is not None:
        # the engine's PID: --engine-pid, launched by loadgen, else whoever listens on a
        # loopback endpoint (followed through a local proxy: client/listener.py)
        pid = cfg.engine_pid or (engine or {}).get("pid") or pid_listening_on(cfg.endpoint)
        run.host_monitor.engine_pid = int(pid) if pid else None
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES[1:]:  # an overwritten run's records and summary
            (cfg.out / name).unlink(missing_ok=True)
        manifest = build_manifest(cfg, dataset_path, prompts.header, argv or sys.argv)
        manifest["status"] = "running"
        manifest["config"]["warmup_requests_effective"] = cfg.effective_warmup()
        if engine is not None:
            manifest["engine"] = engine
        write_json(cfg.out / "manifest.json", manifest)
    except OSError as exc:
        raise RunDirError(f"--out {cfg.out}: cannot write there ({exc.strerror or exc})") from None
    rate_mode = cfg.request_rate is not None

    def save_partial() -> str:
        """A second signal: the summary from requests.jsonl as it is, no server counters."""
        outcome = RunOutcome(records_path=cfg.out / "requests.jsonl", window=run.bounds(),
                             counters=Scrapes(run.adapter, []), probe={}, client=None,
                             interrupted=True,
                             warnings=[*run.warnings, "partial summary written on a second "
                                       "interrupt: requests still in flight have no record; "
                                       "no server counters"])
        write_json(cfg.out / "summary.json", summarize_outcome(outcome, run, rate_mode).to_dict())
        manifest["status"] = "interrupted"
        write_json(cfg.out / "manifest.json", manifest)
        return str(cfg.out)

    own_signals = signals is None
    stop = StopSignals().install() if signals is None else signals
    stop.attach(run.interrupt, save_partial)
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
        summary = summarize_outcome(outcome, run, rate_mode=rate_mode)
        _write(cfg.out / "summary.json", summary.to_dict())
        manifest["status"] = ("failed" if outcome.failure else
                              "interrupted" if outcome.interrupted else "complete")
        if outcome.failure:
            manifest["error"] = outcome.failure
        manifest["server"] = outcome.probe
        manifest["config"]["category_windows_effective"] = run.category_windows
        _write(cfg.out / "manifest.json", manifest)
    finally:
        stop.detach()
        if own_signals:
            stop.restore()
        if live is not None:
            live.__exit__(None, None, None)
    if outcome.failure:
        raise RunFailed(outcome.failure)
    return summary


def summarize_outcome(outcome: RunOutcome, run: Run, rate_mode: bool) -> Summary:
    """The summary of an executed run: counter deltas over the window, then every number,
    streamed from the records file (no record is held in memory)."""
    counters = outcome.counters
    window = outcome.window
    notes: list[str] = []
    cat_acc = {}
    cat_delta = {}
    if outcome.windows:
        # each category's delta covers exactly its requests; the run's is their sum
        window_delta = None
        for w in outcome.windows:
            d = consistent(counters.delta(w["start_scrape"], w["end_scrape"]),
                            f"{w['category']} window", notes)
            if d is None:
                continue
            cat_delta[w["category"]] = d
            if (acc := run.adapter.acceptance(d)) is not None:
                cat_acc[w["category"]] = acc
            window_delta = d if window_delta is None else {
                k: window_delta.get(k, 0.0) + d.get(k, 0.0) for k in {*window_delta, *d}}
    else:
        window_delta = consistent(counters.delta(
            "window_start", "run_end" if window["includes_drain"] else "window_end"),
            "window", notes)
    run_delta = consistent(counters.delta("run_start", "run_end"), "run", notes)
    acceptance = run.adapter.acceptance(window_delta) if window_delta else None
    pc_warnings: list[str] = []
    end = counters.snapshots.get("run_end" if window["includes_drain"] else "window_end")
    summary = summarize(iter_records(outcome.records_path), window, acceptance=acceptance,
                        counter_delta=window_delta, run_counter_delta=run_delta,
                        rate_mode=rate_mode, client=outcome.client,
                        windows=outcome.windows or None, category_acceptance=cat_acc,
                        window_counters=cat_delta, sampling=run.cfg.sampling(),
                        host=outcome.host,
                        prefix_cache=lambda sent: prefix_cache_stats(
                            run.adapter, outcome.prefix_cache_policy, window_delta, end, sent,
                            pc_warnings))
    summary.warnings = outcome.warnings + notes + summary.warnings
    if (acceptance is not None and len(summary.categories) > 1
            and all(c.acceptance_length is None for c in summary.categories.values())):
        summary.warnings.append(
            "no per-category acceptance: the engine sent no per-request SD numbers; rerun "
            "with --category-windows (or --warmup-requests >= 1, so a first request tells)")
    summary.warnings.extend(pc_warnings)
    summary.interrupted = outcome.interrupted
    summary.token_count_source = run.adapter.token_count_source
    if run.adapter.neutral_tokenizer:
        summary.throughput.neutral_tokenizer = run.adapter.neutral_tokenizer
    return summary



# above this hit rate an unprotected run says its TTFT may measure someone else's cache
UNPROTECTED_HIT_RATE_WARN = 0.05


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
