"""``loadgen run`` with no ``--endpoint``: the embedded default.

Builds (once, cached) and starts the local llama.cpp server with SmolLM2-135M, pre-tokenizes the
built-in prompt set with SmolLM2's own tokenizer and chat template (read from the GGUF), runs it
with SD off and with n-gram SD over the same token ids, alternating (off, SD, off, SD, ...,
``--repeats`` times, both engines up), and prints the comparison: acceptance length per
category and the speedup with its interval across repetitions, "no clear gain" where the
interval contains 1, and why a result is suspect. ``--out`` is a sweep directory
(``loadgen report`` on it gives the comparison report).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from loadgen.results.files import write_json
from loadgen.results.sweepdir import Sweep

CONFIGS = (("sd-off", "none"), ("sd-ngram", "ngram"))
DEFAULT_REPEATS = 3  # repetitions of each configuration, in alternation (off, SD, off, SD, ...)


def sweep_config(args: argparse.Namespace, concurrency: int, output_len: int,
                 repeats: int) -> dict[str, Any]:
    """The default run as a sweep: llama.cpp launched once per SD configuration (both up at
    once), one load level, ``repeats`` alternating repetitions."""
    dataset = ({"name": Path(args.dataset).stem, "path": str(Path(args.dataset).resolve())}
               if args.dataset else {"name": "builtin", "path": "builtin"})
    run: dict[str, Any] = {"output_len": output_len, "seed": args.seed,
                           "timeout_s": args.timeout,
                           "keep_prefix_cache": bool(getattr(args, "keep_prefix_cache", False))}
    if args.num_requests:
        run["num_requests"] = args.num_requests
    return {
        "engine": "llamacpp",
        "serve": {"engine": "llamacpp",
                  "extra_args": ["-np", str(concurrency), "-c", str(4096 * concurrency)]},
        "sd_configs": [{"label": label, "spec": method, "baseline": method == "none"}
                       for label, method in CONFIGS],
        "datasets": [dataset],
        "loads": {"concurrency": [concurrency]},
        "run": run,
        "repeats": repeats,
    }


def compare(sweep: Sweep) -> dict[str, Any]:
    """SD against the baseline, overall and per category, with the sweep's own speedup
    definitions and intervals across repetitions (loadgen/analysis/sweeps.py, repeats.py,
    docs/METRICS.md)."""
    rows = sweep.analysis.get("speedup_intervals", [])
    overall = next((r for r in rows if r["category"] == "all"), None)
    sd_cells = [c for c in sweep.cells if not c.baseline and c.status == "complete"]
    sd = [s for c in sd_cells if (s := sweep.summary(c)) is not None]
    heads = {h["sd"]: h for h in sweep.analysis.get("headline_intervals", [])}
    al_drafting = [s.acceptance.acceptance_length for s in sd
                   if s.acceptance.acceptance_length is not None]
    return {
        "repeats": overall["repeats"] if overall else 0,
        "output_tokens_per_s": {
            "sd": heads.get(CONFIGS[1][0], {}).get("output_tokens_per_s"),
            "off": heads.get(CONFIGS[0][0], {}).get("output_tokens_per_s")},
        "overall": overall,
        # vLLM's formula over the counters: 1 + accepted / verify steps that had drafts
        "acceptance_length_when_drafting": (sum(al_drafting) / len(al_drafting)
                                            if al_drafting else None),
        "acceptance_source": sd[0].acceptance.source if sd else None,
        "categories": {r["category"]: r for r in rows if r["category"] != "all"},
        "suspect": sorted({f"{r['category']}: {why}" for r in rows for why in r["suspect"]}),
    }


def print_comparison(cmp: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from loadgen.analysis.repeats import fmt_speedup

    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    n = cmp["repeats"]
    t = Table(title=f"n-gram SD vs SD off (llama.cpp, SmolLM2-135M), {n} alternating "
                    f"repetitions; speedup: geometric mean [95% interval]")
    for col in ("category", "AL", "per-user speedup", "verdict"):
        t.add_column(col, justify="right")

    def verdict(r: dict[str, Any]) -> str:
        v = {"no clear gain": "[yellow]no clear gain[/yellow]",
             "loss": "[red]slower[/red]"}.get(r["verdict"], r["verdict"])
        return v + (" [red]suspect[/red]" if r["suspect"] else "")

    for name, c in cmp["categories"].items():
        t.add_row(name, f(c["acceptance_length"], 3), fmt_speedup(c), verdict(c))
    o = cmp["overall"]
    console = Console()
    if o:
        user = dict(o, speedup=o["per_user_speedup"], speedup_low=o["per_user_speedup_low"],
                    speedup_high=o["per_user_speedup_high"], verdict=o["per_user_verdict"])
        # the row shows the per-user speedup: its verdict is the per-user one (the output
        # tokens/s verdict is printed with that figure below)
        t.add_row("all", f(o["acceptance_length"], 3), fmt_speedup(user), verdict(user))
    console.print(t)
    if o:
        ot = cmp["output_tokens_per_s"]
        console.print(f"output tokens/s: SD {f((ot['sd'] or {}).get('mean'), 1)}, off "
                      f"{f((ot['off'] or {}).get('mean'), 1)}; speedup {fmt_speedup(o)} "
                      f"({o['verdict']})")
    console.print("AL = tokens per target forward pass (llama.cpp timings, token-weighted); "
                  f"over the verify steps that had drafts it is "
                  f"{f(cmp['acceptance_length_when_drafting'], 3)} ({cmp['acceptance_source']})")
    for why in cmp["suspect"]:
        console.print(f"[red]suspect[/red] {why}")


def main(args: argparse.Namespace) -> int:
    from loadgen.sweep.runner import SweepConfigError, run_sweep

    if args.dataset is None:
        print("loadgen: tokenizing the built-in prompts with SmolLM2's tokenizer", file=sys.stderr)
    out = args.out or Path("runs") / ("default-" + datetime.now().strftime("%Y%m%d-%H%M%S"))
    repeats = getattr(args, "repeats", None) or DEFAULT_REPEATS
    cfg = sweep_config(args, args.concurrency or 4, args.output_len or 96, repeats)
    if args.warmup_requests is not None:
        cfg["run"]["warmup_requests"] = args.warmup_requests
    if args.telemetry:  # the launched engine's exporters (docs/METRICS.md, "Server telemetry")
        cfg["run"].update(telemetry=args.telemetry, telemetry_interval_s=args.telemetry_interval)
    try:
        sweep = run_sweep(cfg, out, progress=not args.quiet)
    except (SweepConfigError, ValueError) as exc:
        print(f"loadgen run: {exc}", file=sys.stderr)
        return 2
    if any(c.status == "interrupted" for c in sweep.cells):
        return 130
    cmp = compare(sweep)
    write_json(out / "comparison.json", cmp)
    if not args.quiet:
        print_comparison(cmp)
        from loadgen.analysis.repeats import fmt_energy

        for r in sweep.analysis.get("speedup_intervals", []):
            if r["category"] == "all" and (text := fmt_energy(r)):
                print(f"energy: {r['sd']}: {text} ({r['energy_verdict']})")
        for c in sweep.cells:
            s = sweep.summary(c)
            if s is None:
                print(f"{c.id}: {c.status} {c.error or ''}")
                continue
            req = s.requests
            print(f"{c.id}: {req.ok} ok, {req.error} error, {req.cancelled} cancelled")
        print(f"results in {out} (a sweep directory: `loadgen report {out}`)")
    failed = [c for c in sweep.cells if c.status != "complete"]
    return 1 if len(failed) == len(sweep.cells) else 0
