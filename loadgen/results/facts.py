"""facts.json: what a run observed that its records do not hold, saved so that its summary is a
pure function of the run directory (``loadgen.analysis.rundir.summarize_run``).

The measurement windows with their edges (coordinator clock) and the scrapes that bound them,
every counter scrape in order, each records file's clock offset, the client's and the host's
statistics over the window, the prefix-cache policy, the telemetry exporters' samples, and the
run's own warnings. Written once
the run has ended (or on a second interrupt, as far as the run got)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.results.files import read_json, write_json
from loadgen.results.summary import ClientStats, HostStats, as_plain, from_plain
from loadgen.results.telemetry import TargetSamples

FACTS_FILE = "facts.json"


@dataclass(slots=True)
class WindowFacts:
    """A measurement window on the coordinator's clock. ``includes_drain``: nothing was left
    to isolate a steady state from (every request sent at once), so the window runs to the
    last measured end. ``category``: a category window's category (None: the run's one
    window). ``start_scrape`` / ``end_scrape``: the counter snapshots at its edges."""

    start_ns: int = 0
    end_ns: int = 0
    includes_drain: bool = False
    category: str | None = None
    start_scrape: str | None = None
    end_scrape: str | None = None

    def edges(self) -> dict[str, Any]:
        return {"start_ns": self.start_ns, "end_ns": self.end_ns,
                "includes_drain": self.includes_drain, "category": self.category}


@dataclass(slots=True)
class RecordsFile:
    """One records file and the clock of the worker that wrote it: worker clock =
    coordinator clock + ``clock_offset_ns`` (within ``clock_error_ns``)."""

    file: str
    clock_offset_ns: int = 0
    clock_error_ns: int = 0
    clock: str = "shared"  # shared (same host) | probe (Cristian's algorithm)
    node: str = "local"
    died: str | None = None


@dataclass(slots=True)
class RunFacts:
    windows: list[WindowFacts] = field(default_factory=list)
    category_windows: bool = False
    # every counter scrape: loadgen/scrape/log.py CounterLog.to_dict()
    counters: dict[str, Any] | None = None
    records: list[RecordsFile] = field(default_factory=list)
    client: ClientStats | None = None
    host: HostStats | None = None
    prefix_cache_policy: str | None = None
    token_count_source: str | None = None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    failure: str | None = None
    # a second interrupt: the summary of the records as they were, without server counters
    partial: bool = False
    telemetry: list[TargetSamples] | None = None  # --telemetry exporters' samples

    def to_dict(self) -> dict[str, Any]:
        return as_plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunFacts:
        return from_plain(cls, d)


def write_facts(run_dir: Path, facts: RunFacts) -> None:
    write_json(run_dir / FACTS_FILE, facts.to_dict())


def read_facts(run_dir: Path) -> RunFacts:
    return RunFacts.from_dict(read_json(run_dir / FACTS_FILE))
