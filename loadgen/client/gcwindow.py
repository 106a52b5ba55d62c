"""Garbage collection inside the timed window: no pause over the whole heap, bounded memory.

Everything alive when the window opens is frozen (``gc.freeze``: never scanned again) and the
collector stays on for what the window allocates, so its collections scan only recent objects
(the young generation: tens of µs) and each request's cyclic garbage (a closed connection keeps
its stream state in a reference cycle) is freed as the run goes. Disabling the collector for the
window instead grows a worker by ~4 KB per 256-token request: 400 MB at 50,000
requests (scripts/bench_scale.py), unbounded for longer runs.

An open loop (client/loops.py) also holds the automatic collector while it sends and runs the
same collections itself in the gaps between due times (``hold``, ``collect_due``, ``release``).
"""

from __future__ import annotations

import gc


def open_window() -> bool:
    """Collect once (outside the window), freeze the survivors, keep the collector on.
    Returns whether it was enabled before (for ``close_window``)."""
    was = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.enable()
    return was


def close_window(was_enabled: bool) -> None:
    gc.unfreeze()
    if not was_enabled:
        gc.disable()


# An open loop holds the automatic collector while it sends on a schedule and runs the
# collections itself, where nothing is due for a while: a young-generation collection takes
# ~0.3-1.5 ms of CPU with a few thousand requests' objects alive, which delays every send
# due at that moment when it starts at an allocation just before one.
GAP_NS = 5_000_000  # a collection runs when the next send is at least this far off
OVERDUE = 10  # x the young generation's threshold: collected anyway (no gap came: memory)


def hold() -> bool:
    """The automatic collector off; returns whether it was on (for ``release``)."""
    was = gc.isenabled()
    gc.disable()
    return was


def collect_due(overdue_only: bool = False) -> int | None:
    """Run the collection the automatic collector would have run by now (the youngest
    generation past its threshold and the older ones whose turn it is), or with
    ``overdue_only`` only once allocations are OVERDUE x past the threshold. Returns the
    generation collected, or None."""
    counts, limits = gc.get_count(), gc.get_threshold()
    if counts[0] <= limits[0] * (OVERDUE if overdue_only else 1):
        return None
    # the collector's own choice: the oldest generation past its threshold
    gen = next(g for g in (2, 1, 0) if counts[g] > limits[g])
    gc.collect(gen)
    return gen


def release(was_enabled: bool) -> None:
    if was_enabled:
        gc.enable()
