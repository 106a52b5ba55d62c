"""Prompt files for tests against the synthetic engine."""

from __future__ import annotations

import random
from pathlib import Path

from loadgen.data.prompts import PromptRecord, write_prompts

# Each category starts its prompts with its own marker token, so the synthetic engine gives it
# its own acceptance profile.
CATEGORIES = {"coding": (7, "0.9,0.8,0.7"), "roleplay": (9, "0.3,0.2"), "math": (11, "0.7,0.5")}


def make_dataset(path: Path, n: int = 24, seed: int = 0, lengths: tuple[int, int] = (16, 120)
                 ) -> Path:
    """``n`` prompts, the categories in turn; each marker token then ``lengths`` (a range: the
    low end included, the high one not) random ids."""
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        cat = list(CATEGORIES)[i % len(CATEGORIES)]
        marker = CATEGORIES[cat][0]
        ids = [marker] + [rng.randrange(100, 40000) for _ in range(rng.randrange(*lengths))]
        recs.append(PromptRecord(id=f"p{i}", category=cat, prompt_token_ids=ids))
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


def rates_args() -> list[str]:
    out = []
    for marker, rates in CATEGORIES.values():
        out += ["--accept-rates-for", f"{marker}={rates}"]
    return out


