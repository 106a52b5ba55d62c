"""TensorRT-LLM's ``trtllm-serve`` (PyTorch backend) as the synthetic engine serves it.

Routes: POST /v1/completions (``model`` required, unknown fields rejected, ``detokenize``),
GET /metrics (JSON iteration stats, consumed on read, bounded buffer), /prometheus/metrics,
/health, /health_generate, /v1/models, /version.
"""

from __future__ import annotations

import json
import time
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
)
from loadgen.synthetic.wire import BadRequest

# CompletionRequest's fields (pydantic, extra="forbid"): anything else is a 400.
COMPLETION_FIELDS = frozenset({
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
    "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix",
    "temperature", "top_p", "user", "lora_request", "use_beam_search", "top_k", "top_p_min",
    "min_p", "repetition_penalty", "length_penalty", "early_stopping", "stop_token_ids",
    "include_stop_str_in_output", "ignore_eos", "min_tokens", "skip_special_tokens",
    "spaces_between_special_tokens", "truncate_prompt_tokens", "return_context_logits",
    "detokenize", "add_special_tokens", "response_format", "guided_decoding",
    "disaggregated_params", "cache_salt",
})
ITER_STATS_MAX = 1000  # iter_stats_max_iterations default


def avg_decoded_per_iter(seq: Sequence) -> float:
    iters = 1 + len(seq.drafted_per_step)  # the context step plus every generation step
    return len(seq.generated) / iters if seq.generated else 0.0


class TrtllmProtocol(BaseProtocol):
    name = "trtllm"

    def __init__(self, server) -> None:
        super().__init__(server)
        self._iter_stats: deque[dict[str, Any]] = deque(maxlen=ITER_STATS_MAX)
        self.engine.step_listeners.append(self._on_step)

    def _on_step(self, s: StepStats) -> None:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%m-%d-%Y %H:%M:%S"),
            "iter": s.iteration,
            "iterLatencyMS": s.latency_ms,
            "newActiveRequestsQueueLatencyMS": 0.0,
            "numActiveRequests": s.num_context + s.num_generation,
            "numQueuedRequests": s.num_queued,
            "maxNumActiveRequests": self.engine.timing.max_num_seqs,
            "inflightBatchingStats": {
                "numScheduledRequests": s.num_context + s.num_generation,
                "numContextRequests": s.num_context, "numGenRequests": s.num_generation,
                "numPausedRequests": 0, "numCtxTokens": 0, "microBatchId": 0,
            },
        }
        if self.engine.spec.enabled:
            reqs = s.num_requests_with_drafts
            entry["specDecodingStats"] = {
                "numDraftTokens": s.num_draft_tokens,
                "numAcceptedTokens": s.num_accepted_tokens,
                "numRequestsWithDraftTokens": reqs,
                "acceptanceLength": (s.num_accepted_tokens + reqs) / reqs if reqs else 0.0,
                "iterLatencyMS": s.draft_ms,
                "draftOverhead": s.draft_ms / s.latency_ms if s.latency_ms else 0.0,
            }
        self._iter_stats.append(entry)

    def routes(self):
        r = super().routes()
        r[("POST", "/v1/completions")] = self.completions
        r[("GET", "/metrics")] = self.iteration_stats
        r[("GET", "/prometheus/metrics")] = self.metrics
        r[("GET", "/health_generate")] = self.health
        r[("GET", "/version")] = self.version
        return r

    def error(self, status: int, message: str) -> Response:
        kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "InternalServerError")
        return Response.json(status, {"object": "error", "message": message, "type": kind,
                                      "param": None, "code": status})

    async def version(self, req: Request, conn: Connection) -> Response:
        return Response.json(200, {"version": self.version_string()})

    async def iteration_stats(self, req: Request, conn: Connection) -> Response:
        # Reading consumes the entries, as trtllm-serve's get_stats queue does.
        entries = list(self._iter_stats)
        self._iter_stats.clear()
        return Response(200, json.dumps(entries).encode(), "application/json")

    async def completions(self, req: Request, conn: Connection) -> Response | None:
        body = self.server.parse_json(req)
        unknown = sorted(set(body) - COMPLETION_FIELDS)
        if unknown:
            raise BadRequest(f"[{{'type': 'extra_forbidden', 'loc': ('body', '{unknown[0]}'), "
                             f"'msg': 'Extra inputs are not permitted'}}]")
        if not isinstance(body.get("model"), str):
            raise BadRequest("[{'type': 'missing', 'loc': ('body', 'model'), "
                             "'msg': 'Field required'}]")
        if body["model"] != self.cfg.model_name:
            raise BadRequest(f"The model `{body['model']}` does not exist.", status=404)
        seq, stream, include_usage, continuous = completion_sequence(self.server, body)
        detok = body.get("detokenize", True) is not False
        fmt = CompletionFormatter(seq.rid, CompletionOptions(
            model=self.cfg.model_name, token_ids=not detok, text=detok,
            include_usage=include_usage, continuous_usage=continuous,
            choice_extra=lambda s: {"avg_decoded_tokens_per_iter": avg_decoded_per_iter(s)},
        ))
        return await self.server.generate(conn, seq, fmt, stream, req.path)

    def metric_families(self) -> Iterable[Metric]:
        c = self.engine.live
        lab = {"model_name": self.cfg.model_name}
        yield family(CounterMetricFamily, "trtllm_generation_tokens", "Generated tokens.",
                     c.generation_tokens, lab)
        yield family(CounterMetricFamily, "trtllm_prompt_tokens", "Prompt tokens.",
                     c.prompt_tokens, lab)
        if self.engine.spec.enabled:
            yield family(CounterMetricFamily, "trtllm_spec_decode_num_draft_tokens",
                         "Draft tokens.", c.num_draft_tokens, lab)
            yield family(CounterMetricFamily, "trtllm_spec_decode_num_accepted_tokens",
                         "Accepted draft tokens.", c.num_accepted_tokens, lab)
            yield family(GaugeMetricFamily, "trtllm_spec_decode_acceptance_length",
                         "Lifetime acceptance length.",
                         1 + c.num_accepted_tokens / c.num_drafts if c.num_drafts else 0.0, lab)
            drafted = CounterMetricFamily("trtllm_spec_decode_drafted_tokens",
                                          "Drafted tokens per position.",
                                          labels=["model_name", "token_position"])
            accepted = CounterMetricFamily("trtllm_spec_decode_accepted_tokens",
                                           "Accepted tokens per position.",
                                           labels=["model_name", "token_position"])
            for i, (d, a) in enumerate(zip(c.drafted_per_pos, c.accepted_per_pos,
                                           strict=True)):
                drafted.add_metric([self.cfg.model_name, str(i)], d)
                accepted.add_metric([self.cfg.model_name, str(i)], a)
            yield drafted
            yield accepted
