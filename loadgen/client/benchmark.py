"""Run a benchmark end to end: manifest, requests, summary, in one output directory."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from loadgen.results.manifest import build_manifest
from loadgen.analysis.metrics import summarize
from loadgen.data.prompts import PromptFile
from loadgen.client.runner import Run, RunConfig


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)  # a reader never sees half a file


def run_benchmark(cfg: RunConfig, prompts: PromptFile, dataset_path: Path | None = None,
                  argv: list[str] | None = None, use_uvloop: bool = True,
                  progress: bool = False,
                  engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute one run and write manifest.json, requests.jsonl and summary.json to cfg.out.
    ``progress`` shows a live line on a terminal (never when stderr is not a TTY); ``engine`` is
    what a launched engine says about itself (EngineProcess.describe()), kept in the manifest."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    req_file = cfg.out / "requests.jsonl"
    if req_file.exists():
        req_file.unlink()  # a run directory holds one run
    manifest = build_manifest(cfg, dataset_path, prompts.header, argv or sys.argv)
    manifest["status"] = "running"
    if engine is not None:
        manifest["engine"] = engine
    _write_json(cfg.out / "manifest.json", manifest)
    run = Run(cfg, prompts)

    async def main() -> dict[str, Any]:
        return await run.execute()

    live = None
    if progress and sys.stderr.isatty():
        from loadgen.cli.progress import LiveProgress

        live = LiveProgress(run, label=cfg.out.name)
        run.progress_cb = live.on_record
        live.__enter__()
    try:
        if use_uvloop:
            import uvloop

            client = uvloop.run(main())
        else:
            client = asyncio.run(main())
    finally:
        if live is not None:
            live.__exit__(None, None, None)
    window = run.window_bounds()
    window_delta = run._delta("window_start", "window_end")
    if window["includes_drain"]:
        window_delta = run._delta("window_start", "run_end")
    acceptance = None
    if window_delta:
        acc = run.adapter.acceptance(window_delta)
        if acc is not None:
            acceptance = {k: getattr(acc, k) for k in acc.__slots__}
    summary = summarize(run.records, window, acceptance=acceptance,
                        counter_delta=window_delta,
                        run_counter_delta=run._delta("run_start", "run_end"),
                        rate_mode=cfg.request_rate is not None, client=client)
    summary["warnings"] = run.warnings + summary["warnings"]
    summary["error_reasons"] = dict(Counter(
        (r["error"] or "")[:120] for r in run.records if r["status"] != "ok"))
    summary["interrupted"] = run.interrupted
    token_source = getattr(run.adapter, "token_count_source", None)
    if token_source:
        summary["token_count_source"] = token_source
    neutral = getattr(run.adapter, "neutral_tokenizer", None)
    if neutral:
        summary["throughput"]["neutral_tokenizer"] = neutral
    _write_json(cfg.out / "summary.json", summary)
    manifest["status"] = "interrupted" if run.interrupted else "complete"
    manifest["server"] = run.probe
    _write_json(cfg.out / "manifest.json", manifest)
    return summary
