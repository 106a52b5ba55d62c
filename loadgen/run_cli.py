"""``loadgen run``: replay a pre-tokenized prompt file against an engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.engines import ENGINES
from loadgen.schedule import ARRIVALS


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="benchmark an endpoint with a pre-tokenized prompt file",
        description="Replay token ids at a controlled load, time every streamed token, scrape "
                    "the server's SD statistics and write manifest.json, requests.jsonl and "
                    "summary.json (docs/METRICS.md defines every number).")
    p.add_argument("--endpoint", help="base URL, e.g. http://127.0.0.1:8000 (default: start "
                   "the embedded llama.cpp engine and compare n-gram SD with SD off)")
    p.add_argument("--engine", choices=ENGINES, default="vllm")
    p.add_argument("--dataset", type=Path, help="prompt file (.jsonl, .jsonl.gz, .parquet)")
    p.add_argument("--output-len", type=int, help="exactly this many output tokens per request")
    p.add_argument("--out", type=Path, help="output directory (default runs/<timestamp>)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, help="closed loop with C requests in flight")
    load.add_argument("--request-rate", type=float, help="open loop, requests per second")
    p.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape (1 = Poisson)")
    p.add_argument("--max-concurrency", type=int, help="cap on in-flight requests (rate mode)")
    p.add_argument("--num-requests", type=int)
    p.add_argument("--duration", type=float, help="seconds of measured load")
    p.add_argument("--warmup-requests", type=int, default=0)
    p.add_argument("--model", help="model name to send (required by TensorRT-LLM)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="read the API key from this environment variable")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout, seconds")
    p.add_argument("--openai-mode", choices=["completions", "chat"], default="completions")
    p.add_argument("--keep-token-ids", action="store_true",
                   help="store output token ids in requests.jsonl")
    p.add_argument("--no-multi-turn", action="store_true",
                   help="send only the first turn of multi-turn records")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from datetime import datetime

    from loadgen.prompts import PromptFileError, read_prompts
    from loadgen.runner import RunConfig

    if args.endpoint is None:
        from loadgen.default_run import main as default_main

        return default_main(args)
    if args.dataset is None:
        print("loadgen run: --dataset is required with --endpoint", file=sys.stderr)
        return 2
    try:
        prompts = read_prompts(args.dataset)
    except PromptFileError as exc:
        print(f"loadgen run: {exc}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.concurrency is None and args.request_rate is None:
        args.concurrency = 1
    cfg = RunConfig(
        endpoint=args.endpoint, engine=args.engine, out=out, output_len=args.output_len,
        concurrency=args.concurrency, request_rate=args.request_rate, arrival=args.arrival,
        burstiness=args.burstiness, max_concurrency=args.max_concurrency,
        num_requests=args.num_requests, duration_s=args.duration,
        warmup_requests=args.warmup_requests, model=args.model, api_key_env=args.api_key_env,
        seed=args.seed, timeout_s=args.timeout, keep_token_ids=args.keep_token_ids,
        openai_mode=args.openai_mode, multi_turn=not args.no_multi_turn,
    )
    if cfg.num_requests is None and cfg.duration_s is None:
        cfg.num_requests = len(prompts.records)
    try:
        cfg.validate()
        from loadgen.benchmark import run_benchmark

        summary = run_benchmark(cfg, prompts, args.dataset, use_uvloop=not args.no_uvloop)
    except ValueError as exc:
        print(f"loadgen run: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        from loadgen.console import print_summary

        print_summary(summary)
        print(f"results in {out}")
    return 130 if summary.get("interrupted") else 0
