"""Who answered a scrape, and whether a change of answerer was a restart or a load balancer.

The identity of a process serving Prometheus text is its ``process_start_time_seconds`` (the
prometheus_client process collector: vLLM with one API server serves its default registry, the
synthetic vLLM likewise). vLLM with several API servers and SGLang (a registry holding only the
multiprocess collector), llama.cpp and TRT-LLM serve no process metric: their identity is
unknown and a counter that goes backwards stays ambiguous (a restart, or a load-balanced URL).
Through Prometheus, a replica's identity is its ``instance`` label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_START = re.compile(rb"^process_start_time_seconds(?:\{[^}]*\})?\s+(\S+)", re.MULTILINE)


def start_time(text: bytes) -> float | None:
    """The answering process's start time (seconds since the epoch) from exposition text."""
    m = _START.search(text)
    if m is None:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def identity_of(start: float | None) -> str | None:
    return None if start is None else f"process started {start:.3f}"


def changes(readings: Sequence[tuple[str | None, float | None, dict[str, float]]]
            ) -> tuple[list[int], list[int]]:
    """Where the identity behind one URL changed over its consecutive readings (identity, start
    time, counters): (restarts, switches), as indices of the reading after the change.

    A change is a **restart** when the new process started after the old one, was never seen
    before on this URL, and its counters started again from zero (some went backwards); any
    other change is a **switch**: the URL reaches several processes (a load balancer). One
    replica that answers after another and then again is always a switch: a restarted
    process never comes back with its old start time."""
    restarts: list[int] = []
    switches: list[int] = []
    seen: set[str] = set()
    prev: tuple[str | None, float | None, dict[str, float]] | None = None
    for i, cur in enumerate(readings):
        ident, start, counters = cur
        if ident is not None and prev is not None and prev[0] is not None and ident != prev[0]:
            later = start is not None and prev[1] is not None and start > prev[1]
            from_zero = any(v < prev[2].get(k, 0.0) for k, v in counters.items())
            if later and ident not in seen and from_zero:
                restarts.append(i)
            else:
                switches.append(i)
        if ident is not None:
            seen.add(ident)
        prev = cur
    return restarts, switches
