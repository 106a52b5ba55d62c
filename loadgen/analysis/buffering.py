"""Is the stream buffered upstream? (docs/METRICS.md, "Buffered stream")

A server streams one event per step (or one per token, all written together, for servers that
split a step's tokens into events). A proxy that buffers the response (nginx's default
``proxy_buffering on``) passes it on in buffer-sized bursts instead, so the client reads many
events at once and TTFT/ITL describe the proxy, not the engine. Events that arrive in the same
read share one arrival stamp, so reads per request are its distinct stamps.
"""

from __future__ import annotations

from typing import Any

MIN_EVENTS = 8  # requests with fewer token events say too little
BURST_FACTOR = 4.0  # a read this many times a server step's events is a buffered burst
MIN_STEP_EVENTS = 2.0  # a step's events when acceptance length is unknown or below 2


def events_per_read(rec: dict[str, Any]) -> float | None:
    arrivals = rec.get("arrivals_ns") or []
    if len(arrivals) < MIN_EVENTS:
        return None
    return len(arrivals) / len(set(arrivals))


def buffered_stream_warning(median_events_per_read: float | None,
                            acceptance_length: float | None) -> str | None:
    """A warning when the median ok measured request's events per read (``events_per_read``;
    None when no request says enough) is at least BURST_FACTOR times the events one server step
    can produce (max(acceptance length, 2)), else None. The median comes from the streamed
    records (loadgen.analysis.accumulate)."""
    if median_events_per_read is None:
        return None
    step = max(acceptance_length or 0.0, MIN_STEP_EVENTS)
    med = median_events_per_read
    if med < BURST_FACTOR * step:
        return None
    return (f"the stream is buffered upstream: a median of {med:.1f} events arrived per read, "
            f"far more than one server step gives (~{step:.1f}); a proxy or gateway holds the "
            "response back, so TTFT and ITL describe the proxy, not the engine "
            "(nginx: proxy_buffering off)")
