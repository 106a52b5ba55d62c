"""The synthetic engine's continuous-batching loop and its timing model.

One asyncio task plays the GPU. Each iteration ("step") it admits waiting requests up to
``max_num_seqs``, spends a chunked-prefill budget on new prompts, runs one verify step for every
decoding sequence, sleeps for the step's modelled duration and then hands each sequence its new
tokens. The duration of a step is

    step_ms = step_base_ms                                  (weights read once per step)
            + per_token_ms * (prefill tokens + sum over decoding sequences of (1 + drafts))
            + draft_ms_per_pos * K                          (drafter, K sequential passes, if any
                                                             sequence drafted this step)

so TTFT grows with prompt length and queueing, a step slows with the number of active sequences
and with the draft length, and SD pays at low load (the base cost is shared by accepted drafts)
but can cost at high load (verifying K+1 tokens per sequence while only AL of them are kept).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadgen.synthetic.model import RequestModel, SpecModel, natural_length


@dataclass(slots=True)
class TimingModel:
    step_base_ms: float = 8.0
    per_token_ms: float = 0.05
    draft_ms_per_pos: float = 0.5
    max_num_seqs: int = 256
    max_prefill_tokens_per_step: int = 8192

    def step_ms(self, processed_tokens: int, drafted: bool, k: int) -> float:
        ms = self.step_base_ms + self.per_token_ms * processed_tokens
        if drafted:
            ms += self.draft_ms_per_pos * k
        return ms


@dataclass(slots=True)
class Counters:
    """Monotonic counters. ``live`` ones move at every step (vLLM, SGLang, TRT-LLM count per
    iteration); llama.cpp adds a request's numbers only when it finishes."""

    prompt_tokens: int = 0
    generation_tokens: int = 0
    num_drafts: int = 0  # verify steps (per sequence) that had at least one draft
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    verify_steps: int = 0  # all decode steps (per sequence), with or without drafts
    accepted_per_pos: list[int] = field(default_factory=list)
    drafted_per_pos: list[int] = field(default_factory=list)
    requests_finished: int = 0

    def add_step(self, drafted: int, accepted: int, emitted: int) -> None:
        self.generation_tokens += emitted
        self.verify_steps += 1
        if drafted > 0:
            self.num_drafts += 1
            self.num_draft_tokens += drafted
            self.num_accepted_tokens += accepted
            per_pos = self.accepted_per_pos
            for i in range(accepted):
                per_pos[i] += 1
            drafted_pos = self.drafted_per_pos
            for i in range(drafted):
                drafted_pos[i] += 1


@dataclass(slots=True)
class StepStats:
    """One engine iteration, as TRT-LLM's iteration stats report it."""

    iteration: int
    latency_ms: float
    num_active: int
    num_queued: int
    num_context: int
    num_generation: int
    num_draft_tokens: int
    num_accepted_tokens: int
    num_requests_with_drafts: int
    draft_ms: float
    applied_ns: int = 0  # when the step began handing out its tokens (before any is written)


# sink(seq, new_tokens, finished) is called once per step that gave the sequence tokens.
Sink = Callable[["Sequence", list[int], bool], None]


class Sequence:
    __slots__ = (
        "accepted_per_step",
        "cancelled",
        "drafted_per_step",
        "finish_reason",
        "finished",
        "first_token_ns",
        "generated",
        "ignore_eos",
        "max_tokens",
        "model",
        "paused_until",
        "prefill_left",
        "prompt_ids",
        "rid",
        "sampling",
        "sink",
        "stop_at",
        "submitted_ns",
    )

    def __init__(self, rid: str, prompt_ids: list[int], max_tokens: int, ignore_eos: bool,
                 min_tokens: int, model: RequestModel) -> None:
        self.rid = rid
        self.sampling: dict[str, Any] | None = None  # sampling fields as the request named them
        self.prompt_ids = prompt_ids
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.model = model
        natural = natural_length(model.prompt_hash, min_tokens)
        self.stop_at = max_tokens if ignore_eos else min(max_tokens, natural)
        self.finish_reason = "length" if self.stop_at == max_tokens else "stop"
        self.prefill_left = len(prompt_ids)
        self.generated: list[int] = []
        self.accepted_per_step: list[int] = []
        self.drafted_per_step: list[int] = []
        self.cancelled = False
        self.finished = False
        self.paused_until = 0.0
        self.sink: Sink | None = None
        self.submitted_ns = 0
        self.first_token_ns = 0

    @property
    def remaining(self) -> int:
        return self.stop_at - len(self.generated)


