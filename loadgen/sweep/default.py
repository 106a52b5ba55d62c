"""``loadgen run`` with no ``--endpoint``: the embedded default.

Builds (once, cached) and starts the local llama.cpp server with SmolLM2-135M, pre-tokenizes the
built-in prompt set with SmolLM2's own tokenizer and chat template (read from the GGUF), runs it
with SD off and with n-gram SD over the same token ids, and prints the comparison: acceptance
length per category and the speedup. Each run is an ordinary run directory under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

CONFIGS = (("sd-off", "none"), ("sd-ngram", "ngram"))


def compare(out: Path, concurrency: int) -> dict[str, Any]:
    """SD against the baseline, overall and per category, with the sweep's own speedup
    definitions (loadgen/analysis/sweeps.py, docs/METRICS.md): the two runs are read as a two-cell
    sweep."""
    from loadgen.analysis.sweeps import speedup_rows
    from loadgen.results.sweepdir import Cell, Sweep

    load = {"concurrency": float(concurrency)}
    cells = [Cell(id=label, sd=label, dataset="builtin", load=load, dir=label,
                  baseline=method == "none", status="complete") for label, method in CONFIGS]
    sweep = Sweep(root=out, config={}, cells=cells)
    rows = speedup_rows(sweep)
    overall = next(r for r in rows if r["category"] == "all")
    sd = sweep.summary(cells[1])
    assert sd is not None
    return {
        "output_tokens_per_s": {"sd": overall["output_tokens_per_s"],
                                "off": overall["baseline_output_tokens_per_s"]},
        "speedup_output_tokens_per_s": overall["speedup_output_tokens_per_s"],
        "speedup_per_user_tokens_per_s": overall["speedup_per_user_tokens_per_s"],
        # tokens per target forward pass, per request, token-weighted: the categories' measure
        "acceptance_length": overall["acceptance_length"],
        # vLLM's formula over the counters: 1 + accepted / verify steps that had drafts
        "acceptance_length_when_drafting": sd.acceptance.acceptance_length,
        "acceptance_source": sd.acceptance.source,
        "categories": {r["category"]: {
            "acceptance_length": r["acceptance_length"],
            "per_user_tokens_per_s_sd": r["per_user_tokens_per_s"],
            "per_user_tokens_per_s_off": r["baseline_per_user_tokens_per_s"],
            "speedup": r["speedup_per_user_tokens_per_s"],
        } for r in rows if r["category"] != "all"},
    }


def print_comparison(cmp: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    t = Table(title="n-gram SD vs SD off (llama.cpp, SmolLM2-135M, built-in prompts)")
    for col in ("category", "AL", "tok/s per user, SD", "tok/s per user, off", "speedup"):
        t.add_column(col, justify="right")
    for name, c in cmp["categories"].items():
        t.add_row(name, f(c["acceptance_length"], 3), f(c["per_user_tokens_per_s_sd"], 1),
                  f(c["per_user_tokens_per_s_off"], 1), f(c["speedup"]) + "x")
    t.add_row("all", f(cmp["acceptance_length"], 3), "", "",
              f(cmp["speedup_per_user_tokens_per_s"]) + "x")
    console = Console()
    console.print(t)
    ot = cmp["output_tokens_per_s"]
    console.print(f"output tokens/s: SD {f(ot['sd'], 1)}, off {f(ot['off'], 1)} "
                  f"(speedup {f(cmp['speedup_output_tokens_per_s'])}x)")
    console.print("AL = tokens per target forward pass (llama.cpp timings, token-weighted); "
                  f"over the verify steps that had drafts it is "
                  f"{f(cmp['acceptance_length_when_drafting'], 3)} ({cmp['acceptance_source']})")


def main(args: argparse.Namespace) -> int:
    from loadgen.client.benchmark import run_benchmark
    from loadgen.data.prompts import read_prompts
    from loadgen.launch.commands import SpecConfig
    from loadgen.launch.launcher import start_engine
    from loadgen.results.config import RunConfig

    if args.dataset:
        prompts = read_prompts(args.dataset)
    else:
        from loadgen.data.builtin import builtin_prompts

        print("loadgen: tokenizing the built-in prompts with SmolLM2's tokenizer", file=sys.stderr)
        prompts = builtin_prompts("smollm2")
    out = args.out or Path("runs") / ("default-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    concurrency = args.concurrency or 4
    output_len = args.output_len or 96
    summaries = {}
    for label, method in CONFIGS:
        print(f"loadgen: starting llama.cpp ({label})", file=sys.stderr)
        with start_engine("llamacpp", spec=SpecConfig(method), port=0,
                          extra_args=["-np", str(concurrency), "-c", str(4096 * concurrency)],
                          log_path=out / f"{label}.engine.log") as eng:
            cfg = RunConfig(endpoint=eng.base_url, engine="llamacpp", out=out / label,
                            output_len=output_len, concurrency=concurrency,
                            num_requests=args.num_requests or len(prompts.records),
                            warmup_requests=min(args.warmup_requests or 2, len(prompts.records)),
                            seed=args.seed, timeout_s=args.timeout)
            summaries[label] = run_benchmark(cfg, prompts, args.dataset,
                                             use_uvloop=not args.no_uvloop,
                                             progress=not args.quiet, engine=eng.describe(),
                                             overwrite=args.overwrite)
        if summaries[label].interrupted:
            return 130
    cmp = compare(out, concurrency)
    (out / "comparison.json").write_text(json.dumps(cmp, indent=2))
    if not args.quiet:
        print_comparison(cmp)
        for label, s in summaries.items():
            req = s.requests
            print(f"{label}: {req.ok} ok, {req.error} error, {req.cancelled} cancelled;"
                  f" results in {out / label}")
    return 0
