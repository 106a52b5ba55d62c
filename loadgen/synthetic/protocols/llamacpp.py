"""llama.cpp's ``llama-server`` as the synthetic engine serves it.

Routes: POST /completion (one SSE event per token, the last event ``stop: true`` with
``timings``; no ``[DONE]``), GET /health (503 while loading), /props, /v1/models, /metrics (counters
added when a request finishes, as llama.cpp does).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from loadgen.synthetic.engine import Sequence
from loadgen.synthetic.http import Connection, Request, Response
from loadgen.synthetic.protocols.base import BaseProtocol, family
from loadgen.synthetic.protocols.openai import is_token_list, sampling_of
from loadgen.synthetic.wire import BadRequest, detokenize, sse, tokenize_text


class LlamacppFormatter:
    """llama-server's stream. Like the real server, it sends no event for a token whose text is
    an incomplete UTF-8 sequence: here every token id divisible by ``partial_every`` (0: never)
    that is not the request's last. The next event carries only its own id, while
    ``tokens_predicted`` stays cumulative, so a client that counts ids undercounts."""

    def __init__(self, model: str, return_tokens: bool, spec_on: bool,
                 partial_every: int = 13) -> None:
        self.model = model
        self.return_tokens = return_tokens
        self.spec_on = spec_on
        self.partial_every = partial_every
        self.withheld = 0
        self.t0 = time.monotonic()
        self.t_first = 0.0

    def _event(self, seq: Sequence, tok: int, n: int) -> dict[str, Any]:
        return {"index": 0, "content": detokenize([tok]),
                "tokens": [tok] if self.return_tokens else [], "stop": False, "id_slot": 0,
                "tokens_predicted": n, "tokens_evaluated": len(seq.prompt_ids)}

    def events(self, seq: Sequence, tokens: list[int], finished: bool) -> list[tuple[bytes, int]]:
        if not self.t_first:
            self.t_first = time.monotonic()
        # One event per token, sent back to back after each verify step.
        start = len(seq.generated) - len(tokens)
        out = []
        every = self.partial_every
        for i, t in enumerate(tokens):
            last = finished and i == len(tokens) - 1
            if every and t % every == 0 and not last:
                self.withheld += 1
                continue
            out.append((sse(self._event(seq, t, start + i + 1)), 1 + self.withheld))
            self.withheld = 0
        return out

    def _final(self, seq: Sequence, content: str, tokens: list[int]) -> dict[str, Any]:
        now = time.monotonic()
        n = len(seq.generated)
        prompt_ms = (self.t_first - self.t0) * 1000 if self.t_first else 0.0
        predicted_ms = (now - self.t_first) * 1000 if self.t_first else 0.0
        timings: dict[str, Any] = {
            "cache_n": 0, "prompt_n": len(seq.prompt_ids), "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / max(len(seq.prompt_ids), 1),
            "prompt_per_second": len(seq.prompt_ids) / (prompt_ms / 1000) if prompt_ms else 0.0,
            "predicted_n": n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / n if n else 0.0,
            "predicted_per_second": n / (predicted_ms / 1000) if predicted_ms else 0.0,
        }
        if self.spec_on and sum(seq.drafted_per_step):
            # like llama-server: no draft_n at all for a request that drew no draft
            timings["draft_n"] = sum(seq.drafted_per_step)
            timings["draft_n_accepted"] = sum(seq.accepted_per_step)
        return {
            "index": 0, "content": content, "tokens": tokens, "id_slot": 0, "stop": True,
            "model": self.model, "tokens_predicted": n, "tokens_evaluated": len(seq.prompt_ids),
            "generation_settings": {"n_predict": seq.max_tokens,
                                    "speculative.types": "none,synthetic" if self.spec_on
                                    else "none"},
            "prompt": "", "has_new_line": False, "truncated": False,
            "stop_type": "limit" if seq.finish_reason == "length" else "eos",
            "stopping_word": "", "tokens_cached": len(seq.prompt_ids) + n, "timings": timings,
        }

    def tail(self, seq: Sequence) -> list[bytes]:
        return [sse(self._final(seq, "", []))]

    def complete(self, seq: Sequence) -> Response:
        toks = seq.generated if self.return_tokens else []
        return Response.json(200, self._final(seq, detokenize(seq.generated), toks))


class LlamacppProtocol(BaseProtocol):
    name = "llamacpp"
    close_after_stream = True
    stream_done_marker = False

    def routes(self):
        r = super().routes()
        r[("POST", "/completion")] = self.completion
        r[("POST", "/completions")] = self.completion
        r[("GET", "/props")] = self.props
        return r

    def error(self, status: int, message: str) -> Response:
        kind = {400: "invalid_request_error", 404: "not_found_error",
                503: "unavailable_error"}.get(status, "server_error")
        return Response.json(status, {"error": {"code": status, "message": message,
                                                "type": kind}})

    async def health(self, req: Request, conn: Connection) -> Response:
        if self.server.loading:
            return self.error(503, "Loading model")
        return Response.json(200, {"status": "ok"})

    async def props(self, req: Request, conn: Connection) -> Response:
        return Response.json(200, {
            "default_generation_settings": {"n_ctx": self.cfg.max_model_len},
            "total_slots": self.engine.timing.max_num_seqs,
            "model_path": self.cfg.model_name,
            "build_info": self.version_string(),
            "speculative": self.engine.spec.enabled,
        })

    async def completion(self, req: Request, conn: Connection) -> Response | None:
        body = self.server.parse_json(req)
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            ids = tokenize_text(prompt)
        elif is_token_list(prompt) and prompt:
            ids = prompt
        else:
            raise BadRequest('"prompt" must be a string or a non-empty list of tokens')
        n_predict = body.get("n_predict", -1)
        if not isinstance(n_predict, int) or isinstance(n_predict, bool):
            raise BadRequest('"n_predict" must be an integer')
        if n_predict == 0:
            raise BadRequest('"n_predict" of 0 generates nothing')
        max_tokens = n_predict if n_predict > 0 else self.cfg.max_model_len - len(ids)
        seq = self.engine.new_sequence(self.server.next_rid(), ids, max_tokens,
                                       bool(body.get("ignore_eos", False)))
        seq.sampling = sampling_of(body)
        fmt = LlamacppFormatter(self.cfg.model_name, bool(body.get("return_tokens")),
                                  self.engine.spec.enabled, self.cfg.llamacpp_partial_utf8)
        return await self.server.generate(conn, seq, fmt, bool(body.get("stream")), req.path)

    def metric_families(self) -> Iterable[Metric]:
        c = self.engine.finished
        yield family(CounterMetricFamily, "llamacpp:prompt_tokens", "Prompt tokens processed.",
                     c.prompt_tokens)
        yield family(CounterMetricFamily, "llamacpp:tokens_predicted", "Generation tokens.",
                     c.generation_tokens)
        yield family(GaugeMetricFamily, "llamacpp:requests_processing", "Requests processing.",
                     len(self.engine.running))
        yield family(GaugeMetricFamily, "llamacpp:requests_deferred", "Requests deferred.",
                     len(self.engine.waiting))
        if self.engine.spec.enabled:
            yield family(CounterMetricFamily, "llamacpp:spec_decode_num_drafts", "Drafts.",
                         c.num_drafts)
            yield family(CounterMetricFamily, "llamacpp:spec_decode_num_draft_tokens",
                         "Draft tokens.", c.num_draft_tokens)
            yield family(CounterMetricFamily, "llamacpp:spec_decode_num_accepted_tokens",
                         "Accepted draft tokens.", c.num_accepted_tokens)
            m = CounterMetricFamily("llamacpp:spec_decode_num_accepted_tokens_per_pos",
                                    "Accepted tokens per draft position.", labels=["position"])
            for i, v in enumerate(c.accepted_per_pos):
                m.add_metric([str(i)], v)
            yield m
