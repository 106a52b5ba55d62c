"""The client's own health over the window: event-loop lag and CPU per event.

High lag means the client, not the server, delays the timestamps (wrk2's and HdrHistogram's
lesson: measure the measurer)."""

from __future__ import annotations

import asyncio
import time

from loadgen.analysis.metrics import stats
from loadgen.results.summary import ClientStats

_now_ns = time.monotonic_ns


class LagMonitor:
    """How late a 5 ms timer fires. A bare timer callback (no task, no future) costs a few µs a
    tick."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval = interval_s
        self._interval_ns = int(interval_s * 1e9)
        self.lags_ms: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0

    def _tick(self) -> None:
        now = _now_ns()
        self.lags_ms.append(max(0, now - self._due) / 1e6)
        self._due = now + self._interval_ns
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def start(self) -> None:
        self._due = _now_ns() + self._interval_ns
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def client_stats(cpu_s: float, lags_ms: list[float], events: int, measured: int,
                 threshold_ms: float) -> ClientStats:
    """CPU per event and per request over the ``measured`` requests (``events`` stream events);
    lag statistics; overloaded when the lag p99 is above the threshold."""
    lag = stats(lags_ms)
    return ClientStats(
        cpu_s=cpu_s,
        cpu_us_per_event=cpu_s * 1e6 / events if events else None,
        cpu_ms_per_request=cpu_s * 1e3 / measured if measured else None,
        loop_lag_ms=lag,
        lag_threshold_ms=threshold_ms,
        overloaded=(lag.p99 or 0.0) > threshold_ms,
    )
