"""The synthetic engine's closed forms (docs/SYNTHETIC.md, "Closed forms"), for tests that check
loadgen's answers against them. Steady state, every sequence decoding, prompts negligible."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timing:
    base: float  # --step-base-ms
    per_token: float  # --per-token-ms
    draft: float  # --draft-ms
    rates: tuple[float, ...]  # --accept-rates (K = their number unless k is given)

    def args(self) -> list[str]:
        return ["--step-base-ms", f"{self.base:g}", "--per-token-ms", f"{self.per_token:g}",
                "--draft-ms", f"{self.draft:g}", "--accept-rates",
                ",".join(f"{r:g}" for r in self.rates)]

    def al(self, k: int | None = None) -> float:
        """Expected tokens per verify step: 1 + sum over j <= K of prod(rates[:j])."""
        al, p = 1.0, 1.0
        for r in self.rates[:k or len(self.rates)]:
            p *= r
            al += p
        return al

    def tpot(self, c: float, k: int = 0) -> float:
        """TPOT at concurrency c: base + per_token x c without SD (k = 0); with K drafts
        (base + per_token x c x (K+1) + draft x K) / AL."""
        if not k:
            return self.base + self.per_token * c
        return (self.base + self.per_token * c * (k + 1) + self.draft * k) / self.al(k)

    def speedup(self, c: float, k: int) -> float:
        """Per-user speedup of SD with K drafts at concurrency c."""
        return self.tpot(c) / self.tpot(c, k)

    def crossover(self, k: int) -> float:
        """c* = (base x (AL-1) - draft x K) / (per_token x (K+1-AL)): speedup = 1."""
        al = self.al(k)
        if k + 1 - al <= 0:  # every draft accepted: verifying costs nothing extra, never crosses
            return float("inf")
        return (self.base * (al - 1) - self.draft * k) / (self.per_token * (k + 1 - al))

    def tpot_capacity(self, limit: float, k: int = 0) -> float:
        """The concurrency at which TPOT reaches ``limit``."""
        if not k:
            return (limit - self.base) / self.per_token
        return (limit * self.al(k) - self.base - self.draft * k) / (self.per_token * (k + 1))

    def steps(self, n: int, k: int) -> list[int]:
        """Drafts per verify step of a request of ``n`` output tokens with a deterministic
        acceptance (rates of 1 then 0): each step drafts d = min(K, remaining - 1), accepts
        min(d, a) and emits that + 1, after the prefill's first token."""
        a = next((i for i, r in enumerate(self.rates[:k]) if r < 1.0), k)
        assert all(r in (0.0, 1.0) for r in self.rates[:k]), "deterministic rates only"
        out, remaining = [], n - 1
        while remaining > 0:
            d = min(k, remaining - 1)
            out.append(d)
            remaining -= min(d, a) + 1
        return out

    def tpot_exact(self, c: float, k: int, n: int) -> float:
        """TPOT of ``n``-token requests, every step carrying c such sequences in lockstep,
        the last steps' shorter drafts included (the N -> infinity limit is ``tpot``)."""
        ds = self.steps(n, k) if k else [0] * (n - 1)
        ms = sum(self.base + self.per_token * c * (1 + d) + (self.draft * k if d else 0.0)
                 for d in ds)
        return ms / (n - 1)

    def crossover_exact(self, k: int, n: int) -> float:
        """The concurrency at which ``tpot_exact`` with and without SD are equal (both are
        linear in c)."""
        off0, off1 = self.tpot_exact(0, 0, n), self.tpot_exact(1, 0, n)
        sd0, sd1 = self.tpot_exact(0, k, n), self.tpot_exact(1, k, n)
        return (sd0 - off0) / ((off1 - off0) - (sd1 - sd0))
