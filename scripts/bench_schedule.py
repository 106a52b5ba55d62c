#!/usr/bin/env python3
"""Schedule precision: how far from its scheduled time each request of a trace replay reaches the
engine, against the engine's kernel receive stamps, beside a baseline and this machine's floor.

Load: the first ``--rows`` rows of Mooncake's conversation trace (bursts of simultaneous requests,
~14k-token prompts filled with real text: ``loadgen data build trace``), replayed at
``--rate`` requests/s on ``loadgen serve synthetic --fast`` (prefix cache on, its truth log
stamping each request's first segment when it reached the host's network stack).

Rows, all from one run of this script:
- ``loadgen``: the open loop as ``loadgen run --arrival trace`` runs it (each send prepared ahead,
  woken for by a timerfd, written in the event loop's turn its time comes);
- ``baseline``: the same replay with ``--max-concurrency`` above the requests, which starts each
  send in a task of its own (a turn of the loop later: every stream's reads first);
- ``floor``: the lateness of the open loop's way of waiting at the same due times, on an idle loop
  in this process (no I/O, no requests): what this machine's timers and scheduler alone cost.

Error = engine receive stamp - scheduled time (never negative: loadgen never sends early).
Needs the data kit (../shared/data/traces) and SmolLM2's tokenizer (cached by scripts/setup.sh).

    python scripts/bench_schedule.py [--rate 200] [--rows 300] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.client.loops import wait_until
from loadgen.client.trace import configure, trace_schedule
from loadgen.client.waker import Waker
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile, read_prompts
from loadgen.data.sources import default_data_root
from loadgen.results.records import read_run_records
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import SyntheticProcess, read_truth

MIX = {"coding": 0.3, "rag": 0.2, "writing": 0.2, "roleplay": 0.3}
TARGET_MS = 2.0


def data_root() -> Path:
    here = Path(__file__).resolve()
    for cand in (default_data_root(), here.parents[2] / "shared" / "data"):
        if cand is not None and (cand / "traces").is_dir():
            return cand
    sys.exit("bench_schedule: the data kit (../shared/data with traces/) is not present")


def build(rows: int, out: Path) -> PromptFile:
    from loadgen.data.tokenizer import load_tokenizer
    from loadgen.data.trace_build import build_trace
    from loadgen.data.trace_read import TraceSpec

    root = data_root()
    build_trace(TraceSpec(root / "traces" / "mooncake_fast25_conversation.jsonl"),
                load_tokenizer("smollm2"), out, MIX, limit=rows, data_root=root)
    return read_prompts(out)


def replay(prompts: PromptFile, path: Path, rate: float, work: Path,
           baseline: bool) -> np.ndarray:
    """Per request: engine receive stamp - scheduled time (ms), for prompts sent once."""
    truth_path = work / "truth.jsonl"
    truth_path.unlink(missing_ok=True)
    eng = SyntheticProcess(["--protocol", "vllm", "--fast", "--truth-log",
                            str(truth_path)]).start()
    out = work / "run"
    shutil.rmtree(out, ignore_errors=True)
    try:
        cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, request_rate=1.0,
                              num_requests=1, arrival="trace", probe_timeout_s=120.0,
                              scrape_interval_s=3600.0, progress=False,
                              max_concurrency=len(prompts.records) + 1 if baseline else None)
        cfg = configure(cfg, trace_schedule(prompts, target_rate=rate), num_requests_given=False)
        run_benchmark(cfg, prompts, path, argv=["bench_schedule"])
    finally:
        eng.stop()
    recs = read_run_records(out)
    truth = read_truth(truth_path)
    once = Counter(t["prompt_sha256"] for t in truth)
    rx = {t["prompt_sha256"]: t["rx_ns"] for t in truth}
    digest = {p.id: prompt_digest(p.prompt_token_ids) for p in prompts.records}
    return np.array([(rx[d] - r["scheduled_ns"]) / 1e6 for r in recs
                     if once[d := digest[r["prompt_id"]]] == 1])


async def _timers(offsets_s: list[float]) -> np.ndarray:
    """The open loop's way of waiting (``loops.wait_until`` with its timerfd waker) on an idle
    loop: its lateness at each distinct due time."""
    waker = Waker.create()
    t0 = time.monotonic_ns() + 50_000_000
    late = []
    try:
        for off in sorted(set(offsets_s)):
            due = t0 + int(off * 1e9)
            await wait_until(due, waker)
            late.append((time.monotonic_ns() - due) / 1e6)
    finally:
        if waker is not None:
            waker.close()
    return np.array(late)


def floor(prompts: PromptFile, rate: float) -> np.ndarray:
    import uvloop

    sched = trace_schedule(prompts, target_rate=rate)
    first = prompts.records[0].arrival_s or 0.0
    offs = [((p.arrival_s or 0.0) - first) / sched.time_scale for p in prompts.records]
    return uvloop.run(_timers(offs))


def line(label: str, ms: np.ndarray) -> None:
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    print(f"{label:>10}  {p50:8.2f}  {p90:8.2f}  {p99:8.2f}  {ms.max():8.2f}  {len(ms):>6}",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=200.0, help="mean requests/s (default 200)")
    ap.add_argument("--rows", type=int, default=300, help="trace rows replayed (default 300)")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each row (default 3)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-schedule-"))
    try:
        path = work / "trace.jsonl"
        prompts = build(args.rows, path)
        rows: dict[str, list[np.ndarray]] = {"loadgen": [], "baseline": [], "floor": []}
        for _ in range(args.repeats):  # interleaved: a busy spell hits every row alike
            rows["loadgen"].append(replay(prompts, path, args.rate, work, baseline=False))
            rows["baseline"].append(replay(prompts, path, args.rate, work, baseline=True))
            rows["floor"].append(floor(prompts, args.rate))
        print(f"{args.rows} Mooncake conversation rows at {args.rate:g} requests/s, "
              f"{args.repeats} runs each; load average {os.getloadavg()[0]:.2f}; "
              f"target p99 <= {TARGET_MS:g} ms")
        print(f"{'ms':>10}  {'p50':>8}  {'p90':>8}  {'p99':>8}  {'max':>8}  {'sends':>6}")
        for label, parts in rows.items():
            line(label, np.concatenate(parts))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
