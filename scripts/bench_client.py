#!/usr/bin/env python3
"""Client hot-path benchmark: loadgen's transport beside plain httpx.AsyncClient, in one run.

The synthetic engine runs pinned to CPU 0 and paces ~10k stream events/s (SD off, so one token
per event); this process runs pinned to CPU 1. For each transport and each stream count it
prints client CPU µs per event, CPU ms per request, and client-added lag (the moment a read
returned minus the engine's own send stamp from its truth log, same monotonic clock) p50/p99.

CPU per request is measured apart, on 1-token requests (10 rounds over the same streams), so it is
the per-request overhead (connect/reuse, request build, headers, completion) without events.

Targets (issue 3): <= 15 µs per event, <= 0.1 ms per request, lag p99 < 1 ms at 100 streams.

    python scripts/bench_client.py [--streams 100,1000] [--tokens 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.client.transport import HttpClient
from loadgen.engines import make_adapter
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import SyntheticProcess, read_truth


def prompts(n: int, offset: int) -> list[list[int]]:
    return [[offset + i, 5, 6, 7, 8] for i in range(n)]


async def run_loadgen(url: str, ids: list[list[int]], tokens: int, rounds: int = 1):
    ad = make_adapter("vllm")
    client = HttpClient(url)
    out = {}

    async def one(p):
        for _ in range(rounds):
            st = ad.new_state()
            await client.post(ad.stream_path, ad.encode(p, tokens),
                              sink=lambda d, s, st=st: ad.feed(st, d, s))
        out[prompt_digest(p)] = st

    t0 = time.process_time()
    await asyncio.gather(*(one(p) for p in ids))
    cpu = time.process_time() - t0
    client.close()
    return cpu, out


async def run_httpx(url: str, ids: list[list[int]], tokens: int, rounds: int = 1):
    import httpx

    ad = make_adapter("vllm")
    out = {}
    limits = httpx.Limits(max_connections=len(ids), max_keepalive_connections=len(ids))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:

        async def one(p):
            for _ in range(rounds):
                st = ad.new_state()
                async with client.stream("POST", ad.stream_path,
                                         content=ad.encode(p, tokens)) as resp:
                    async for chunk in resp.aiter_raw():
                        ad.feed(st, chunk, time.monotonic_ns())
            out[prompt_digest(p)] = st

        t0 = time.process_time()
        await asyncio.gather(*(one(p) for p in ids))
        cpu = time.process_time() - t0
    return cpu, out


def lag_ms(states: dict, truth: list[dict]) -> np.ndarray:
    by_digest = {r["prompt_sha256"]: r for r in truth}
    lags = []
    for digest, st in states.items():
        sent = by_digest[digest]["chunk_send_ns"]
        lags.extend((a - b) / 1e6 for a, b in zip(st.arrivals_ns, sent, strict=False))
    return np.array(lags)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="100,1000")
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--events-per-s", type=float, default=10000.0)
    args = ap.parse_args()
    import uvloop

    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})
    rows = []
    offset = 1000
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.streams.split(",")):
            step_ms = 1000.0 * n / args.events_per_s  # each step emits one event per stream
            for name, fn in (("loadgen", run_loadgen), ("httpx", run_httpx)):
                truth = Path(tmp) / f"{name}-{n}.jsonl"
                with SyntheticProcess(["--protocol", "vllm", "--no-spec", "--step-base-ms",
                                       f"{step_ms:g}", "--per-token-ms", "0",
                                       "--max-num-seqs", str(n + 1), "--truth-log",
                                       str(truth)], cpu=0) as eng:
                    ids = prompts(n, offset)
                    offset += n
                    gc.disable()  # as `loadgen run` does inside its window
                    wall = time.monotonic()
                    cpu, states = uvloop.run(fn(eng.url, ids, args.tokens))
                    wall = time.monotonic() - wall
                    short_ids = prompts(n, offset + 500_000)
                    cpu_short, _ = uvloop.run(fn(eng.url, short_ids, 1, rounds=10))
                    gc.enable()
                    eng.stop()
                    events = sum(len(s.arrivals_ns) for s in states.values())
                    ok = sum(s.tokens == args.tokens for s in states.values())
                    lags = lag_ms(states, read_truth(truth))
                rows.append((name, n, ok, events / wall, cpu * 1e6 / events,
                             cpu_short * 1e3 / (10 * n),
                             np.percentile(lags, 50), np.percentile(lags, 99)))
    head = ("transport", "streams", "ok", "events/s", "CPU us/event", "CPU ms/req",
            "lag p50 ms", "lag p99 ms")
    print("  ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(f"{r[0]:>12}  {r[1]:>12}  {r[2]:>12}  {r[3]:>12.0f}  {r[4]:>12.1f}  "
              f"{r[5]:>12.3f}  {r[6]:>12.3f}  {r[7]:>12.3f}")
    print("targets: <= 15 us/event, <= 0.1 ms/request, lag p99 < 1 ms at 100 streams")


if __name__ == "__main__":
    main()
