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


def iter_items(prompts: PromptFile, seed: int, warmup: int, shuffle: bool) -> Iterator[Item]:
    """Endless: the prompts in a seeded shuffled order, reshuffled on every pass; the first
    ``warmup`` items are warm-up requests."""
    rng = random.Random(seed)
    i = 0
    while True:
        order = list(prompts.records)
        if shuffle:
            rng.shuffle(order)
        for p in order:
            yield Item(i, p, warmup=i < warmup)
            i += 1
