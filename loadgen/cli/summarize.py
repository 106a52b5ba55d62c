"""``loadgen summarize RUN_DIR``: a run's summary computed again from its run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "summary.recomputed.json"
EXACT_NAME = "summary.exact.json"


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "summarize", help="compute a run's summary again from its run directory",
        description="Compute every number of summary.json from the run directory alone "
                    "(manifest.json, facts.json and the records: requests.jsonl or the "
                    "worker files requests.<k>.jsonl), as the run did: the result equals "
                    f"summary.json. Writes RUN_DIR/{NAME}; with --exact every percentile is "
                    f"exact however large the run, in RUN_DIR/{EXACT_NAME} (docs/METRICS.md, "
                    "'Exact and approximate statistics').")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--exact", action="store_true",
                   help="keep every latency value (8 bytes each): exact percentiles")
    p.add_argument("--out", type=Path, help="write here instead of RUN_DIR")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from loadgen.analysis.rundir import summarize_run
    from loadgen.results.files import ResultFileError, write_json

    if not args.run_dir.is_dir():
        print(f"loadgen summarize: {args.run_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        summary = summarize_run(args.run_dir, exact_limit=sys.maxsize if args.exact else None)
    except (ResultFileError, KeyError, TypeError, ValueError) as exc:
        print(f"loadgen summarize: {exc}", file=sys.stderr)
        return 2
    out = args.out or args.run_dir / (EXACT_NAME if args.exact else NAME)
    write_json(out, summary.to_dict())
    if not args.quiet:
        from loadgen.cli.console import print_summary

        print_summary(summary)
        print(f"summary in {out}")
    return 0
