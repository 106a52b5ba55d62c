"""``loadgen report DIR``: write DIR/report.html and DIR/report.md (or into --out)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report", help="HTML report and Markdown summary of a run or sweep directory",
        description="Write a self-contained HTML report (plots embedded, no external resource) "
                    "and a Markdown summary of a run directory or a sweep directory: Pareto "
                    "plot, AL per category, acceptance by draft position, TTFT/TPOT against "
                    "load, speedup heatmap, random vs real prompts, capacity under SLOs "
                    "(docs/REPORT.md). Needs the `report` extra (matplotlib).")
    p.add_argument("dir", type=Path, metavar="DIR", help="a run or sweep directory")
    p.add_argument("--out", type=Path, help="write report.html and report.md here (default DIR)")
    p.add_argument("--gpus", type=int, default=1,
                   help="GPUs behind the endpoint: per-GPU throughput = output tokens/s / N "
                        "(default 1)")
    p.add_argument("--slo", metavar="ttft_p99_ms=...,tpot_p99_ms=...",
                   help="SLOs for the capacity and recommendation (METRIC_STAT_ms=LIMIT)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from loadgen.analysis.sweeps import parse_slos
    from loadgen.report.build import MissingExtra, build_report

    try:
        slos = parse_slos(args.slo) if args.slo else None
        if args.gpus < 1:
            raise ValueError("--gpus must be >= 1")
        html_path, md_path = build_report(args.dir, args.out, gpus=args.gpus, slos=slos)
    except (ValueError, FileNotFoundError, MissingExtra) as exc:
        print(f"loadgen report: {exc}", file=sys.stderr)
        return 2
    print(html_path)
    print(md_path)
    return 0
