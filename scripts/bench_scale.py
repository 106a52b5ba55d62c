#!/usr/bin/env python3
"""Scale-out benchmark: the client's events/s and CPU per event with 1, 2 and 4 worker
processes and a local 2-node Ray cluster, beside today's single process, in one run; then the
peak resident memory of a 100,000-request x 256-token run.

Load: several ``loadgen serve synthetic --fast`` engines (zero step time, SD off: one token per
event; one engine process tops out near 78k events/s), worker k sending to engine k % E; a
closed loop of ``--streams`` streams, ``--requests`` requests of ``--tokens`` tokens. Events/s is
the window's (tokens/s with one token per event); CPU µs per event is all workers' CPU over all
their events. Scaling efficiency at N = events/s(N) / (N x events/s(1 worker)). Everything
(engines, workers, coordinator) shares this host's cores: on a 2-core machine scaling stops
when the engines and the workers saturate the cores, which the figures show.

    python scripts/bench_scale.py [--engines 3] [--streams 256] [--requests 1500]
        [--tokens 256] [--big 100000] [--big-tokens 256] [--skip-ray] [--skip-big]
        [--only-scan | --only-big]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile, PromptRecord, read_prompts, write_prompts
from loadgen.results.summary import Summary
from loadgen.run.benchmark import run_benchmark
from loadgen.run.worker import peak_rss_mb
from loadgen.synthetic.process import SyntheticProcess


def dataset(path: Path, n: int = 200) -> Path:
    rng = random.Random(0)
    recs = [PromptRecord(id=f"p{i}", category=("a", "b", "c")[i % 3],
                         prompt_token_ids=[rng.randrange(100, 30000) for _ in range(32)])
            for i in range(n)]
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


def local(cfg: RunConfig, prompts: PromptFile, n: int, endpoints: list[str]) -> Summary:
    """N worker processes, worker k on endpoints[k % len] (the one run engine)."""
    cfg = cfg.replace(workers=n)
    return run_benchmark(cfg, prompts, endpoints=endpoints, overwrite=True)


def on_ray(cfg: RunConfig, prompts: PromptFile, endpoints: list[str]) -> Summary:
    return run_benchmark(cfg, prompts, endpoints=endpoints, overwrite=True)


def row(label: str, s: Summary, base: float | None, n: int, wall: float) -> float:
    ev = s.throughput.output_tokens_per_s or 0.0
    eff = f"{ev / (n * base):10.0%}" if base else f"{'-':>10}"
    lag = s.client.loop_lag_ms.p99 or 0.0
    rss = (f"{max((w.max_rss_mb or 0.0) for w in s.client.workers):.0f}"
           if s.client.workers else "-")
    print(f"{label:>28}  {ev:>10.0f}  {ev / n:>10.0f}  {s.client.cpu_us_per_event or 0:>8.1f}"
          f"  {eff}  {lag:>8.2f}  {'yes' if s.client.overloaded else 'no':>5}  "
          f"{s.requests.ok:>6}/{s.requests.total:<6} {rss:>7}  {wall:>6.1f}", flush=True)
    return ev


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=3)
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--big-tokens", type=int, default=256,
                    help="tokens per request of the --big run (4 makes 1,000,000 requests "
                         "a matter of minutes: memory grows with requests, not events)")
    ap.add_argument("--scan-step-ms", type=float, default=25.0)
    ap.add_argument("--scan", default="250,500,1000,2000,3000",
                    help="stream counts for the overload scan ('' to skip)")
    ap.add_argument("--only-scan", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--only-big", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        return run_all(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # shards of the big run: hundreds of MB


def run_all(args: argparse.Namespace, tmp: Path) -> int:
    ds = dataset(tmp / "ds.jsonl")
    prompts = read_prompts(ds)
    if args.only_big:
        big(args, tmp, ds, prompts)
        return 0
    print(f"host: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"(shared machine); {args.engines} synthetic --fast engines (SD off), "
          f"{args.streams} streams x {args.requests} requests x {args.tokens} tokens")
    engines = [SyntheticProcess(["--protocol", "vllm", "--fast", "--no-spec",
                                 "--model-name", "m"]).start() for _ in range(args.engines)]
    urls = [e.url for e in engines]
    try:
        def cfg(name: str, **kw: object) -> RunConfig:
            return RunConfig.build(endpoint=urls[0], engine="vllm", out=tmp / name, model="m",
                             output_len=args.tokens, concurrency=args.streams,
                             num_requests=args.requests, warmup_requests=args.streams // 4,
                             **kw)  # type: ignore[arg-type]

        if args.scan:
            scan(args, tmp, prompts)
        if args.only_scan:
            return 0
        print(f"{'client':>28}  {'events/s':>10}  {'/worker':>10}  {'CPU µs/ev':>8}  "
              f"{'efficiency':>10}  {'lag p99':>8}  {'over':>5}  {'ok/total':>13} "
              f"{'RSS MB':>7}  {'wall s':>6}")
        t = time.monotonic()
        s = run_benchmark(cfg("single"), prompts, ds, argv=["bench"])
        row("single process (today)", s, None, 1, time.monotonic() - t)
        base = None
        for n in (1, 2, 4):
            t = time.monotonic()
            s = local(cfg(f"w{n}"), prompts, n, urls)
            ev = row(f"{n} worker process(es)", s, base, n, time.monotonic() - t)
            base = base or ev
        if not args.skip_ray:
            # not imported here: loadgen.run.rayactors.connect must see ray imported first
            if importlib.util.find_spec("ray") is None:
                print(f"{'Ray 2 nodes x 1 worker':>28}  skipped: ray is not installed")
            else:
                from loadgen.run.raycluster import LocalRayCluster

                with LocalRayCluster(nodes=2, cpus_per_node=1,
                                     temp_dir=tmp / "ray") as cluster:
                    t = time.monotonic()
                    s = on_ray(cfg("ray", ray=cluster.address), prompts, urls)
                    row("Ray 2 nodes x 1 worker", s, base, 2, time.monotonic() - t)
    finally:
        for e in engines:
            e.stop()
    if not args.skip_big:
        big(args, tmp, ds, prompts)
    return 0


def scan(args: argparse.Namespace, tmp: Path, prompts: PromptFile) -> None:
    """Streams per client core without an overload flag, at a production-like pace: engines
    paced at ``--scan-step-ms`` per step (one token per stream per step, SD off), pinned to CPU
    0; one worker process pinned to CPU 1 (the coordinator too: it only scrapes); 64-token
    requests, each stream count in turn. The flag is the worker's lag p99 above 5 ms."""
    if (os.cpu_count() or 1) < 2 or not hasattr(os, "sched_setaffinity"):
        print("overload scan skipped: needs 2 cores and CPU affinity")
        return
    step = args.scan_step_ms
    print(f"overload scan: 1 worker on CPU 1, one engine on CPU 0 paced at {step:g} "
          f"ms per step ({1000 / step:.0f} tokens/s per stream), 64 tokens, 3 requests per "
          f"stream:")
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})  # the worker processes spawned below inherit it
    engines = [SyntheticProcess(["--protocol", "vllm", "--no-spec", "--model-name", "m",
                                 "--step-base-ms", f"{step:g}", "--per-token-ms", "0",
                                 "--max-num-seqs", "100000"], cpu=0).start()]
    try:
        for c in (int(x) for x in args.scan.split(",")):
            cfg = RunConfig.build(endpoint=engines[0].url, engine="vllm", out=tmp / f"scan{c}",
                            model="m", output_len=64, concurrency=c, num_requests=3 * c,
                            warmup_requests=c)
            s = local(cfg, prompts, 1, [engines[0].url])
            w = (s.client.workers or [s.client])[0]
            print(f"  {c:>6} streams: {s.throughput.output_tokens_per_s or 0:>8.0f} events/s "
                  f"(paced: {c * 1000 / step:.0f}), CPU {w.cpu_us_per_event or 0:.1f} µs/event, "
                  f"lag p99 {w.loop_lag_ms.p99 or 0:.2f} ms, overloaded: "
                  f"{'yes' if s.client.overloaded else 'no'}, "
                  f"{s.requests.ok}/{s.requests.total} ok", flush=True)
    finally:
        for e in engines:
            e.stop()
        os.sched_setaffinity(0, mask)


