"""summary.json's ``fleet`` section: each replica's counter figures over the window
(docs/METRICS.md, "Fleets"). Written when the counters came from several replicas or from a
Prometheus server; absent for one ``<endpoint>/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReplicaStats:
    """One replica's counters over the window. ``status``: ``ok``; ``no answer`` (it did not
    answer at an edge: left out of the sums); ``load-balanced`` (several processes answered
    its URL: withheld); ``reset`` (its counters went backwards in every segment)."""

    name: str = ""
    status: str = "ok"
    identity: str | None = None  # who answered at the window's end
    acceptance_length: float | None = None
    acceptance_rate: float | None = None
    per_position_rate: list[float] | None = None
    drafted_share: float | None = None  # its share of the fleet's drafted tokens
    drafts: float | None = None
    draft_tokens: float | None = None
    accepted_tokens: float | None = None
    generation_tokens: float | None = None
    resets: int = 0  # restarts (new process, counters from zero) inside the window
    withheld: dict[str, str] | None = None  # figure -> why the sanity gate withheld it


@dataclass(slots=True)
class FleetStats:
    source: str = "targets"  # targets (URLs, DNS-expanded) | prometheus | endpoint
    replicas: list[ReplicaStats] | None = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)  # replicas left out: no answer
    withheld: list[str] = field(default_factory=list)  # URLs withheld: load-balanced
