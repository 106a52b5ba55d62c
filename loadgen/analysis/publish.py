"""From a run's scrapes to the published acceptance figures: the one call the run engine makes
after its summary is built (single process and the scale-out coordinator alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loadgen.analysis.gate import finish_acceptance
from loadgen.scrape.fleet import fleet_stats

if TYPE_CHECKING:
    from loadgen.engines.base import EngineAdapter
    from loadgen.results.summary import Summary
    from loadgen.scrape.log import CounterLog

# accumulate.py's warning when the server counted more tokens than this client received
OTHER_TRAFFIC = "other traffic shares the server"


def window_edges(window: dict, windows: list[dict] | None = None) -> list[tuple[str, str]]:
    """The scrape names that bound the measured window(s): each category window's own, else
    the window's start and its end (run end when the window includes the drain)."""
    if windows:
        return [(w["start_scrape"], w["end_scrape"]) for w in windows]
    return [("window_start", "run_end" if window.get("includes_drain") else "window_end")]


def publish(summary: Summary, counters: CounterLog, adapter: EngineAdapter,
            edges: list[tuple[str, str]]) -> None:
    """Per-replica figures (when the counters came from a fleet), then the sanity gate, the
    per-request/counter cross-check and the headline's source (analysis/gate.py)."""
    deltas = [d for a, b in edges if (d := counters.delta(a, b)) is not None]
    fleet = fleet_stats(deltas, adapter, counters.kind) if counters.fleet else None
    other = (counters.fleet or any(d.resets for d in deltas)
             or any(OTHER_TRAFFIC in w for w in summary.warnings))
    finish_acceptance(summary, fleet, other)
