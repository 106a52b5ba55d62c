"""vLLM's OpenAI server (v1 engine) as the synthetic engine serves it.

Routes: POST /v1/completions, POST /v1/chat/completions, GET /health, /v1/models, /version,
/metrics. SD counters are per verify step and registered only when SD is on, as in vLLM.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from loadgen.synthetic.engine import Sequence
from loadgen.synthetic.http import Connection, Request, Response
from loadgen.synthetic.prefix_cache import PrefixCache, check_salt
from loadgen.synthetic.protocols.base import BaseProtocol, family
from loadgen.synthetic.protocols.openai import (
    CompletionFormatter,
    CompletionOptions,
    chat_prompt_ids,
    check_stream_options,
    int_field,
    prompt_ids_from,
    sampling_of,
)
from loadgen.synthetic.wire import BadRequest


def per_request_spec(seq: Sequence, detailed: bool) -> dict[str, Any]:
    """vLLM's per-request SD summary (``--per-request-spec-decode-metrics``)."""
    steps = [d for d in seq.drafted_per_step if d > 0]
    accepted = sum(a for a, d in zip(seq.accepted_per_step, seq.drafted_per_step, strict=True)
                   if d > 0)
    drafted = sum(steps)
    k = max(seq.drafted_per_step, default=0)
    hist = [0] * (k + 1)
    for a, d in zip(seq.accepted_per_step, seq.drafted_per_step, strict=True):
        if d > 0:
            hist[a] += 1
    out: dict[str, Any] = {
        "num_spec_steps": len(steps),
        "num_draft_tokens": drafted,
        "num_accepted_draft_tokens": accepted,
        "mean_acceptance_length": 1 + accepted / len(steps) if steps else 1.0,
        "draft_acceptance_rate": accepted / drafted if drafted else 0.0,
        "acceptance_histogram": hist,
    }
    if detailed:
        out["per_step_accepted"] = [a for a, d in zip(seq.accepted_per_step,
                                                       seq.drafted_per_step, strict=True) if d]
        out["per_step_drafted"] = steps
    return out


class VllmProtocol(BaseProtocol):
    name = "vllm"

    def __init__(self, server) -> None:
        super().__init__(server)
        self.prefix_cache = PrefixCache()

    def routes(self):
        r = super().routes()
        r[("POST", "/reset_prefix_cache")] = self.reset_prefix_cache
        r[("POST", "/v1/completions")] = self.completions
        r[("POST", "/v1/chat/completions")] = self.chat_completions
        r[("GET", "/version")] = self.version
        return r

    def error(self, status: int, message: str) -> Response:
        kind = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError",
                503: "ServiceUnavailableError"}.get(status, "InternalServerError")
        return Response.json(status, {"error": {"message": message, "type": kind,
                                                "param": None, "code": status}})

    async def reset_prefix_cache(self, req: Request, conn: Connection) -> Response:
        self.prefix_cache.reset()
        return Response.json(200, {})

    async def version(self, req: Request, conn: Connection) -> Response:
        return Response.json(200, {"version": self.version_string()})

    def _check_model(self, body: dict[str, Any]) -> None:
        model = body.get("model")
        if model is not None and model != self.cfg.model_name:
            raise BadRequest(f"The model `{model}` does not exist.", status=404)

    def _final_extra(self):
        mode = self.cfg.per_request_spec_metrics
        if not mode or not self.engine.spec.enabled:
            return None
        detailed = mode == "detailed"
        return lambda seq: {"metrics": {"speculative_decoding": per_request_spec(seq, detailed)}}

    async def _serve(self, req: Request, conn: Connection, chat: bool) -> Response | None:
        body = self.server.parse_json(req)
        self._check_model(body)
        if body.get("n", 1) != 1:
            raise BadRequest("the synthetic engine serves n=1 only")
        ids = chat_prompt_ids(body) if chat else prompt_ids_from(body, self.engine.vocab_size)
        if self.cfg.add_bos and not chat:
            ids = [1, *ids]  # a misconfigured server: the engine no longer sees the ids sent
        max_tokens = int_field(body, "max_completion_tokens", None, 1) if chat else None
        max_tokens = max_tokens or int_field(body, "max_tokens", 16, 1)
        min_tokens = int_field(body, "min_tokens", 0, 0) or 0
        stream, include_usage, continuous = check_stream_options(body)
        self.prefix_cache.lookup_and_insert(ids, check_salt(body.get("cache_salt")))
        seq = self.engine.new_sequence(self.server.next_rid(), ids, max_tokens,
                                       bool(body.get("ignore_eos", False)), min_tokens)
        seq.sampling = sampling_of(body)
        return_ids = bool(body.get("return_token_ids", False)) and not chat
        fmt = CompletionFormatter(seq.rid, CompletionOptions(
            model=self.cfg.model_name, token_ids=return_ids, text=True,
            include_usage=include_usage, continuous_usage=continuous,
            prompt_ids_first=return_ids, final_extra=self._final_extra(), chat=chat,
            reasoning_tokens=self.cfg.reasoning_tokens if chat else 0,
        ))
        return await self.server.generate(conn, seq, fmt, stream, req.path)

    async def completions(self, req: Request, conn: Connection) -> Response | None:
        return await self._serve(req, conn, chat=False)

    async def chat_completions(self, req: Request, conn: Connection) -> Response | None:
        return await self._serve(req, conn, chat=True)

    def metric_families(self) -> Iterable[Metric]:
        e = self.engine
        c = e.live
        lab = {"model_name": self.cfg.model_name, "engine": "0"}
        # vLLM serves prometheus_client's process collector: who answered (a restart, or a
        # load balancer's other replica, shows as another start time)
        yield family(GaugeMetricFamily, "process_start_time_seconds",
                     "Start time of the process since unix epoch in seconds.", e.started)
        yield family(GaugeMetricFamily, "vllm:num_requests_running",
                     "Requests in model execution batches.", len(e.running), lab)
        yield family(GaugeMetricFamily, "vllm:num_requests_waiting",
                     "Requests waiting to be processed.", len(e.waiting), lab)
        yield family(CounterMetricFamily, "vllm:prompt_tokens",
                     "Number of prefill tokens processed.", c.prompt_tokens, lab)
        yield family(CounterMetricFamily, "vllm:generation_tokens",
                     "Number of generation tokens processed.", c.generation_tokens, lab)
        pc = self.prefix_cache
        yield family(CounterMetricFamily, "vllm:prefix_cache_queries",
                     "Prefix cache queries, in terms of number of queried tokens.", pc.queries,
                     lab)
        yield family(CounterMetricFamily, "vllm:prefix_cache_hits",
                     "Prefix cache hits, in terms of number of cached tokens.", pc.hits, lab)
        if e.spec.enabled:
            yield family(CounterMetricFamily, "vllm:spec_decode_num_drafts",
                         "Number of spec decoding drafts.", c.num_drafts, lab)
            yield family(CounterMetricFamily, "vllm:spec_decode_num_draft_tokens",
                         "Number of draft tokens.", c.num_draft_tokens, lab)
            yield family(CounterMetricFamily, "vllm:spec_decode_num_accepted_tokens",
                         "Number of accepted tokens.", c.num_accepted_tokens, lab)
            m = CounterMetricFamily("vllm:spec_decode_num_accepted_tokens_per_pos",
                                    "Accepted tokens per draft position.",
                                    labels=[*lab, "position"])
            for i, v in enumerate(c.accepted_per_pos):
                m.add_metric([*lab.values(), str(i)], v)
            yield m