class Engine:
    def __init__(self, spec: SpecModel, timing: TimingModel, seed: int = 0,
                 vocab_size: int = 49152) -> None:
        self.spec = spec
        self.timing = timing
        self.seed = seed
        self.vocab_size = vocab_size
        k = spec.num_spec_tokens if spec.enabled else 0
        self.k = k
        self.live = self.finished = Counters()
        self.reset_counters()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.iteration = 0
        self.step_listeners: list[Callable[[StepStats], None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def reset_counters(self) -> None:
        """Every counter back to zero, as after a server restart (fault ``counter_reset``)."""
        k = self.k
        self.started = time.time()  # the process start time a restarted server would report
        self.live = Counters(accepted_per_pos=[0] * k, drafted_per_pos=[0] * k)
        self.finished = Counters(accepted_per_pos=[0] * k, drafted_per_pos=[0] * k)

    def new_sequence(self, rid: str, prompt_ids: list[int], max_tokens: int, ignore_eos: bool,
                     min_tokens: int = 0) -> Sequence:
        model = RequestModel(self.seed, prompt_ids, self.spec, self.vocab_size)
        return Sequence(rid, prompt_ids, max_tokens, ignore_eos, min_tokens, model)

    def submit(self, seq: Sequence, sink: Sink) -> None:
        seq.sink = sink
        seq.submitted_ns = time.monotonic_ns()
        self.waiting.append(seq)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def num_active(self) -> int:
        return len(self.running) + len(self.waiting)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        timing = self.timing
        k = self.k
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            while self.waiting and len(self.running) < timing.max_num_seqs:
                self.running.append(self.waiting.popleft())
            now = loop.time()
            running = [s for s in self.running if not s.cancelled]
            self.running = running
            if not running:
                continue
            # Plan the step.
            budget = timing.max_prefill_tokens_per_step
            prefill: list[tuple[Sequence, int]] = []
            decode: list[tuple[Sequence, int]] = []
            processed = 0
            any_draft = False
            for s in running:
                if s.paused_until > now:
                    continue
                if s.prefill_left > 0:
                    if budget > 0:
                        take = min(s.prefill_left, budget)
                        budget -= take
                        processed += take
                        prefill.append((s, take))
                else:
                    drafts = min(k, s.remaining - 1) if k else 0
                    if drafts > 0:
                        any_draft = True
                    processed += 1 + drafts
                    decode.append((s, drafts))
            if not prefill and not decode:  # everyone paused (stall fault)
                await asyncio.sleep(min(s.paused_until for s in running) - now)
                continue
            step_ms = timing.step_ms(processed, any_draft, k)
            if step_ms > 0:
                await asyncio.sleep(step_ms / 1000.0)
            else:
                await asyncio.sleep(0)
            self.iteration += 1
            stats = self._apply(prefill, decode, step_ms, any_draft)
            for listener in self.step_listeners:
                listener(stats)
            self.running = [s for s in self.running if not s.finished and not s.cancelled]

    def _apply(self, prefill: list[tuple[Sequence, int]], decode: list[tuple[Sequence, int]],
               step_ms: float, any_draft: bool) -> StepStats:
        applied_ns = time.monotonic_ns()
        live = self.live
        step_drafts = step_accepted = step_req_drafts = 0
        for s, take in prefill:
            if s.cancelled:
                continue
            s.prefill_left -= take
            if s.prefill_left == 0:
                live.prompt_tokens += len(s.prompt_ids)
                # Prefill yields the first token (not a verify step).
                tokens = s.model.next_tokens(1)
                s.generated.extend(tokens)
                live.generation_tokens += 1
                self._emit(s, tokens)
        for s, drafts in decode:
            if s.cancelled:
                continue
            accepted = s.model.accepted_run(drafts) if drafts else 0
            tokens = s.model.next_tokens(accepted + 1)
            s.generated.extend(tokens)
            s.accepted_per_step.append(accepted)
            s.drafted_per_step.append(drafts)
            live.add_step(drafts, accepted, len(tokens))
            if drafts:
                step_drafts += drafts
                step_accepted += accepted
                step_req_drafts += 1
            self._emit(s, tokens)
        return StepStats(
            iteration=self.iteration, latency_ms=step_ms,
            num_active=len(self.running), num_queued=len(self.waiting),
            num_context=len(prefill), num_generation=len(decode),
            num_draft_tokens=step_drafts, num_accepted_tokens=step_accepted,
            num_requests_with_drafts=step_req_drafts,
            draft_ms=self.timing.draft_ms_per_pos * self.k if any_draft else 0.0,
            applied_ns=applied_ns,
        )

    def _emit(self, s: Sequence, tokens: list[int]) -> None:
        if s.remaining <= 0:
            s.finished = True
            self._count_finished(s)
        sink = s.sink
        if sink is not None:
            sink(s, tokens, s.finished)

    def _count_finished(self, s: Sequence) -> None:
        fin = self.finished
        fin.requests_finished += 1
        if s.prefill_left == 0:
            fin.prompt_tokens += len(s.prompt_ids)
        if s.generated:
            fin.generation_tokens += 1  # the prefill token
        for drafted, accepted in zip(s.drafted_per_step, s.accepted_per_step, strict=True):
            fin.add_step(drafted, accepted, accepted + 1)

    def cancel(self, seq: Sequence) -> None:
        """The client went away: stop generating for it (what was emitted stays counted)."""
        if seq.cancelled or seq.finished:
            return
        seq.cancelled = True
        if seq in self.waiting:
            self.waiting.remove(seq)
        self._count_finished(seq)
