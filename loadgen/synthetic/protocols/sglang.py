"""SGLang's HTTP server as the synthetic engine serves it.

Routes: POST /generate (native; cumulative ``output_ids``/``text`` unless incremental streaming is
on; SD fields in the final chunk's ``meta_info``), POST /v1/completions, GET /health,
/health_generate, /server_info, /get_model_info, /v1/models, /metrics.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from loadgen.synthetic.engine import Sequence, StepStats
from loadgen.synthetic.http import Connection, Request, Response
from loadgen.synthetic.protocols.base import BaseProtocol, family
from loadgen.synthetic.protocols.openai import (
    CompletionFormatter,
    CompletionOptions,
    completion_sequence,
    int_field,
    is_token_list,
    sampling_of,
)
from loadgen.synthetic.wire import SSE_DONE, BadRequest, detokenize, sse, tokenize_text

# SamplingParams' constructor arguments: anything else in sampling_params is a 400, as in SGLang.
SAMPLING_KEYS = frozenset({
    "max_new_tokens", "stop", "stop_token_ids", "stop_regex", "temperature", "top_p", "top_k",
    "min_p", "frequency_penalty", "presence_penalty", "repetition_penalty", "min_new_tokens",
    "n", "json_schema", "regex", "ebnf", "structural_tag", "ignore_eos", "skip_special_tokens",
    "spaces_between_special_tokens", "no_stop_trim", "custom_params", "stream_interval",
    "logit_bias", "sampling_seed",
})

WINDOW_STEPS = 64  # the spec gauges cover the most recent steps, as SGLang's log interval does


def spec_meta(seq: Sequence) -> dict[str, Any]:
    verify = len(seq.drafted_per_step)
    proposed = sum(seq.drafted_per_step)
    correct = sum(seq.accepted_per_step)
    k = max(seq.drafted_per_step, default=0)
    hist = [0] * (k + 1)
    for a in seq.accepted_per_step:
        hist[a] += 1
    return {
        "spec_verify_ct": verify,
        "spec_accept_length": len(seq.generated) / verify if verify else 0.0,
        "spec_accept_rate": correct / proposed if proposed else 0.0,
        "spec_num_correct_drafts": correct,
        "spec_num_proposed_drafts": proposed,
        "spec_correct_drafts_histogram": hist,
    }


class GenerateFormatter:
    def __init__(self, rid: str, incremental: bool, spec_on: bool) -> None:
        self.rid = rid
        self.incremental = incremental
        self.spec_on = spec_on

    def _body(self, seq: Sequence, tokens: list[int], finished: bool) -> dict[str, Any]:
        ids = tokens if self.incremental else seq.generated[:]
        n = len(seq.generated)
        meta: dict[str, Any] = {
            "id": self.rid,
            "finish_reason": ({"type": seq.finish_reason, "length": n} if seq.finish_reason ==
                              "length" else {"type": "stop", "matched": 2}) if finished else None,
            "prompt_tokens": len(seq.prompt_ids),
            "completion_tokens": n,
            "cached_tokens": 0,
        }
        if self.spec_on:
            meta["spec_verify_ct"] = len(seq.drafted_per_step)
            if finished:
                meta.update(spec_meta(seq))
        return {"text": detokenize(ids), "output_ids": ids, "meta_info": meta}

    def events(self, seq: Sequence, tokens: list[int], finished: bool) -> list[tuple[bytes, int]]:
        return [(sse(self._body(seq, tokens, finished)), len(tokens))]

    def tail(self, seq: Sequence) -> list[bytes]:
        return [SSE_DONE]

    def complete(self, seq: Sequence) -> Response:
        body = self._body(seq, seq.generated, True)
        body["output_ids"] = seq.generated
        return Response.json(200, body)


class SglangProtocol(BaseProtocol):
    name = "sglang"

    def __init__(self, server) -> None:
        super().__init__(server)
        self._recent: deque[tuple[int, int, int]] = deque(maxlen=WINDOW_STEPS)
        self.engine.step_listeners.append(self._on_step)

    def _on_step(self, s: StepStats) -> None:
        if s.num_requests_with_drafts:
            self._recent.append((s.num_requests_with_drafts, s.num_accepted_tokens,
                                 s.num_draft_tokens))

    def routes(self):
        r = super().routes()
        r[("POST", "/generate")] = self.generate
        r[("POST", "/v1/completions")] = self.completions
        r[("GET", "/health_generate")] = self.health
        r[("GET", "/server_info")] = self.server_info
        r[("GET", "/get_server_info")] = self.server_info
        r[("GET", "/get_model_info")] = self.model_info
        return r

    def error(self, status: int, message: str) -> Response:
        return Response.json(status, {"error": {"message": message}, "object": "error",
                                      "code": status})

    async def generate(self, req: Request, conn: Connection) -> Response | None:
        body = self.server.parse_json(req)
        if "input_ids" in body and body["input_ids"] is not None:
            ids = body["input_ids"]
            if not is_token_list(ids) or not ids:
                raise BadRequest("input_ids must be a non-empty list of token ids")
        elif isinstance(body.get("text"), str):
            ids = tokenize_text(body["text"])
        else:
            raise BadRequest("Either text or input_ids should be provided.")
        sp = body.get("sampling_params") or {}
        if not isinstance(sp, dict):
            raise BadRequest("sampling_params must be an object")
        unknown = sorted(set(sp) - SAMPLING_KEYS)
        if unknown:
            raise BadRequest(
                f"SamplingParams.__init__() got an unexpected keyword argument '{unknown[0]}'")
        max_new = int_field(sp, "max_new_tokens", 128, 0) or 1
        min_new = int_field(sp, "min_new_tokens", 0, 0) or 0
        seq = self.engine.new_sequence(str(body.get("rid") or self.server.next_rid()), ids,
                                       max_new, bool(sp.get("ignore_eos", False)), min_new)
        seq.sampling = sampling_of(sp)
        fmt = GenerateFormatter(seq.rid, self.cfg.incremental_streaming, self.engine.spec.enabled)
        return await self.server.generate(conn, seq, fmt, bool(body.get("stream")), req.path)

    async def completions(self, req: Request, conn: Connection) -> Response | None:
        body = self.server.parse_json(req)
        seq, stream, include_usage, continuous = completion_sequence(self.server, body)
        fmt = CompletionFormatter(seq.rid, CompletionOptions(
            model=self.cfg.model_name, token_ids=bool(body.get("return_token_ids")), text=True,
            include_usage=include_usage, continuous_usage=continuous))
        return await self.server.generate(conn, seq, fmt, stream, req.path)

    async def server_info(self, req: Request, conn: Connection) -> Response:
        c = self.engine.live
        # A lifetime average, exactly what a benchmark must NOT use for a run's window.
        lifetime = c.generation_tokens / c.verify_steps if c.verify_steps else 0.0
        state: dict[str, Any] = {"avg_spec_accept_length": lifetime} if self.engine.spec.enabled \
            else {}
        return Response.json(200, {
            "version": self.version_string(), "model_path": self.cfg.model_name,
            "speculative_algorithm": "SYNTHETIC" if self.engine.spec.enabled else None,
            "speculative_num_draft_tokens": self.engine.k + 1 if self.engine.spec.enabled
            else None,
            "internal_states": [state],
        })

    async def model_info(self, req: Request, conn: Connection) -> Response:
        return Response.json(200, {"model_path": self.cfg.model_name,
                                   "tokenizer_path": self.cfg.model_name, "is_generation": True})

    def metric_families(self) -> Iterable[Metric]:
        c = self.engine.live
        lab = {"model_name": self.cfg.model_name}
        yield family(CounterMetricFamily, "sglang:prompt_tokens", "Prefill tokens.",
                     c.prompt_tokens, lab)
        yield family(CounterMetricFamily, "sglang:generation_tokens", "Generation tokens.",
                     c.generation_tokens, lab)
        yield family(GaugeMetricFamily, "sglang:num_running_reqs", "Running requests.",
                     len(self.engine.running), lab)
        yield family(GaugeMetricFamily, "sglang:num_queue_reqs", "Queued requests.",
                     len(self.engine.waiting), lab)
        if self.engine.spec.enabled:
            reqs = sum(r for r, _, _ in self._recent)
            acc = sum(a for _, a, _ in self._recent)
            drafted = sum(d for _, _, d in self._recent)
            yield family(CounterMetricFamily, "sglang:spec_verify_calls", "Verify calls.",
                         c.verify_steps, lab)
            yield family(GaugeMetricFamily, "sglang:spec_accept_length",
                         "Acceptance length over recent steps.",
                         1 + acc / reqs if reqs else 0.0, lab)
            yield family(GaugeMetricFamily, "sglang:spec_accept_rate",
                         "Acceptance rate over recent steps.",
                         acc / drafted if drafted else 0.0, lab)
