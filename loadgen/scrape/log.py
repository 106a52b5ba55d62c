"""Every counter scrape of a run, kept (facts.json) and turned into deltas: ``CounterLog``.

The scrapes' names and times in order, and each replica's reading at each of them (who
answered, its counters; None where it did not answer). ``delta(a, b)`` is each replica's delta
from snapshot ``a`` to ``b`` over its consistent segments (loadgen/scrape/fleet.py
``replica_delta``), summed over the replicas whose counters are usable: the same computation
during the run and from the run directory afterwards (loadgen/analysis/rundir.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.scrape.fleet import ReplicaDelta, replica_delta
from loadgen.scrape.sources import Reading


@dataclass(slots=True)
class Delta:
    """Counter increments from one snapshot to another, summed over the replicas whose
    counters are usable, each over its consistent segments."""

    values: dict[str, float]
    covered_s: float  # seconds of the span the kept segments cover (the least of the replicas)
    span_s: float  # seconds from the first snapshot to the last
    resets: list[tuple[str, str]] = field(default_factory=list)  # segments left out
    replicas: list[ReplicaDelta] = field(default_factory=list)  # every replica, usable or not

    @property
    def usable(self) -> bool:
        return any(r.values is not None for r in self.replicas)


@dataclass(slots=True)
class CounterLog:
    kind: str = "endpoint"  # endpoint | targets | prometheus
    names: list[tuple[str, int]] = field(default_factory=list)  # (snapshot, monotonic ns)
    # replica -> snapshot index (in ``names``) -> its reading (None: no answer)
    readings: dict[str, dict[int, Reading | None]] = field(default_factory=dict)
    snapshots: dict[str, dict[str, float]] = field(default_factory=dict)  # summed, answering

    @property
    def fleet(self) -> bool:
        """Several replicas (or a Prometheus server): per-replica figures are shown."""
        return self.kind == "prometheus" or len(self.readings) > 1

    def delta(self, a: str, b: str) -> Delta | None:
        """Increments from snapshot ``a`` to ``b``; None when either was never taken."""
        names = [n for n, _ in self.names]
        if a not in names or b not in names:
            return None
        i, j = names.index(a), names.index(b)
        span = [(k, *self.names[k]) for k in range(i, j + 1)]
        reps = [replica_delta(key, series, span) for key, series in self.readings.items()]
        total: dict[str, float] = {}
        resets: list[tuple[str, str]] = []
        covered = None
        for r in reps:
            resets.extend(r.left_out)
            if r.values is None:
                continue
            covered = r.covered_s if covered is None else min(covered, r.covered_s)
            for k, v in r.values.items():
                total[k] = total.get(k, 0.0) + v
        span_s = (span[-1][2] - span[0][2]) / 1e9
        return Delta(total, covered or 0.0, span_s, resets, reps)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "names": [list(n) for n in self.names],
                "readings": {rep: {str(i): (asdict(r) if r is not None else None)
                                   for i, r in series.items()}
                             for rep, series in self.readings.items()},
                "snapshots": self.snapshots}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CounterLog:
        if not d:
            return cls()
        return cls(kind=d.get("kind", "endpoint"),
                   names=[(str(n), int(t)) for n, t in d.get("names") or []],
                   readings={rep: {int(i): (Reading(**r) if r is not None else None)
                                   for i, r in series.items()}
                             for rep, series in (d.get("readings") or {}).items()},
                   snapshots=d.get("snapshots") or {})


def consistent(delta: Delta | None, what: str, notes: list[str]) -> dict[str, float] | None:
    """A delta's values, with a note for every replica left out (load-balanced, no answer) or
    reset; None (acceptance unavailable, with the reason) when no replica's counters are
    usable. A note already in ``notes`` is not repeated."""
    if delta is None:
        return None
    single = len(delta.replicas) == 1
    for r in delta.replicas:
        for line in r.notes(what, single):
            if line not in notes:
                notes.append(line)
    if not delta.usable:
        return None
    return delta.values
