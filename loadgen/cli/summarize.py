"""``loadgen summarize RUN_DIR``: the summary recomputed from the run's record files, exactly."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXACT_NAME = "summary.exact.json"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "summarize", help="recompute a run's summary from its records, every percentile exact",
        description="Stream a run directory's records (requests.jsonl or the worker shards "
                    "requests.<k>.jsonl) and recompute every number of summary.json with exact "
                    f"percentiles, however large the run; writes RUN_DIR/{EXACT_NAME} "
                    "(docs/METRICS.md, 'Exact and approximate statistics').")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--out", type=Path, help=f"write here instead of RUN_DIR/{EXACT_NAME}")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from loadgen.analysis.recompute import recompute
    from loadgen.results.files import ResultFileError, write_json

    if not args.run_dir.is_dir():
        print(f"loadgen summarize: {args.run_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        summary = recompute(args.run_dir)
    except (ResultFileError, KeyError, TypeError) as exc:
        print(f"loadgen summarize: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / EXACT_NAME
    write_json(out, summary.to_dict())
    if not args.quiet:
        from loadgen.cli.console import print_summary

        print_summary(summary)
        print(f"exact summary in {out}")
    return 0
