#!/usr/bin/env python3
"""Synthetic engine ceiling: stream events/s it sustains on one core.

The engine runs with zero step time (``--fast``) and SD off (one token per event), pinned to
CPU 0; loadgen's client runs pinned to CPU 1 with many streams. The figure is the events/s the
client received over the window, beside the engine's own CPU use (near 100% of its core means
the engine, not the client, is the limit). The baseline, measured in the same run, is a bare
uvloop+httptools streamer that writes pre-encoded events with no engine logic at all: the most
one Python core can push through this HTTP path.

    python scripts/bench_synthetic.py [--protocol vllm] [--streams 256] [--tokens 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.process import SyntheticProcess

_EVENT = (b'data: {"id":"cmpl-0","object":"text_completion","created":0,"model":"m",'
          b'"choices":[{"index":0,"text":"tok ","logprobs":null,"finish_reason":null,'
          b'"stop_reason":null,"token_ids":[1234]}],"usage":{"prompt_tokens":5,'
          b'"completion_tokens":1,"total_tokens":6}}\n\n')


def baseline_server(port_file: str) -> None:
    """Streams `max_tokens` identical pre-encoded events per request, yielding between events."""
    import json

    import uvloop

    from loadgen.synthetic.http import start_server

    async def app(req, conn):
        n = json.loads(req.body)["max_tokens"]
        conn.start_stream()
        for _ in range(n):
            conn.write_chunk(_EVENT)
            await asyncio.sleep(0)
        usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":%d}}\n\n'
        conn.write_chunk(usage % n)
        conn.write_chunk(b"data: [DONE]\n\n")
        conn.end_stream()
        return None

    async def main():
        srv = await start_server(app, "127.0.0.1", 0)
        Path(port_file).write_text(str(srv.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, pid: int, engine: str, ds: Path, streams: int, tokens: int,
            out: Path) -> tuple[float, float, int]:
    """Through loadgen's full client (parse every event, record every stamp)."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    s = run_benchmark(RunConfig.build(endpoint=url, engine=engine, out=out, output_len=tokens,
                                concurrency=streams, num_requests=streams * 2),
                      read_prompts(ds), ds, argv=["bench"])
    util = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    return s["throughput"]["output_tokens_per_s"], util, s["requests"]["ok"]


def measure_counting(url: str, pid: int, engine: str, streams: int,
                     tokens: int) -> tuple[float, float, int]:
    """Through a counting client: the transport only, events counted by their separator, no
    JSON parsing, so the client costs far less per event than the engine."""
    import uvloop

    from loadgen.client.transport import HttpClient
    from loadgen.engines import make_adapter

    ad = make_adapter(engine, model="m")

    async def main() -> tuple[int, int]:
        client = HttpClient(url)
        events = ok = 0

        def sink(data: bytes, stamp: int) -> None:
            nonlocal events
            events += data.count(b"\n\n")

        async def one(i: int) -> None:
            nonlocal ok
            for j in range(2):
                res = await client.post(ad.stream_path, ad.encode([100 + i * 2 + j, 5, 6],
                                                                  tokens), sink=sink)
                ok += res.status == 200
        await asyncio.gather(*(one(i) for i in range(streams)))
        client.close()
        return events, ok

    c0, t0 = cpu_seconds(pid), time.monotonic()
    events, ok = uvloop.run(main())
    wall = time.monotonic() - t0
    return events / wall, (cpu_seconds(pid) - c0) / wall, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--protocol", default="vllm", choices=["vllm", "sglang", "trtllm",
                                                           "llamacpp"])
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=400)
    ap.add_argument("--baseline-server", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_server:
        baseline_server(args.baseline_server)
        return
    two_cores = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1
    if two_cores:
        os.sched_setaffinity(0, {1})
    with tempfile.TemporaryDirectory() as tmp:
        ds = write_prompts(Path(tmp) / "ds.jsonl", [
            PromptRecord(id=str(i), category="c", prompt_token_ids=[100 + i, 5, 6, 7])
            for i in range(args.streams * 2)])
        with SyntheticProcess(["--protocol", args.protocol, "--fast", "--no-spec",
                               "--model-name", "m", "--max-num-seqs", str(args.streams)],
                              cpu=0 if two_cores else None) as eng:
            syn = measure_counting(eng.url, eng.proc.pid, args.protocol, args.streams,
                                   args.tokens)
            full = measure(eng.url, eng.proc.pid, args.protocol, ds, args.streams, args.tokens,
                           Path(tmp) / "syn")
        port_file = Path(tmp) / "port"
        base = subprocess.Popen([sys.executable, __file__, "--baseline-server", str(port_file)])
        try:
            if two_cores:
                os.sched_setaffinity(base.pid, {0})
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            bare = measure_counting(url, base.pid, "vllm", args.streams, args.tokens)
        finally:
            base.terminate()
            base.wait()
    print(f"{'server / client':>44}  {'events/s':>10}  {'server CPU':>10}  "
          f"{'server us/event':>15}  {'ceiling ev/s':>12}  {'ok':>5}")
    rows = ((f"synthetic ({args.protocol}, --fast) / counting", syn),
            ("baseline bare streamer / counting", bare),
            (f"synthetic ({args.protocol}, --fast) / loadgen run", full))
    for name, (rate, util, ok) in rows:
        us = util * 1e6 / rate
        # at 100% of its core; a lower bound is the measured rate itself
        print(f"{name:>44}  {rate:>10.0f}  {util:>9.0%}  {us:>15.1f}  {1e6 / us:>12.0f}  "
              f"{ok:>5}")
    print(f"streams={args.streams} tokens={args.tokens}; engine on CPU 0, client on CPU 1. "
          "Server CPU under 100% means the client side (or the machine) was the limit: the "
          "ceiling column extrapolates the engine's CPU cost per event to a full core.")


if __name__ == "__main__":
    main()
