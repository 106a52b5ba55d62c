"""Send lag (rate mode and trace replay): how late each request left against its schedule.

A request's send lag is ``send_ns - scheduled_ns`` of its record (docs/METRICS.md, "Send lag");
the summary keeps its distribution as ``latency_ms.schedule_lag``. Latency still counts from the
scheduled time, so a late client does not hide the server's queueing (no coordinated omission);
but a load that was not offered on time is not the load asked for, which this warning says.
"""

from __future__ import annotations

from loadgen.results.summary import Stats

# p99 send lag above this many milliseconds: the client fell behind its schedule
SEND_LAG_WARN_MS = 10.0


def send_lag_warning(lag: Stats | None) -> str | None:
    """One sentence when the p99 send lag exceeds SEND_LAG_WARN_MS, else None."""
    if lag is None or lag.p99 is None or lag.p99 <= SEND_LAG_WARN_MS:
        return None
    return (f"send lag p50 {lag.p50:.1f} ms, p99 {lag.p99:.1f} ms (max {lag.max:.1f} ms): "
            f"requests left later than scheduled (the client fell behind, or "
            f"--max-concurrency held them); the offered load was lower than scheduled, "
            f"latency still counts from the scheduled times")
