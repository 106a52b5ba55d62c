"""A capacity search over a trace's time scale (``loadgen capacity --arrival trace``;
docs/METRICS.md, "Capacity search", "Time-scale capacity").

The level of the search is the **time scale** S: the trace's schedule runs S times faster
(loadgen/client/trace.py), so the offered mean rate is S x the trace's native mean rate. Every
probe replays the same **slice** (the file's first ``--num-requests`` rows, default all of them)
from its first row, in **whole passes** of it: one pass, or more back to back when one pass at S
would be shorter than a probe should be (``min_seconds`` of schedule, ``MIN_REQUESTS``
requests). A further pass continues one mean gap after the last row (plan.trace_due), so the
probe holds the slice's shape a whole number of times and never a cut-off part of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loadgen.capacity.probe import MIN_REQUESTS, RATE_SECONDS
from loadgen.client.trace import TraceSchedule, configure, trace_schedule
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile


@dataclass(slots=True)
class TraceProbe:
    """How long the probe at one time scale is."""

    time_scale: float
    passes: int  # whole replays of the slice
    requests: int  # measured: passes x rows - the warm-up
    schedule_s: float  # the probe's scheduled length: passes x period / S
    offered_rate: float  # native mean rate x S (requests/s)


@dataclass(slots=True)
class TraceSlice:
    """The slice every probe replays, and its schedule at time scale 1."""

    prompts: PromptFile  # the slice's records only
    schedule: TraceSchedule
    warmup: int  # warm-up requests: the slice's first rows of the first pass
    min_seconds: float = RATE_SECONDS

    @property
    def rows(self) -> int:
        return len(self.prompts.records)

    @property
    def native_rate(self) -> float:
        return self.schedule.native_rate

    @property
    def period_s(self) -> float:
        """One pass at time scale 1: the span plus one mean gap (where the next pass starts)."""
        n = self.rows
        return self.schedule.span_s * n / (n - 1)

    def probe(self, time_scale: float) -> TraceProbe:
        passes = max(1, math.ceil(self.min_seconds * time_scale / self.period_s - 1e-9),
                     math.ceil((MIN_REQUESTS + self.warmup) / self.rows))
        return TraceProbe(time_scale, passes, passes * self.rows - self.warmup,
                          passes * self.period_s / time_scale, self.native_rate * time_scale)

    def settle(self, cfg: RunConfig, time_scale: float) -> tuple[RunConfig, TraceProbe]:
        """``cfg`` (built with the probe's other options) made the replay at ``time_scale``,
        and the probe's length."""
        p = self.probe(time_scale)
        cfg = configure(cfg.replace(warmup_requests=self.warmup),
                        trace_schedule(self.prompts, time_scale=time_scale), False,
                        passes=p.passes)
        return cfg, p

    def describe(self) -> str:
        return (f"trace slice: {self.rows} requests over {self.schedule.span_s:.4g} s, mean "
                f"{self.native_rate:.4g} requests/s at time scale 1; each probe replays it "
                f"whole, again as needed to last {self.min_seconds:g} s and hold "
                f"{MIN_REQUESTS} requests")


def trace_slice(prompts: PromptFile, num_requests: int | None, warmup: int | None,
                min_seconds: float | None) -> TraceSlice:
    """The slice of a trace prompt file; ValueError (one line) when it cannot be searched."""
    recs = prompts.records
    if num_requests is not None:
        if num_requests > len(recs):
            raise ValueError(f"--num-requests {num_requests}: the trace holds only "
                             f"{len(recs)} requests")
        recs = recs[:num_requests]
    sliced = PromptFile(header=prompts.header, records=list(recs))
    sched = trace_schedule(sliced)  # every row has arrival_s, in order
    if len(recs) < 2 or sched.native_rate <= 0:
        raise ValueError("--arrival trace: the slice's requests all arrive at once (or there "
                         "is only one): it has no schedule whose time scale could be searched")
    w = warmup or 0
    if w >= len(recs):
        raise ValueError(f"--warmup-requests {w} leaves none of the slice's {len(recs)} "
                         "requests to measure")
    if min_seconds is not None and not 0 < min_seconds < math.inf:
        raise ValueError("--duration must be a number of seconds > 0")
    return TraceSlice(sliced, sched, w, min_seconds or RATE_SECONDS)