def big(args: argparse.Namespace, tmp: Path, ds: Path, prompts: PromptFile) -> None:
    """Peak RSS of the coordinator (this process) and of each worker, SD on (~2.5 tokens per
    event), 2 workers, each on its own engine."""
    engines = [SyntheticProcess(["--protocol", "vllm", "--fast", "-k", "3", "--model-name",
                                 "m"]).start() for _ in range(2)]
    try:
        out = tmp / "big"
        cfg = RunConfig.build(endpoint=engines[0].url, engine="vllm", out=out, model="m",
                        output_len=args.big_tokens, concurrency=args.streams,
                        num_requests=args.big)
        t = time.monotonic()
        s = local(cfg, prompts, 2, [e.url for e in engines])
        wall = time.monotonic() - t
    finally:
        for e in engines:
            e.stop()
    coord = peak_rss_mb()
    size = sum(p.stat().st_size for p in out.glob("requests.*.jsonl")) / 1e6
    workers = ", ".join(f"{w.max_rss_mb:.0f}" for w in s.client.workers or [])
    print(f"\n{args.big} requests x {args.big_tokens} tokens, 2 workers: "
          f"{s.requests.ok}/{s.requests.total} "
          f"ok in {wall:.0f} s, shards {size:.0f} MB; peak RSS coordinator {coord:.0f} MB "
          f"(this process, summary streamed from the shards included), workers {workers} MB "
          f"(target < 500 MB each); ITL percentiles from a histogram: "
          f"relative error <= {s.latency_ms.itl.relative_error}")
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    raise SystemExit(main())
