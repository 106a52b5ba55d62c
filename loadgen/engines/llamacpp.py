"""llama.cpp server: native /completion, one event per token, ``stop: true`` with ``timings``
last, no [DONE]. Its counters move when a request finishes."""

from __future__ import annotations

from typing import Any

import httpx

from loadgen.engines.base import EngineAdapter, StreamState
from loadgen.results.summary import PrefixCacheStats


class LlamacppAdapter(EngineAdapter):
    name = "llamacpp"
    stream_path = "/completion"
    has_done_marker = False
    reuse_connections = False  # llama-server closes after every streamed response
    # /props: build info and the slot context (default_generation_settings.n_ctx)
    PROBE_PATHS = ("/props", "/v1/models", "/loadgen/info")
    COUNTERS = (
        ("drafts", "llamacpp:spec_decode_num_drafts_total", None),
        ("draft_tokens", "llamacpp:spec_decode_num_draft_tokens_total", None),
        ("accepted", "llamacpp:spec_decode_num_accepted_tokens_total", None),
        ("accepted_pos_", "llamacpp:spec_decode_num_accepted_tokens_per_pos_total", "position"),
        ("generation_tokens", "llamacpp:tokens_predicted_total", None),
        ("prompt_tokens", "llamacpp:prompt_tokens_total", None),
    )

    def build_body(self, prompt_ids: list[int], max_tokens: int,
                   seed: int | None = None) -> dict[str, Any]:
        # /completion's own sampling fields are temperature, top_p, top_k and seed
        return {"prompt": prompt_ids, "n_predict": max_tokens, "ignore_eos": True,
                "stream": True, "cache_prompt": self.keep_cache, "return_tokens": True,
                **self.sampling_fields(seed)}

    keep_cache = False  # cache_prompt: false unless --keep-prefix-cache

    async def prepare_prefix_cache(self, http: httpx.AsyncClient, keep: bool,
                                   salt: str) -> str:
        # requests ask for no reuse (cache_prompt: false) unless a warm cache is wanted
        self.keep_cache = keep
        return "kept" if keep else "disabled"

    def prefix_cache(self, delta: dict[str, float] | None, end: dict[str, float] | None,
                     sent_prompt_tokens: float) -> PrefixCacheStats | None:
        # prompt_tokens_total counts the prompt tokens llama-server evaluated (cached ones
        # excluded): the rest of what was sent came from its cache
        if not delta or "prompt_tokens" not in delta or sent_prompt_tokens <= 0:
            return None
        hits = max(0.0, sent_prompt_tokens - delta["prompt_tokens"])
        return PrefixCacheStats(source="server_counters:llamacpp (sent - evaluated)",
                                unit="tokens", queries=sent_prompt_tokens, hits=hits,
                                hit_rate=hits / sent_prompt_tokens)

    def on_event(self, st: StreamState, payload: bytes, stamp: int) -> None:
        obj = self.parse_event(st, payload)
        if obj is None:
            return
        ids = obj.get("tokens") or []
        # Count from the cumulative `tokens_predicted`, not from `tokens`: llama-server sends no
        # event for a token whose text is an incomplete UTF-8 sequence, and the next event
        # carries only its own id (seen on SmolLM2 with Chinese output: 54 events for 96 tokens).
        total = obj.get("tokens_predicted")
        if total is None:
            if not ids and obj.get("content") and not obj.get("stop"):
                st.error = st.error or "events carry neither tokens_predicted nor token ids"
                return
            total = st.tokens + len(ids)
        if total > st.tokens:
            if st.token_ids is not None and len(ids) < total - st.tokens:
                st.ids_complete = False
            st.add(total - st.tokens, stamp, ids)
        if obj.get("stop"):
            st.done = st.final_seen = True
            st.finish_reason = obj.get("stop_type")
            st.usage_prompt_tokens = obj.get("tokens_evaluated")
            st.usage_completion_tokens = obj.get("tokens_predicted")
            t = obj.get("timings") or {}
            if "draft_n" in t:
                st.sd = {k: t[k] for k in ("draft_n", "draft_n_accepted", "predicted_n")
                         if k in t}
            else:
                # llama-server leaves draft_n out when a request drew no draft at all; with SD
                # configured that is a request with AL 1, not one without SD information.
                types = (obj.get("generation_settings") or {}).get("speculative.types", "")
                if types and set(types.split(",")) - {"none"}:
                    st.sd = {"draft_n": 0, "draft_n_accepted": 0,
                             "predicted_n": obj.get("tokens_predicted", st.tokens)}

    def per_request_sd(self, st: StreamState) -> dict[str, float] | None:
        sd = st.sd
        if not sd:
            return None
        n = float(sd.get("predicted_n", st.tokens))
        accepted = float(sd.get("draft_n_accepted", 0))
        # llama.cpp reports no step count: tokens per target forward pass = n / (n - accepted)
        al = n / (n - accepted) if n > accepted else None
        return {"acceptance_length": al, "drafted": float(sd.get("draft_n", 0)),
                "accepted": accepted}
