"""What the synthetic engine computes: its output tokens and its speculative-decoding acceptance.

Both are pure functions of (seed, prompt), independent of load, timing and of whether SD is on:
- Output token i is the i-th draw of a generator seeded by (seed, prompt hash), so SD on and SD off
  emit the same tokens, exactly as a greedy target model would.
- Each verify step proposes ``d = min(K, remaining - 1)`` drafts (never more than can be kept, so no
  accepted token is ever trimmed and the counters equal what is emitted), and accepts a run: draft
  position j (0-based) is accepted with conditional probability ``rates[j]`` given that positions
  0..j-1 were; the first rejection ends the run. The step then emits ``accepted + 1`` tokens (the
  accepted drafts plus the target's own token).
- Without ``ignore_eos`` a request stops at its natural length: ``16 + prompt_hash % 497`` tokens
  (at least ``min_tokens``), with finish reason "stop".
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

FIRST_TOKEN_ID = 3  # ids 0..2 are the usual special tokens (pad/bos/eos); never emitted


def prompt_digest(prompt_ids: Sequence[int]) -> str:
    """sha256 of the prompt ids as little-endian uint32: the prompt identity in the truth log."""
    h = hashlib.sha256()
    h.update(b"".join(int(t).to_bytes(4, "little") for t in prompt_ids))
    return h.hexdigest()


def natural_length(prompt_hash: int, min_tokens: int = 0) -> int:
    return max(16 + prompt_hash % 497, min_tokens)


@dataclass(slots=True)
class SpecModel:
    """Speculative decoding as the engine simulates it."""

    enabled: bool = True
    num_spec_tokens: int = 3
    accept_rates: list[float] = field(default_factory=lambda: [0.8, 0.6, 0.4])
    # Per-request profiles, keyed by the prompt's first token id: lets a test give each category
    # its own acceptance by starting its prompts with a marker token.
    rates_by_first_token: dict[int, list[float]] = field(default_factory=dict)
    # A lossless-check fault: with SD on, output token ``diverge_at`` (0-based) is replaced by
    # another id (for prompts starting with ``diverge_first_token`` only, when given), so SD's
    # output differs from SD off's at a known position. None: SD never changes an output.
    diverge_at: int | None = None
    diverge_first_token: int | None = None

    def __post_init__(self) -> None:
        for rates in [self.accept_rates, *self.rates_by_first_token.values()]:
            for r in rates:
                if not 0.0 <= r <= 1.0:
                    raise ValueError(f"acceptance rate {r} is outside [0, 1]")
        if self.enabled and self.num_spec_tokens < 1:
            raise ValueError("num_spec_tokens must be >= 1 with SD on")
        if self.diverge_at is not None and self.diverge_at < 0:
            raise ValueError("the divergence position must be >= 0")

    def diverges(self, prompt_ids: Sequence[int]) -> int | None:
        """The output position at which this prompt's SD output is made to differ, or None."""
        if not self.enabled or self.diverge_at is None:
            return None
        if self.diverge_first_token is not None and (
                not prompt_ids or prompt_ids[0] != self.diverge_first_token):
            return None
        return self.diverge_at

    def rates_for(self, prompt_ids: Sequence[int]) -> list[float]:
        rates = self.rates_by_first_token.get(prompt_ids[0], self.accept_rates) if prompt_ids else (
            self.accept_rates)
        k = self.num_spec_tokens
        if not rates:
            return [0.0] * k
        # Shorter lists repeat their last rate; longer ones are cut to K.
        return [rates[min(i, len(rates) - 1)] for i in range(k)]


class RequestModel:
    """The deterministic token stream and acceptance draws of one request."""

    __slots__ = ("_accept_rng", "_diverge", "_emitted", "_token_rng", "prompt_hash", "rates",
                 "vocab_size")

    def __init__(self, seed: int, prompt_ids: Sequence[int], spec: SpecModel, vocab_size: int):
        digest = prompt_digest(prompt_ids)
        self.prompt_hash = int(digest[:16], 16)
        self._token_rng = random.Random(f"{seed}:{digest}:tokens")
        self._accept_rng = random.Random(f"{seed}:{digest}:accept")
        self.rates = spec.rates_for(prompt_ids) if spec.enabled else []
        self.vocab_size = vocab_size
        self._diverge = spec.diverges(prompt_ids)
        self._emitted = 0

    def next_tokens(self, n: int) -> list[int]:
        rng = self._token_rng
        hi = self.vocab_size - 1
        out = [rng.randint(FIRST_TOKEN_ID, hi) for _ in range(n)]
        at = self._diverge
        if at is not None and self._emitted <= at < self._emitted + n:
            tok = out[at - self._emitted]  # the next id in the range: always another token
            out[at - self._emitted] = FIRST_TOKEN_ID + (tok - FIRST_TOKEN_ID + 1) % (
                hi - FIRST_TOKEN_ID + 1)
        self._emitted += n
        return out

    def accepted_run(self, drafts: int) -> int:
        """How many of ``drafts`` proposed tokens the target accepts (a prefix run)."""
        rng = self._accept_rng
        rates = self.rates
        accepted = 0
        while accepted < drafts and rng.random() < rates[accepted]:
            accepted += 1
        return accepted
