"""The sanity gate on every published acceptance figure, the per-request/counter cross-check,
and the headline AL's source (docs/METRICS.md, "The acceptance gate").

A figure that cannot be true is withheld (set to None) with its reason, never printed:

- a rate (acceptance rate, per-position and conditional rates) outside [0, 1];
- an AL below 1, or above K + 1 when K (draft tokens per draft) is known;
- a negative count (drafts, draft tokens, accepted tokens).

The gate runs where the summary is made (``finish_acceptance``), so summary.json, the console,
the report, ``loadgen compare`` and sweeps read gated figures only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from loadgen.results.fleet import FleetStats
from loadgen.results.summary import AcceptanceSummary, Summary

# the cross-check's tolerance: this relative difference for requests cut by the window edges,
CROSS_CHECK_EDGE = 0.02
# plus this many standard errors of the counters' AL (accepted tokens per verify step lie in
# [0, K]: their standard deviation is at most K/2, over ``drafts`` steps)
CROSS_CHECK_SIGMAS = 3.0
_RATES = ("acceptance_rate", "per_position_rate", "conditional_rate")
_COUNTS = ("drafts", "draft_tokens", "accepted_tokens")


def draft_k(acc: Any) -> float | None:
    """K, the draft tokens per draft, from the figures themselves: the per-position list's
    length, else draft tokens / drafts (None when neither is known)."""
    per_pos = getattr(acc, "per_position_rate", None)
    if per_pos:
        return float(len(per_pos))
    drafts, tokens = getattr(acc, "drafts", None), getattr(acc, "draft_tokens", None)
    if drafts and tokens and drafts > 0 and tokens > 0:
        return math.ceil(tokens / drafts - 1e-9)
    return None


def _bad_rate(v: Any) -> bool:
    vals = v if isinstance(v, list) else [v]
    return any(x is not None and not (0.0 <= x <= 1.0) for x in vals)


def gate(obj: Any, k: float | None, al_fields: Sequence[str] = ("acceptance_length",)
         ) -> dict[str, str]:
    """Withhold (set to None) each of ``obj``'s acceptance figures that cannot be true; returns
    {figure: reason}. ``obj``: an AcceptanceSummary, CategoryStats or ReplicaStats."""
    out: dict[str, str] = {}
    for name in _COUNTS:
        v = getattr(obj, name, None)
        if v is not None and v < 0:
            out[name] = f"{name} {v:g} is negative"
    for name in _RATES:
        v = getattr(obj, name, None)
        if v is not None and _bad_rate(v):
            shown = ", ".join(f"{x:.3f}" for x in (v if isinstance(v, list) else [v]))
            out[name] = f"{name} [{shown}] has a rate outside [0, 1]"
    for name in al_fields:
        v = getattr(obj, name, None)
        if v is None:
            continue
        if v < 1.0:
            out[name] = f"{name} {v:.3f} is below 1"
        elif k is not None and v > k + 1 + 1e-9:
            out[name] = f"{name} {v:.3f} is above K + 1 = {k + 1:g}"
    if out and any(n in out for n in _COUNTS):  # a negative count spoils every ratio of it
        for name in (*_RATES, *al_fields):
            if getattr(obj, name, None) is not None and name not in out:
                out[name] = "computed from a negative count"
    for name in out:
        setattr(obj, name, None)
    return out


def cross_check(counter_al: float | None, per_request_al: float | None,
                drafts: float | None, k: float | None) -> str | None:
    """A warning when the per-request AL and the counters' AL differ by more than the
    tolerance (CROSS_CHECK_EDGE relative + CROSS_CHECK_SIGMAS standard errors), with both."""
    if counter_al is None or per_request_al is None or not drafts or drafts <= 0:
        return None
    kk = k if k is not None else max(1.0, 2.0 * (counter_al - 1.0))
    tol = CROSS_CHECK_EDGE * per_request_al + CROSS_CHECK_SIGMAS * (kk / 2) / math.sqrt(drafts)
    diff = abs(counter_al - per_request_al)
    if diff <= tol:
        return None
    return (f"the server counters' AL {counter_al:.3f} and the per-request AL "
            f"{per_request_al:.3f} differ by {diff:.3f}, more than the tolerance {tol:.3f}: "
            f"the counters cover other requests (other traffic, other replicas, window "
            f"edges) or one source is wrong; the headline uses the per-request figure")


def finish_acceptance(summary: Summary, fleet: FleetStats | None, other_requests: bool
                      ) -> None:
    """Gate every acceptance figure of ``summary`` (the run's, each category's, each
    replica's), cross-check per-request against counters, and set the headline AL and its
    source: the per-request figure when it exists and the counters cover another set of
    requests (``other_requests``: a fleet, foreign traffic, left-out segments) or disagree;
    else the counters' figure."""
    acc: AcceptanceSummary = summary.acceptance
    k = draft_k(acc)
    withheld = gate(acc, k)
    pr = acc.per_request
    pr_out = gate(pr, k, ("token_weighted", "request_weighted"))
    withheld.update({f"per_request.{n}": r for n, r in pr_out.items()})
    acc.withheld = withheld or None
    for cs in summary.categories.values():
        cout = gate(cs, k, ("acceptance_length", "acceptance_length_request_weighted",
                            "window_acceptance_length"))
        if cout:
            cs.withheld = cout
            if "acceptance_length" in cout:
                cs.acceptance_source = None
    if fleet is not None:
        for rs in fleet.replicas or []:
            rout = gate(rs, draft_k(rs) or k)
            rs.withheld = rout or None
        summary.fleet = fleet
    for figure, reason in withheld.items():
        summary.warnings.append(f"{figure} withheld by the sanity gate: {reason}")
    warn = cross_check(acc.acceptance_length, pr.token_weighted, acc.drafts, k)
    if warn:
        summary.warnings.append(warn)
    if pr.token_weighted is not None and (acc.acceptance_length is None or other_requests
                                          or warn):
        acc.headline, acc.headline_source = pr.token_weighted, "per_request"
    elif acc.acceptance_length is not None:
        acc.headline, acc.headline_source = acc.acceptance_length, acc.source
    for name, cs in summary.categories.items():
        if cs.withheld:
            summary.warnings.append(f"category {name}: " + "; ".join(
                f"{f} withheld by the sanity gate: {r}" for f, r in cs.withheld.items()))


def gated_counters(acc: dict[str, Any]) -> tuple[AcceptanceSummary, dict[str, str]]:
    """summary.json's ``acceptance`` section read back through the gate (a file written before
    the gate existed may hold an impossible figure): the gated figures and every withheld
    one's reason, those the file already withheld included."""
    out = Summary.from_dict({"acceptance": acc}).acceptance
    reasons = dict(out.withheld or {})
    reasons.update(gate(out, draft_k(out)))
    return out, reasons
