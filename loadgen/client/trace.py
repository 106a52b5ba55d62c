"""``loadgen run --arrival trace``: replay a trace prompt file on its own schedule.

Each record's ``arrival_s`` (loadgen/data/trace_build.py) is its offset from the first request;
the open loop sends request i at ``t0 + due_s(i) / time_scale`` (loadgen/client/plan.py
``trace_due``, loadgen/client/loops.py), in file order, latency counting from that scheduled
time. ``--time-scale S`` runs the schedule S times faster; ``--target-rate R`` picks S so that
the mean arrival rate is R. This module checks the file and settles the run's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile

# the time scales a replay accepts: beyond them a schedule is a burst of everything at once or
# a replay of years, and ``1e9 / scale`` (nanoseconds per trace second) leaves float range
TIME_SCALES = (1e-6, 1e6)


def check_time_scale(flag: str, scale: float) -> None:
    """ValueError (one line) unless ``scale`` lies in TIME_SCALES."""
    if not TIME_SCALES[0] <= scale <= TIME_SCALES[1]:
        raise ValueError(f"{flag} must be from {TIME_SCALES[0]:g} to {TIME_SCALES[1]:g} "
                         f"(a time scale), not {scale:g}")


@dataclass(slots=True)
class TraceSchedule:
    rows: int
    span_s: float  # last arrival - first, as recorded
    native_rate: float  # (rows - 1) / span: the trace's own mean arrival rate
    time_scale: float
    offered_rate: float  # native_rate x time_scale: what the run offers on average


def trace_schedule(prompts: PromptFile, time_scale: float | None = None,
                   target_rate: float | None = None) -> TraceSchedule:
    """The schedule of a trace prompt file; ValueError (one line) when it is not one."""
    recs = prompts.records
    missing = next((r for r in recs if r.arrival_s is None), None)
    if missing is not None:
        raise ValueError(f"--arrival trace: record {missing.id!r} has no arrival_s (build the "
                         f"file with `loadgen data build trace`)")
    for a, b in pairwise(recs):
        if b.arrival_s < a.arrival_s:  # type: ignore[operator]
            raise ValueError(f"--arrival trace: record {b.id!r} arrives before {a.id!r}: the "
                             f"records must be in arrival order")
    if time_scale is not None and target_rate is not None:
        raise ValueError("give --time-scale or --target-rate, not both")
    for flag, v in (("--time-scale", time_scale), ("--target-rate", target_rate)):
        if v is not None and not 0 < v < float("inf"):
            raise ValueError(f"{flag} must be a finite number > 0, not {v:g}")
    span = recs[-1].arrival_s - recs[0].arrival_s  # type: ignore[operator]
    native = (len(recs) - 1) / span if span > 0 else 0.0
    if target_rate is not None:
        if native <= 0:
            raise ValueError("--target-rate: the trace's requests all arrive at once; use "
                             "--time-scale")
        time_scale = target_rate / native
        if not TIME_SCALES[0] <= time_scale <= TIME_SCALES[1]:
            raise ValueError(f"--target-rate {target_rate:g} is {time_scale:.3g} times the "
                             f"trace's mean rate ({native:.4g} requests/s): the time scale "
                             f"must be from {TIME_SCALES[0]:g} to {TIME_SCALES[1]:g}")
    scale = time_scale or 1.0
    check_time_scale("--time-scale", scale)
    return TraceSchedule(rows=len(recs), span_s=span, native_rate=native, time_scale=scale,
                         offered_rate=native * scale)


def configure(cfg: RunConfig, sched: TraceSchedule, num_requests_given: bool,
              passes: int = 1) -> RunConfig:
    """The configuration of a trace run (``cfg`` with these values replaced and checked): file
    order, the time scale, the offered rate as the request rate (rate mode), no warm-up unless
    asked, every row once (``passes`` times: a capacity probe, loadgen/capacity/trace.py)
    unless --num-requests/--duration cut it, no category windows (they would break the
    schedule)."""
    load = cfg.load
    if cfg.measurement.category_windows:
        raise ValueError("--arrival trace replays the requests in trace order: "
                         "--category-windows cannot run the categories one after another")
    warmup = 0 if load.warmup_requests is None else load.warmup_requests
    left = sched.rows * passes - warmup
    if left < 1:
        raise ValueError(f"--warmup-requests {warmup} leaves none of the trace's "
                         f"{sched.rows} requests to measure")
    num_requests = load.num_requests
    if not num_requests_given:
        num_requests = left if load.duration_s is None else None
    elif num_requests is not None and num_requests > left:
        raise ValueError(f"--num-requests {num_requests}: the trace holds {left} requests "
                         f"after the warm-up")
    return cfg.replace(shuffle=False, time_scale=sched.time_scale,
                       request_rate=sched.offered_rate or float(sched.rows),
                       category_windows=False, warmup_requests=warmup,
                       num_requests=num_requests)


def describe(sched: TraceSchedule) -> str:
    return (f"trace replay: {sched.rows} requests over {sched.span_s:.1f} s "
            f"(mean {sched.native_rate:.3g} req/s) x time scale {sched.time_scale:.4g} = "
            f"{sched.offered_rate:.3g} req/s offered, over "
            f"{sched.span_s / sched.time_scale:.1f} s")
