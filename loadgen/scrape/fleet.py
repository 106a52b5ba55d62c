"""A fleet's counters: each replica's delta over a window, and each replica's figures.

``replica_delta`` is the one definition of a replica's counter delta (its consistent segments,
its identity check); loadgen.client.scrape sums them. ``fleet_stats`` turns the window's
deltas into summary.json's ``fleet`` section (docs/METRICS.md, "Fleets").
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loadgen.results.fleet import FleetStats, ReplicaStats
from loadgen.scrape.identity import changes

if TYPE_CHECKING:
    from loadgen.engines.base import EngineAdapter
    from loadgen.scrape.sources import Reading

FIX = ("give --metrics once per replica (or a DNS name that resolves to each), or "
       "--metrics prometheus+http://HOST:9090 with --metrics-selector")


@dataclass(slots=True)
class ReplicaDelta:
    """One replica's increments over a window. ``values`` None: not usable (``status``)."""

    name: str
    values: dict[str, float] | None
    status: str = "ok"  # ok | no answer | load-balanced | reset
    covered_s: float = 0.0
    span_s: float = 0.0
    left_out: list[tuple[str, str]] = field(default_factory=list)  # segments that went back
    restarts: int = 0  # restarts inside the window (identity changed, counters from zero)
    missing_at: list[str] = field(default_factory=list)  # edges it did not answer
    identity: str | None = None
    identities: list[str] = field(default_factory=list)  # who answered, in order (switches)
    identity_known: bool = False

    def notes(self, what: str, single: bool) -> list[str]:
        """The lines the summary's warnings carry for this replica over ``what``."""
        who = "" if single else f" from {self.name}"
        if self.status == "load-balanced":
            shown = ", ".join(self.identities[:3]) + (", ..." if len(self.identities) > 3
                                                      else "")
            return [f"server counters{who or ' from ' + self.name} were answered by different "
                    f"processes from one scrape to the next ({shown}): a load balancer spreads "
                    f"this metrics URL over several replicas, so every counter figure from it "
                    f"is withheld (this is not a restart); {FIX}"]
        if self.status == "no answer":
            if single:
                return []  # the scrape's own warning says it
            return [f"metrics target {self.name} did not answer at "
                    f"{', '.join(self.missing_at)}: its counters are left out of the {what}; "
                    f"the other replicas' are summed"]
        if not self.left_out:
            return []
        where = ", ".join(f"{a} -> {b}" for a, b in self.left_out)
        cause = ("the server restarted" if self.identity_known else
                 "the server restarted? or this URL reaches several replicas: " + FIX)
        if self.values is None:
            return [f"server counters{who} went backwards over the {what} (between scrapes "
                    f"{where}: {cause}); counter deltas and acceptance unavailable"]
        return [f"server counters{who} went backwards over the {what} (between scrapes "
                f"{where}: {cause}); counter deltas and acceptance use only the consistent "
                f"segments, {self.covered_s:.1f} s of {self.span_s:.1f} s"]


def replica_delta(name: str, series: dict[int, Reading | None],
                  span: Sequence[tuple[int, str, int]]) -> ReplicaDelta:
    """A replica's delta over ``span`` (the run's snapshots from the window's first to its
    last: index, name, monotonic ns). ``series``: every reading the replica gave in the run,
    by snapshot index (None: no answer). Its counters are withheld for the whole run when its
    identity switched (loadgen/scrape/identity.py); a segment in which a counter went
    backwards (a restart) is left out, the others summed."""
    run = [(r.identity, r.start_time, r.counters)
           for _, r in sorted(series.items()) if r is not None]
    _, switches = changes(run)
    ids = list(dict.fromkeys(i for i, _, _ in run if i is not None))
    known = any(i is not None for i, _, _ in run)
    (ia, a, t_a), (ib, b, t_b) = span[0], span[-1]
    out = ReplicaDelta(name, None, span_s=(t_b - t_a) / 1e9, identity_known=known,
                       identities=ids)
    last = series.get(ib)
    out.identity = last.identity if last is not None else None
    if switches:
        out.status = "load-balanced"
        return out
    missing = [n for i, n in ((ia, a), (ib, b)) if series.get(i) is None]
    if missing:
        out.status, out.missing_at = "no answer", missing
        return out
    snaps = [(n, t, r) for i, n, t in span if (r := series.get(i)) is not None]
    total: dict[str, float] = {}
    covered = 0
    for (n0, t0, x), (n1, t1, y) in itertools.pairwise(snaps):
        if y.identity != x.identity and x.identity is not None:
            out.restarts += 1
        if any(y.counters.get(k, 0.0) < v for k, v in x.counters.items()):
            out.left_out.append((n0, n1))
            continue
        covered += t1 - t0
        for k, v in y.counters.items():
            total[k] = total.get(k, 0.0) + v - x.counters.get(k, 0.0)
    out.restarts += snaps[-1][2].resets - snaps[0][2].resets  # handled by the source
    if not known:  # no identity: each segment that went backwards counts as one restart
        out.restarts += len(out.left_out)
    out.covered_s = covered / 1e9
    if out.left_out and len(out.left_out) == len(snaps) - 1:
        out.status = "reset"
        return out
    out.values = total
    return out


def fleet_stats(deltas: Sequence[object], adapter: EngineAdapter, kind: str) -> FleetStats:
    """Each replica's figures over the window(s): its deltas summed over ``deltas`` (one per
    category window, else one), its acceptance by the engine's own formulas, its share of the
    fleet's drafted tokens."""
    reps: dict[str, ReplicaStats] = {}
    sums: dict[str, dict[str, float]] = {}
    unanswered: list[str] = []
    withheld: list[str] = []
    for d in deltas:
        for r in getattr(d, "replicas", []):
            rs = reps.setdefault(r.name, ReplicaStats(name=r.name))
            rs.identity = r.identity or rs.identity
            rs.resets += r.restarts
            if r.values is None:
                rs.status = r.status
                if r.status == "no answer" and r.name not in unanswered:
                    unanswered.append(r.name)
                if r.status == "load-balanced" and r.name not in withheld:
                    withheld.append(r.name)
                continue
            acc = sums.setdefault(r.name, {})
            for k, v in r.values.items():
                acc[k] = acc.get(k, 0.0) + v
    drafted = sum(v.get("draft_tokens", 0.0) for n, v in sums.items()
                  if reps[n].status == "ok")
    for name, rs in reps.items():
        values = sums.get(name)
        if values is None or rs.status != "ok":
            continue
        a = adapter.acceptance(values)
        rs.generation_tokens = values.get("generation_tokens")
        if a is not None:
            rs.acceptance_length, rs.acceptance_rate = a.acceptance_length, a.acceptance_rate
            rs.per_position_rate = a.per_position_rate
            rs.drafts, rs.draft_tokens, rs.accepted_tokens = (a.drafts, a.draft_tokens,
                                                              a.accepted_tokens)
        if drafted > 0 and "draft_tokens" in values:
            rs.drafted_share = values["draft_tokens"] / drafted
    return FleetStats(source=kind, replicas=list(reps.values()), unanswered=unanswered,
                      withheld=withheld)
