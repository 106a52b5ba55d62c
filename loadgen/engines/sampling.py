"""Sampling parameters of a run (default greedy) and how they are shown beside an AL.

Each adapter puts them in its engine's own fields (``EngineAdapter.sampling_fields``); this
module holds only what is engine-neutral: the values, the per-request seed and the label.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    seed_per_request: bool = False
    run_seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def request_seed(self, index: int, turn: int) -> int | None:
        """The seed sent with request ``index`` (turn ``turn``) when ``seed_per_request``: a
        pure function of (run seed, index, turn), so a rerun with the same --seed draws the
        same samples on an engine that honours seeds."""
        if not self.seed_per_request:
            return None
        return zlib.crc32(f"{self.run_seed}:{index}:{turn}".encode()) & 0x7FFFFFFF


def sampling_label(s: dict[str, Any] | None) -> str:
    """``greedy`` or ``T=0.7 top_p=0.9 top_k=50 seeded``: shown next to every AL. A summary
    without ``sampling`` predates the sampling flags, when every run was greedy."""
    if not s or all(v is None for v in s.values()):
        return "greedy"
    t = s.get("temperature") or 0.0
    parts = ["greedy" if t == 0 else f"T={t:g}"]
    if s.get("top_p") is not None:
        parts.append(f"top_p={s['top_p']:g}")
    if s.get("top_k") is not None:
        parts.append(f"top_k={s['top_k']}")
    if s.get("seed_per_request"):
        parts.append("seeded")
    return " ".join(parts)
