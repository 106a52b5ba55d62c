"""Over-saturation: a step whose queue grows without bound is cut short (docs/METRICS.md,
"Over-saturation").

A watcher thread reads the probe's ``requests.jsonl`` as records are appended (each request's
line is written when it ends) and looks at TTFT against the time each request was scheduled. On a
server that keeps up, TTFT is stationary; past its capacity in open loop every arrival waits for
the backlog ahead of it, which grows by (arrival rate − service rate) per second, so TTFT grows
linearly with the arrival time at slope ρ − 1. The step is over-saturated when, over the measured
requests ended so far (at least ``min_records``):

- the least-squares slope of TTFT (s) against scheduled time (s) is above ``min_slope``, and
- the median TTFT of the later half of those requests is above ``growth`` × the earlier half's,
- and the halves' median arrival times lie at least ``min_apart_s`` apart (a burst of arrivals
  within a moment of each other tells nothing about a trend).

Only open-loop probes are watched: a closed loop cannot queue without bound (at most the
concurrency is ever outstanding).
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

MIN_RECORDS = 16
MIN_SLOPE = 0.2  # seconds of TTFT per second of arrivals: utilisation above ~1.2
GROWTH = 2.0
MIN_APART_S = 0.5
POLL_S = 0.25


@dataclass(slots=True)
class Saturation:
    slope: float  # TTFT seconds per second of arrival time
    early_ttft_ms: float
    late_ttft_ms: float
    records: int

    def describe(self) -> str:
        return (f"over-saturated: TTFT grows {self.slope:.2f} s per s of arrivals, median "
                f"{self.early_ttft_ms:.0f} -> {self.late_ttft_ms:.0f} ms over "
                f"{self.records} requests")


def saturation(records: list[dict[str, Any]], min_records: int = MIN_RECORDS,
               min_slope: float = MIN_SLOPE, growth: float = GROWTH,
               min_apart_s: float = MIN_APART_S) -> Saturation | None:
    """The test above on the records ended so far (any order); None when not saturated."""
    pts = sorted(((r["scheduled_ns"] or r["send_ns"]) / 1e9,
                  (r["first_token_ns"] - (r["scheduled_ns"] or r["send_ns"])) / 1e9)
                 for r in records
                 if not r["warmup"] and r["status"] == "ok" and r["first_token_ns"])
    if len(pts) < min_records:
        return None
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx <= 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    half = len(ys) // 2
    early, late = statistics.median(ys[:half]), statistics.median(ys[half:])
    apart = statistics.median(xs[half:]) - statistics.median(xs[:half])
    if slope > min_slope and late > growth * early and apart >= min_apart_s:
        return Saturation(slope, early * 1e3, late * 1e3, len(pts))
    return None


class SaturationWatch:
    """``with SaturationWatch(path, cut): run`` — calls ``cut(saturation)`` once, from its own
    thread, when the records under ``path`` show over-saturation (or whatever ``test``, given
    the records ended so far, returns other than None: a trace probe's decided verdict,
    loadgen/capacity/slo.py ``decided_failure``)."""

    def __init__(self, path: Path, cut: Callable[[Any], None],
                 poll_s: float = POLL_S,
                 test: Callable[[list[dict[str, Any]]], Any] = saturation) -> None:
        self.path, self.cut, self.poll_s, self.test = path, cut, poll_s, test
        self.found: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="saturation", daemon=True)
        self._records: list[dict[str, Any]] = []
        self._pos = 0
        self._partial = b""

    def __enter__(self) -> SaturationWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                chunk = fh.read()
        except FileNotFoundError:
            return
        self._pos += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            if line.strip():
                self._records.append(orjson.loads(line))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._read_new()
            found = self.test(self._records)
            if found is not None:
                self.found = found
                self.cut(found)
                return
