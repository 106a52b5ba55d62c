"""Seeded fault injection for the synthetic engine.

A rule is ``KIND[:key=value,...]`` with either ``p=PROB`` (each request independently, seeded by
the server seed and the request's arrival index) or ``every=N`` (the N-th, 2N-th, ... request).
Kinds, and the parameters they take:

  http500, http503                     answer with that status and an engine-style error body
  http429 [retry_after=SECONDS]        429 with a ``Retry-After`` header (default 1)
  close_before_headers                 close the connection before any response byte
  reset [after=TOKENS]                 TCP reset (RST) after that many tokens were streamed
  stall [after=TOKENS, seconds=S]      the request makes no progress for S seconds (default 2)
  malformed [after=TOKENS]             the chunk that carries token number ``after`` is not JSON
  truncate [after=TOKENS]              the stream ends cleanly after that many tokens, without
                                       its final chunk (usage, ``[DONE]``, llama.cpp's stop event)
  stream_error [after=TOKENS]          after that many tokens, an error event in the stream
                                       (``data: {"error": {"message": ...}}``, then ``[DONE]``
                                       where the protocol has it), as vLLM sends when generation
                                       fails mid-stream
  hang                                 read the request, never answer (no byte, connection open)
  oversized [after=TOKENS, bytes=B]    the chunk that carries token ``after`` is one event of B
                                       bytes (default 20 MiB, over the client's 16 MiB cap)

``after`` defaults to 1. The first rule that fires for a request wins.

One rule is not per request: ``counter_reset:at=N`` sets every server counter back to zero when
the N-th generation request (0-based) arrives, as a server restarted mid-run would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PRE_HEADER_KINDS = frozenset({"http500", "http503", "http429", "close_before_headers", "hang"})
STREAM_KINDS = frozenset({"reset", "stall", "malformed", "truncate", "stream_error", "oversized"})
STREAM_ERROR_MESSAGE = "injected error: generation failed mid-stream"
COUNTER_RESET = "counter_reset"
KINDS = PRE_HEADER_KINDS | STREAM_KINDS | {COUNTER_RESET}
_PARAMS = {"p", "every", "after", "seconds", "retry_after", "bytes", "at"}


@dataclass(frozen=True, slots=True)
class FaultRule:
    kind: str
    prob: float | None = None
    every: int | None = None
    after: int = 1
    seconds: float = 2.0
    retry_after: float = 1.0
    bytes: int = 20 << 20
    at: int | None = None  # counter_reset: the request index at which counters restart

    def fires(self, seed: int, index: int) -> bool:
        if self.every is not None:
            return (index + 1) % self.every == 0
        assert self.prob is not None
        return random.Random(f"{seed}:{index}:{self.kind}").random() < self.prob


def parse_fault(spec: str) -> FaultRule:
    kind, _, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (choose from {', '.join(sorted(KINDS))})")
    params: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in _PARAMS:
            raise ValueError(f"fault {spec!r}: bad parameter {part!r} (known: {sorted(_PARAMS)})")
        params[key] = value
    if kind == COUNTER_RESET:
        if set(params) != {"at"} or not params["at"].isdigit():
            raise ValueError(f"fault {spec!r}: counter_reset takes only at=N (N >= 0)")
        return FaultRule(kind=kind, at=int(params["at"]))
    if ("p" in params) == ("every" in params):
        raise ValueError(f"fault {spec!r}: give exactly one of p=PROB or every=N")
    try:
        rule = FaultRule(
            kind=kind,
            prob=float(params["p"]) if "p" in params else None,
            every=int(params["every"]) if "every" in params else None,
            after=int(params.get("after", 1)),
            seconds=float(params.get("seconds", 2.0)),
            retry_after=float(params.get("retry_after", 1.0)),
            bytes=int(params.get("bytes", 20 << 20)),
        )
    except ValueError as exc:
        raise ValueError(f"fault {spec!r}: {exc}") from None
    if rule.prob is not None and not 0 <= rule.prob <= 1:
        raise ValueError(f"fault {spec!r}: p must be in [0, 1]")
    if rule.every is not None and rule.every < 1:
        raise ValueError(f"fault {spec!r}: every must be >= 1")
    if rule.after < 1:
        raise ValueError(f"fault {spec!r}: after must be >= 1")
    return rule


@dataclass(frozen=True, slots=True)
class FaultPlan:
    rules: tuple[FaultRule, ...] = ()
    seed: int = 0

    @classmethod
    def parse(cls, specs: list[str] | None, seed: int = 0) -> FaultPlan:
        return cls(tuple(parse_fault(s) for s in specs or ()), seed)

    def for_request(self, index: int) -> FaultRule | None:
        for rule in self.rules:
            if rule.kind != COUNTER_RESET and rule.fires(self.seed, index):
                return rule
        return None

    def resets_counters_at(self, index: int) -> bool:
        return any(r.kind == COUNTER_RESET and r.at == index for r in self.rules)
