"""``loadgen compare A B``: two run directories side by side, with bootstrap CIs of B − A."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.compare import DEFAULT_CONFIDENCE, DEFAULT_MIN_REQUESTS, DEFAULT_RESAMPLES


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "compare", help="compare two runs (or two sets of repeated runs): B − A with confidence "
                         "intervals",
        description="Compare two run directories (or two sweep cells' directories) side by "
                    "side: throughput, per-user tokens/s, TTFT/TPOT/ITL/E2E, AL, per-category "
                    "AL and TPOT, errors; B − A and B / A with bootstrap confidence intervals, "
                    "and which differences are significant (docs/COMPARE.md).")
    _arguments(p)
    p.set_defaults(func=main)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, metavar="A", help="run directory A (the reference)")
    p.add_argument("b", type=Path, metavar="B", help="run directory B")
    p.add_argument("--a", dest="more_a", type=Path, action="append", default=[],
                   metavar="DIR", help="another run of A's configuration (a repetition); "
                                       "repeatable: gives intervals across runs")
    p.add_argument("--b", dest="more_b", type=Path, action="append", default=[],
                   metavar="DIR", help="another run of B's configuration (repeatable)")
    p.add_argument("--label-a", help="name for A in messages (default: A)")
    p.add_argument("--label-b", help="name for B in messages (default: B)")
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                   help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"confidence level of the intervals (default {DEFAULT_CONFIDENCE})")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--min-requests", type=int, default=DEFAULT_MIN_REQUESTS,
                   help="fewer values than this give no CI (default "
                        f"{DEFAULT_MIN_REQUESTS})")
    p.add_argument("--json", type=Path, metavar="FILE", help="write everything as JSON")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown report")
    p.add_argument("--quiet", action="store_true", help="print nothing (with --json/--markdown)")


def main(args: argparse.Namespace | list[str] | None = None) -> int:
    """The command; also callable directly as ``main(["runs/a", "runs/b", "--json", "c.json"])``."""
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="loadgen compare")
        _arguments(parser)
        args = parser.parse_args(sys.argv[1:] if args is None else args)
    from loadgen.compare import (
        CompareError,
        compare_dirs,
        print_result,
        to_json,
        to_markdown,
    )

    try:
        result = compare_dirs(args.a, args.b, label_a=args.label_a, label_b=args.label_b,
                              more_a=tuple(args.more_a), more_b=tuple(args.more_b),
                              resamples=args.resamples, confidence=args.confidence,
                              seed=args.seed, min_requests=args.min_requests)
    except (CompareError, ValueError) as exc:
        print(f"loadgen compare: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(to_json(result))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(to_markdown(result))
    if not args.quiet:
        print_result(result)
        for what, path in (("JSON", args.json), ("Markdown", args.markdown)):
            if path:
                print(f"{what} in {path}")
    return 0
