"""The request plan: which prompt request i sends, a pure function of (prompts, seed, i).

Pure so that several worker processes can share one run: worker k of N takes the indices with
i % N == k and every worker agrees on what index i is.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from loadgen.data.prompts import PromptFile, PromptRecord


@dataclass(slots=True)
class Item:
    """Request ``index`` of the run: its prompt, and whether it is a warm-up request."""

    index: int
    prompt: PromptRecord
    warmup: bool
    # trace replay (records with arrival_s, in file order): seconds after the phase's first
    # request (the warm-up's or the measured one's) at which this one is due, unscaled
    due_s: float | None = None


def iter_items(prompts: PromptFile, seed: int, warmup: int, shuffle: bool, worker: int = 0,
               workers: int = 1) -> Iterator[Item]:
    """Endless: the prompts in a seeded shuffled order, reshuffled on every pass; the first
    ``warmup`` items are warm-up requests. With ``workers`` > 1, only worker ``worker``'s share:
    the items whose index i has i % workers == worker (the same items, same indices)."""
    return iter_records(prompts.records, seed, warmup, shuffle, 0, worker, workers)


def iter_records(records: list[PromptRecord], seed: int, warmup: int, shuffle: bool,
                 start: int = 0, worker: int = 0, workers: int = 1) -> Iterator[Item]:
    """``iter_items`` over some records (one category's, in category windows), numbering the
    requests from ``start``. Records that carry ``arrival_s`` and are not shuffled (a trace)
    give each item its ``due_s`` (trace_due)."""
    rng = random.Random(seed)
    due = trace_due(records, warmup) if not shuffle else None
    i = 0
    while True:
        order = list(records)
        if shuffle:
            rng.shuffle(order)
        for p in order:
            if (start + i) % workers == worker:
                yield Item(start + i, p, warmup=i < warmup,
                           due_s=due(i) if due is not None else None)
            i += 1


def trace_due(records: list[PromptRecord], warmup: int):
    """i -> seconds after its phase's first request at which request i is due: the warm-up
    phase (i < warmup) counts from record 0's arrival, the measured one from record
    ``warmup``'s. A further pass over the records continues one mean gap after the last.
    None when the records carry no ``arrival_s``."""
    if not records or any(r.arrival_s is None for r in records):
        return None
    n = len(records)
    first, last = records[0].arrival_s, records[-1].arrival_s
    assert first is not None and last is not None
    period = (last - first) * n / (n - 1) if n > 1 and last > first else float(n)
    base_measured = records[min(warmup, n - 1)].arrival_s
    assert base_measured is not None

    def due(i: int) -> float:
        passes, k = divmod(i, n)
        at = records[k].arrival_s + passes * period  # type: ignore[operator]
        return max(0.0, at - (first if i < warmup else base_measured))

    return due


def share_count(total: int, worker: int, workers: int, first: int = 0) -> int:
    """How many of the indices first .. first+total-1 are worker ``worker``'s (i % workers)."""
    return len(range((worker - first) % workers + first, first + total, workers))


def split_by_category(records: list[PromptRecord], total: int | None
                      ) -> list[tuple[str, list[PromptRecord], int | None, float]]:
    """Category windows: (category, its records, its measured requests, its share) per
    category in name order. ``total`` measured requests are split in proportion to the
    categories' sizes (largest remainders, so they add up to ``total``; at least one each);
    the share splits a --duration the same way."""
    cats = sorted({r.category for r in records})
    groups = {c: [r for r in records if r.category == c] for c in cats}
    shares = {c: len(groups[c]) / len(records) for c in cats}
    counts: dict[str, int | None] = dict.fromkeys(cats)
    if total is not None:
        exact = {c: total * shares[c] for c in cats}
        base = {c: int(exact[c]) for c in cats}
        left = total - sum(base.values())
        for c in sorted(cats, key=lambda c: exact[c] - base[c], reverse=True)[:left]:
            base[c] += 1
        counts = {c: max(1, n) for c, n in base.items()}
    return [(c, groups[c], counts[c], shares[c]) for c in cats]
