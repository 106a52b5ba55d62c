#!/usr/bin/env python3
"""Benchmark the data layer and print the figures.

1. Qualitative: read the ~20k-prompt pool of the packaged qualitative recipe from ../shared/data,
   embed it with the offline MiniLM (embedding cache off), select 80 per category. Target < 120 s.
2. Throughput bucket: build throughput_32k (1,536 x 32,000 ids) for SmolLM2 on token ids, then
   tokenize the same 1,536 x 32k-token prompts from TEXT with ``data tokenize``. Target < 120 s.

Usage: python scripts/bench_data.py [--skip-qualitative] [--skip-tokenize] [--per-tier 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def bench_qualitative(per_category: int) -> None:
    from loadgen.data.qualitative import build_qualitative, format_report
    from loadgen.data.recipe import resolve_recipe

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = build_qualitative(resolve_recipe("qualitative"), Path(tmp) / "q.jsonl",
                                per_category=per_category, cache=False, log=lambda m: None)
        wall = time.perf_counter() - t0
    t = rep["timings_s"]
    print(format_report(rep))
    print(f"QUALITATIVE pool={rep['pool_size']} embedded={rep['after_exact_dedup']} "
          f"embed={t['embed']:.1f}s select={t['select']:.1f}s "
          f"embed+select={t['embed'] + t['select']:.1f}s (model load {t['load_embedder']:.1f}s, "
          f"read {t['read']:.1f}s, wall {wall:.1f}s) target<120s", flush=True)


def bench_tokenize(per_tier: int, isl: str) -> None:
    from loadgen.data.prompts import read_prompts
    from loadgen.data.textfmt import TextPrompt, write_text_prompts
    from loadgen.data.throughput import build_throughput
    from loadgen.data.tokenize import tokenize_file
    from loadgen.data.tokenizer import load_tokenizer

    tok = load_tokenizer("smollm2")
    tok.identity()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        rep = build_throughput(tok, [isl], per_tier, tmp, seed=0, fmt="parquet")
        t_build = time.perf_counter() - t0
        pf = read_prompts(rep[isl]["file"])
        lens = {r.input_len for r in pf.records}
        print(f"THROUGHPUT-BUILD throughput_{isl}: {len(pf.records)} prompts, "
              f"lengths {sorted(lens)} (exact), build {rep[isl]['build_s']:.1f}s + "
              f"write {rep[isl]['write_s']:.1f}s = "
              f"{t_build:.1f}s target<120s", flush=True)
        text = [TextPrompt(id=r.id, category=r.category, turns=[r.messages[-1]["content"]])
                for r in pf.records]
        del pf
        src = write_text_prompts(Path(tmp) / "bucket.jsonl", text)
        del text
        out, timing = tokenize_file(src, Path(tmp) / "bucket.parquet", tok)
        lens = [r.input_len for r in out.records]
        print(f"TOKENIZE-TEXT {len(lens)} x ~{isl} text prompts -> {int(timing['tokens'])} tokens "
              f"(input length {min(lens)}-{max(lens)}): tokenize {timing['tokenize_s']:.1f}s, "
              f"read {timing['read_s']:.1f}s, write {timing['write_s']:.1f}s, total "
              f"{timing['total_s']:.1f}s ({timing['tokens'] / timing['tokenize_s'] / 1e6:.2f} M "
              f"tokens/s) target<120s", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-qualitative", action="store_true")
    ap.add_argument("--skip-tokenize", action="store_true")
    ap.add_argument("--per-category", type=int, default=80)
    ap.add_argument("--per-tier", type=int, default=512)
    ap.add_argument("--isl", default="32k")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()}", flush=True)
    if not args.skip_qualitative:
        bench_qualitative(args.per_category)
    if not args.skip_tokenize:
        bench_tokenize(args.per_tier, args.isl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
