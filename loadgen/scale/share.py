"""How many workers a run gets: ``--workers N``, or ``--workers auto`` from the load.

The capacities are this project's measurements (scripts/bench_scale.py, README "Scale-out"):
one worker process keeps its event-loop lag under the default threshold up to about
``STREAMS_PER_WORKER`` concurrent streams and ``EVENTS_PER_S_PER_WORKER`` stream events per
second. ``auto`` never picks more workers than the host has cores (a worker per core is where
scaling stops: loadgen/README).
"""

from __future__ import annotations

import math
import os

from loadgen.results.config import RunConfig

STREAMS_PER_WORKER = 1000
EVENTS_PER_S_PER_WORKER = 30_000


def plan_workers(cfg: RunConfig) -> tuple[int, str | None]:
    """(workers, what ``auto`` picked and why, or None when N was given)."""
    if cfg.workers != "auto":
        return int(cfg.workers or 1), None
    cores = os.cpu_count() or 1
    if cfg.concurrency is not None:
        need = math.ceil(cfg.concurrency / STREAMS_PER_WORKER)
        why = f"{cfg.concurrency} streams at {STREAMS_PER_WORKER} per worker"
    else:
        assert cfg.request_rate is not None
        events = cfg.request_rate * (cfg.output_len or 256)
        need = math.ceil(events / EVENTS_PER_S_PER_WORKER)
        why = (f"~{events:.0f} events/s ({cfg.request_rate:g} req/s x "
               f"{cfg.output_len or 256} tokens) at {EVENTS_PER_S_PER_WORKER} per worker")
    n = max(1, min(need, cores))
    capped = f", capped at {cores} cores" if need > cores else ""
    return n, f"--workers auto: {n} worker(s) ({why}{capped})"
