"""What a run needs from its records without keeping them in memory (``RecordTally``), and
the measurement window's drain rule (``window_bounds``); used by the run's workers and its
coordinator (loadgen/run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class RecordTally:
    """What the run needs from its records without keeping them: measured requests and their
    events, the first ok record, the highest index, the last measured end (overall and per
    category: the window's drain rule)."""

    measured: int = 0
    events: int = 0
    first_ok: dict[str, Any] | None = None
    max_index: int | None = None
    last_end_ns: int | None = None
    last_end_by_cat: dict[str, int] = field(default_factory=dict)

    def add(self, d: dict[str, Any]) -> None:
        if self.first_ok is None and d.get("status") == "ok":
            self.first_ok = d
        if "index" in d and (self.max_index is None or d["index"] > self.max_index):
            self.max_index = d["index"]
        if d["warmup"]:
            return
        self.measured += 1
        self.events += d["events"]
        if self.last_end_ns is None or d["end_ns"] > self.last_end_ns:
            self.last_end_ns = d["end_ns"]
        cat = d.get("category")
        if cat is not None and d["end_ns"] > self.last_end_by_cat.get(cat, -1):
            self.last_end_by_cat[cat] = d["end_ns"]


def window_bounds(start: int, end: int, last_end_ns: int | None) -> dict[str, Any]:
    """The window [start, end]; when the sending took under a fifth of the time to the last
    measured end (everything sent at once, n <= concurrency, or an open loop far above what
    the server serves, its backlog draining long after) there is no steady state to isolate:
    the window runs to the last measured end and includes the drain."""
    includes_drain = False
    if last_end_ns is not None and end - start < 0.2 * (last_end_ns - start):
        end = last_end_ns
        includes_drain = True
    return {"start_ns": start, "end_ns": end, "includes_drain": includes_drain}
