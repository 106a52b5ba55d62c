"""``loadgen sweep``: run a grid of load x SD configuration x dataset (loadgen/sweep/runner.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.cli.run import add_telemetry_args, workers_arg
from loadgen.engines import LAUNCHABLE_ENGINES
from loadgen.results.sweepdir import REPEAT_ORDERS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sweep", help="a grid of runs: load x SD configuration x dataset, with speedup and "
                      "capacity",
        description="Run every cell of a sweep (resuming an interrupted one), then report SD "
                    "speedup against the baseline per category and load, and the capacity "
                    "within SLOs. A YAML config (--config) or flags for the simple cases.")
    p.add_argument("--config", type=Path, help="sweep YAML (see loadgen/sweep/runner.py)")
    p.add_argument("--out", type=Path, required=True, help="sweep directory")
    simple = p.add_argument_group("simple cases without a config")
    simple.add_argument("--serve", choices=LAUNCHABLE_ENGINES,
                        help="launch this engine once per --spec value")
    simple.add_argument("--spec", default="none,ngram",
                        help="SD methods with --serve, comma-separated; 'none' is the baseline")
    simple.add_argument("--num-spec-tokens", type=int)
    simple.add_argument("--endpoint", help="a fixed endpoint (one SD configuration)")
    simple.add_argument("--label", default="endpoint", help="its label")
    simple.add_argument("--metrics", action="append", default=[], metavar="URL",
                        help="with --endpoint: its counters from these metrics URLs (one per "
                             "replica) or prometheus+http://HOST:9090 (docs/METRICS.md)")
    simple.add_argument("--metrics-selector", metavar="SELECTOR",
                        help="with a Prometheus --metrics: the series to read")
    simple.add_argument("--engine", help="client protocol (default: the --serve engine)")
    simple.add_argument("--dataset", help="prompt file, or 'builtin'", default="builtin")
    load = simple.add_mutually_exclusive_group()
    load.add_argument("--concurrency", help="comma-separated levels, e.g. 1,2,4,8")
    load.add_argument("--request-rate", help="comma-separated rates, e.g. 0.5,1,2")
    simple.add_argument("--output-len", type=int, default=128)
    simple.add_argument("--num-requests", type=int)
    simple.add_argument("--warmup-requests", type=int, default=0)
    p.add_argument("--workers", type=workers_arg, metavar="N|auto",
                   help="every cell with N client processes (the run: key `workers`)")
    p.add_argument("--slo", help="e.g. ttft_p99_ms=2000,tpot_p99_ms=50")
    p.add_argument("--repeats", type=int,
                   help="complete runs of every cell, SD configurations in alternation; "
                        "speedups get a confidence interval across them (config: repeats)")
    p.add_argument("--repeat-order", choices=REPEAT_ORDERS,
                   help="alternate (A B A B ..., the default) or random blocks (--seed)")
    p.add_argument("--seed", type=int, help="seed of --repeat-order random")
    p.add_argument("--keep-prefix-cache", action="store_true",
                   help="measure with the engine's prefix cache warm from earlier cells "
                        "(default: a per-run cache salt or flush where the engine offers one)")
    add_telemetry_args(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def config_from_flags(args: argparse.Namespace) -> dict:
    levels = args.concurrency or args.request_rate or "1,2,4"
    kind = "request_rate" if args.request_rate else "concurrency"
    cfg: dict = {
        "datasets": [{"name": Path(args.dataset).stem if args.dataset != "builtin"
                      else "builtin", "path": args.dataset}],
        "loads": {kind: [float(x) for x in levels.split(",")]},
        "run": {"output_len": args.output_len, "warmup_requests": args.warmup_requests},
    }
    if args.num_requests:
        cfg["run"]["num_requests"] = args.num_requests
    if args.serve:
        cfg["serve"] = {"engine": args.serve, "extra_args": list(args.passthrough)}
        cfg["sd_configs"] = []
        for method in args.spec.split(","):
            sd = {"label": "off" if method == "none" else method, "spec": method,
                  "baseline": method == "none"}
            if method != "none" and args.num_spec_tokens:
                sd["num_spec_tokens"] = args.num_spec_tokens
                sd["label"] = f"{method}-k{args.num_spec_tokens}"
            cfg["sd_configs"].append(sd)
    elif args.endpoint:
        cfg["sd_configs"] = [{"label": args.label, "endpoint": args.endpoint}]
        if args.metrics:
            cfg["sd_configs"][0]["metrics"] = args.metrics
        if args.metrics_selector:
            cfg["sd_configs"][0]["metrics_selector"] = args.metrics_selector
    if args.engine:
        cfg["engine"] = args.engine
    return cfg


def print_analysis(analysis: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = [r for r in analysis.get("speedup", []) if r["category"] == "all"]
    if rows:
        t = Table(title="SD speedup against the baseline (output tokens/s)")
        for col in ("dataset", "SD", "load", "AL", "tok/s", "baseline tok/s", "speedup",
                    "per-user speedup"):
            t.add_column(col, justify="right")
        for r in rows:
            sp = r["speedup_output_tokens_per_s"]
            mark = "" if r["pays"] else " [red](SD does not pay)[/red]"
            t.add_row(r["dataset"], r["sd"], f"{r['load_level']:g}",
                      f"{r['acceptance_length']:.2f}" if r["acceptance_length"] else "-",
                      f"{r['output_tokens_per_s']:.1f}",
                      f"{r['baseline_output_tokens_per_s']:.1f}",
                      (f"{sp:.2f}x" if sp else "-") + mark,
                      f"{r['speedup_per_user_tokens_per_s']:.2f}x"
                      if r["speedup_per_user_tokens_per_s"] else "-")
        console.print(t)
    print_intervals(console, analysis)
    cap = analysis.get("capacity")
    if cap:
        console.print("[bold]Capacity within the SLOs[/bold]")
        console.print(cap["recommendation"])


def print_intervals(console, analysis: dict) -> None:
    """Speedups across repetitions: the interval, the verdict and why a row is suspect."""
    from rich.table import Table

    from loadgen.analysis.repeats import fmt_speedup

    rows = analysis.get("speedup_intervals") or []
    if not rows or max(r["repeats"] for r in rows) < 2:
        suspect = [r for r in rows if r["suspect"]]
    else:
        conf = rows[0]["confidence"]
        t = Table(title=f"Speedup across repetitions (geometric mean, {conf:.0%} "
                        "t-interval); overall: output tokens/s, categories: per-user tokens/s")
        for col in ("dataset", "SD", "load", "category", "n", "AL", "speedup", "verdict"):
            t.add_column(col, justify="right")
        for r in rows:
            mark = {"no clear gain": "[yellow]no clear gain[/yellow]",
                    "loss": "[red]loss[/red]"}.get(r["verdict"], r["verdict"])
            if r["suspect"]:
                mark += " [red]suspect[/red]"
            t.add_row(r["dataset"], r["sd"], f"{r['load_level']:g}", r["category"],
                      str(r["repeats"]),
                      f"{r['acceptance_length']:.2f}" if r["acceptance_length"] else "-",
                      fmt_speedup(r), mark)
        console.print(t)
        suspect = [r for r in rows if r["suspect"]]
    for r in suspect:
        console.print(f"[red]suspect[/red] {r['dataset']} {r['sd']} at {r['load_level']:g} "
                      f"({r['category']}): " + "; ".join(r["suspect"]))
    print_energy(console, rows)


def print_energy(console, rows: list[dict]) -> None:
    """--telemetry: energy per output token, SD against the baseline (analysis/repeats.py)."""
    from loadgen.analysis.repeats import fmt_energy

    for r in rows:
        text = fmt_energy(r) if r["category"] == "all" else None
        if text:
            console.print(f"energy: {r['dataset']} {r['sd']} at {r['load_level']:g}: {text} "
                          f"({r['energy_verdict']})")


def main(args: argparse.Namespace) -> int:
    import yaml

    from loadgen.analysis.sweeps import parse_slos
    from loadgen.results.redact import redact_config
    from loadgen.sweep.runner import SweepConfigError, load_config, run_sweep

    try:
        if args.config:
            cfg = load_config(args.config)
            base = args.config.parent
        else:
            if not args.serve and not args.endpoint:
                raise SweepConfigError("give --config, or --serve ENGINE, or --endpoint URL")
            cfg = config_from_flags(args)
            base = Path(".")
        if args.workers is not None:
            cfg["run"] = dict(cfg.get("run") or {}, workers=args.workers)
        if args.slo:
            parse_slos(args.slo)
            cfg["slo"] = args.slo
        if args.repeats is not None:
            cfg["repeats"] = args.repeats
        if args.repeat_order:
            cfg["repeat_order"] = args.repeat_order
        if args.seed is not None:
            cfg["repeat_seed"] = args.seed
        if args.keep_prefix_cache:
            cfg.setdefault("run", {})["keep_prefix_cache"] = True
        if args.telemetry:
            cfg["run"] = dict(cfg.get("run") or {}, telemetry=args.telemetry,
                              telemetry_interval_s=args.telemetry_interval)
        args.out.mkdir(parents=True, exist_ok=True)
        # what was asked, never a secret: endpoints without userinfo/query, headers masked
        (args.out / "sweep.yaml").write_text(yaml.safe_dump(redact_config(cfg), sort_keys=False))
        sweep = run_sweep(cfg, args.out, config_dir=base, progress=not args.quiet)
    except (SweepConfigError, ValueError) as exc:
        print(f"loadgen sweep: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print_analysis(sweep.analysis)
    failed = [c for c in sweep.cells if c.status != "complete"]
    for c in failed:
        print(f"loadgen sweep: cell {c.id} is {c.status}: {c.error or ''}", file=sys.stderr)
    print(f"sweep in {args.out}")
    return 130 if any(c.status == "interrupted" for c in sweep.cells) else (1 if failed else 0)
