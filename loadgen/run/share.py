"""How many workers a run gets: ``--workers N``, or ``--workers auto`` from the load.

The capacities come from scripts/bench_scale.py (docs/PERFORMANCE.md, "Scale-out"): one worker
process spent 7-11 µs of CPU per stream event, so a core it has to itself carries ~100,000 events/s;
``EVENTS_PER_S_PER_WORKER`` keeps it near 40% busy, where its event-loop lag stays low. One
worker carried 2,500 streams in the 10,000-stream test with every request completed;
``STREAMS_PER_WORKER`` is a conservative 1,000 (the benchmark's machine, shared and loaded,
flagged lag at every stream count, so the figure is not yet measured overload-free). ``auto``
never picks more workers than the host has cores: scaling stops there (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import math
import os

from loadgen.config import RunConfig

STREAMS_PER_WORKER = 1000
EVENTS_PER_S_PER_WORKER = 40_000


def plan_workers(cfg: RunConfig) -> tuple[int, str | None]:
    """(workers, what ``auto`` picked and why, or None when N was given)."""
    if cfg.scale.workers != "auto":
        return int(cfg.scale.workers or 1), None
    cores = os.cpu_count() or 1
    if cfg.load.concurrency is not None:
        need = math.ceil(cfg.load.concurrency / STREAMS_PER_WORKER)
        why = f"{cfg.load.concurrency} streams at {STREAMS_PER_WORKER} per worker"
    else:
        assert cfg.load.request_rate is not None
        events = cfg.load.request_rate * (cfg.load.output_len or 256)
        need = math.ceil(events / EVENTS_PER_S_PER_WORKER)
        why = (f"~{events:.0f} events/s ({cfg.load.request_rate:g} req/s x "
               f"{cfg.load.output_len or 256} tokens) at {EVENTS_PER_S_PER_WORKER} per worker")
    n = max(1, min(need, cores))
    capped = f", capped at {cores} cores" if need > cores else ""
    return n, f"--workers auto: {n} worker(s) ({why}{capped})"
