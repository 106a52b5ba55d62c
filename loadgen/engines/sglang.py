"""SGLang: native /generate with ``input_ids``; ``meta_info.completion_tokens`` is cumulative, so
new tokens are counted from it whether ``output_ids`` are cumulative (default) or deltas."""

from __future__ import annotations

from typing import Any

from loadgen.engines.base import EngineAdapter, StreamState
from loadgen.results.summary import AcceptanceSummary, PrefixCacheStats


class SglangAdapter(EngineAdapter):
    name = "sglang"
    stream_path = "/generate"
    COUNTERS = (
        ("verify_calls", "sglang:spec_verify_calls_total", None),
        ("generation_tokens", "sglang:generation_tokens_total", None),
        ("prompt_tokens", "sglang:prompt_tokens_total", None),
        ("cached_tokens", "sglang:cached_tokens_total", None),  # newer builds; summed sources
        ("cache_hit_rate", "sglang:cache_hit_rate", None),  # a gauge (older builds)
    )
    flush_path = "/flush_cache"

    def prefix_cache(self, delta: dict[str, float] | None, end: dict[str, float] | None,
                     sent_prompt_tokens: float) -> PrefixCacheStats | None:
        if delta and "cached_tokens" in delta and delta.get("prompt_tokens"):
            q, h = delta["prompt_tokens"], delta["cached_tokens"]
            return PrefixCacheStats(source="server_counters:sglang", unit="tokens", queries=q,
                                    hits=h, hit_rate=h / q)
        if end and "cache_hit_rate" in end:
            return PrefixCacheStats(
                source="gauge:sglang", unit="rate", hit_rate=end["cache_hit_rate"],
                note="sglang:cache_hit_rate is a gauge of recent batches, read at the window's "
                     "end: not the window's own rate")
        return None

    def build_body(self, prompt_ids: list[int], max_tokens: int,
                   seed: int | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"max_new_tokens": max_tokens, "min_new_tokens": max_tokens,
                                  "ignore_eos": True}
        params.update(self.sampling_fields(seed))
        if "seed" in params:  # SamplingParams names it sampling_seed
            params["sampling_seed"] = params.pop("seed")
        return {"input_ids": prompt_ids, "stream": True, "sampling_params": params}

    def on_event(self, st: StreamState, payload: bytes, stamp: int) -> None:
        obj = self.parse_event(st, payload)
        if obj is None:
            return
        meta = obj.get("meta_info") or {}
        total = meta.get("completion_tokens")
        if total is None:
            st.error = st.error or "chunk without meta_info.completion_tokens"
            return
        new = total - st.tokens
        if new > 0:
            ids = obj.get("output_ids")
            if st.token_ids is not None and ids is not None:
                ids = ids[-new:] if len(ids) >= new else ids
            st.add(new, stamp, ids)
        fr = meta.get("finish_reason")
        if fr is not None:
            st.final_seen = True
            st.finish_reason = fr.get("type") if isinstance(fr, dict) else str(fr)
            st.usage_prompt_tokens = meta.get("prompt_tokens")
            st.usage_completion_tokens = total
            spec = {k: v for k, v in meta.items() if k.startswith("spec_")}
            if spec:
                st.sd = spec

    def per_request_sd(self, st: StreamState) -> dict[str, float] | None:
        sd = st.sd
        if not sd or "spec_accept_length" not in sd:
            return None
        out = {"acceptance_length": float(sd["spec_accept_length"])}
        if "spec_num_proposed_drafts" in sd:
            out["drafted"] = float(sd["spec_num_proposed_drafts"])
            out["accepted"] = float(sd.get("spec_num_correct_drafts", 0))
        return out

    def acceptance(self, delta: dict[str, float]) -> AcceptanceSummary | None:
        verify = delta.get("verify_calls", 0.0)
        if verify <= 0:
            return None
        # SGLang's own definition: generated tokens per verify call.
        return AcceptanceSummary(source="server_counters:sglang",
                          acceptance_length=delta.get("generation_tokens", 0.0) / verify,
                          drafts=verify)
