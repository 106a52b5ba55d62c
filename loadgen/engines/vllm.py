"""vLLM: token-id prompts to /v1/completions, ids back in ``choices[0].token_ids``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loadgen.engines.base import EngineAdapter, StreamState


class VllmAdapter(EngineAdapter):
    name = "vllm"
    # metrics.speculative_decoding only with --per-request-spec-decode-metrics
    per_request_sd_support = "optional"
    COUNTERS = (
        ("drafts", "vllm:spec_decode_num_drafts_total", None),
        ("draft_tokens", "vllm:spec_decode_num_draft_tokens_total", None),
        ("accepted", "vllm:spec_decode_num_accepted_tokens_total", None),
        ("accepted_pos_", "vllm:spec_decode_num_accepted_tokens_per_pos_total", "position"),
        ("generation_tokens", "vllm:generation_tokens_total", None),
        ("prompt_tokens", "vllm:prompt_tokens_total", None),
        ("prefix_cache_queries", "vllm:prefix_cache_queries_total", None),
        ("prefix_cache_hits", "vllm:prefix_cache_hits_total", None),
    )
    supports_cache_salt = True  # a request body field since vLLM 0.9 (0.32 checked)
    flush_path = "/reset_prefix_cache"  # only with VLLM_SERVER_DEV_MODE=1

    def build_body(self, prompt_ids: list[int], max_tokens: int,
                   seed: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": prompt_ids, "max_tokens": max_tokens, "min_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "return_token_ids": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            **self.sampling_fields(seed),
        }
        if self.model:
            body["model"] = self.model
        if self.cache_salt:
            body["cache_salt"] = self.cache_salt
        return body

    def on_event(self, st: StreamState, payload: bytes, stamp: int) -> None:
        obj = self.parse_event(st, payload)
        if obj is None:
            return
        choices = obj.get("choices")
        if choices:
            c = choices[0]
            ids = c.get("token_ids")
            if ids is not None:
                st.add(len(ids), stamp, ids)
            else:
                usage = obj.get("usage")
                if usage and usage.get("completion_tokens") is not None:
                    st.add(usage["completion_tokens"] - st.tokens, stamp)
                elif c.get("text"):
                    st.error = st.error or ("chunks carry neither token_ids nor cumulative "
                                            "usage: cannot count tokens")
            finish = c.get("finish_reason")
            if finish is not None:
                st.finish_reason = finish
            on_choice = self.on_choice
            if on_choice is not None:
                on_choice(st, c)
        elif "usage" in obj and obj["usage"] is not None:
            u = obj["usage"]
            st.final_seen = True
            st.usage_prompt_tokens = u.get("prompt_tokens")
            st.usage_completion_tokens = u.get("completion_tokens")
            sd = (obj.get("metrics") or {}).get("speculative_decoding")
            if sd:
                st.sd = sd

    # engine-specific fields of a choice: a hook for subclasses, (st, choice) -> None
    on_choice: Callable[[StreamState, dict[str, Any]], None] | None = None

    def per_request_sd(self, st: StreamState) -> dict[str, float] | None:
        sd = st.sd
        if not sd:
            return None
        return {"acceptance_length": float(sd.get("mean_acceptance_length", 0.0)),
                "drafted": float(sd.get("num_draft_tokens", 0)),
                "accepted": float(sd.get("num_accepted_draft_tokens", 0))}
