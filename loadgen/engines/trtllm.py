"""TensorRT-LLM's trtllm-serve: /v1/completions with ``model`` required, unknown fields rejected
(so no ``return_token_ids``), ``detokenize: false`` for delta ids. Its /metrics JSON is consumed
on read, so it is polled during the run and summed into monotonic counters."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from loadgen.engines.sampling import Sampling
from loadgen.engines.vllm import VllmAdapter


class TrtllmAdapter(VllmAdapter):
    name = "trtllm"
    POLL_INTERVAL_S = 0.5
    # From /prometheus/metrics (needs return_perf_metrics); the SD numbers come from the
    # iteration stats, which every build with enable_iter_perf_stats has.
    COUNTERS = (
        ("generation_tokens", "trtllm_generation_tokens_total", None),
        ("prompt_tokens", "trtllm_prompt_tokens_total", None),
    )

    per_request_sd_support = "always"  # avg_decoded_tokens_per_iter on every choice

    supports_cache_salt = False  # unknown request fields are rejected
    flush_path = None
    prefix_cache_unit = "blocks"  # kvCacheStats counts KV blocks, not tokens

    def __init__(self, model: str | None = None, keep_token_ids: bool = False,
                 sampling: Sampling | None = None) -> None:
        if not model:
            raise ValueError("TensorRT-LLM requires --model (the served model name)")
        super().__init__(model, keep_token_ids, sampling)
        self._totals = {"drafts": 0.0, "draft_tokens": 0.0, "accepted": 0.0, "iterations": 0.0}
        self._poller: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def build_body(self, prompt_ids: list[int], max_tokens: int,
                   seed: int | None = None) -> dict[str, Any]:
        # CompletionRequest's own fields: temperature, top_p, top_k, seed
        return {
            "model": self.model, "prompt": prompt_ids, "max_tokens": max_tokens,
            "min_tokens": max_tokens, "ignore_eos": True,
            "detokenize": False, "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
            **self.sampling_fields(seed),
        }

    def on_choice(self, st, choice: dict[str, Any]) -> None:
        # each choice carries avg_decoded_tokens_per_iter; the last one covers the request
        avg = choice.get("avg_decoded_tokens_per_iter")
        if avg is not None:
            st.sd = {"avg_decoded_tokens_per_iter": avg}

    def per_request_sd(self, st) -> dict[str, float] | None:
        if not st.sd:
            return None
        # tokens per iteration, the context iteration included (an AL proxy)
        return {"acceptance_length": float(st.sd["avg_decoded_tokens_per_iter"])}

    async def _poll_once(self, http: httpx.AsyncClient) -> None:
        async with self._lock:
            resp = await http.get("/metrics")
            resp.raise_for_status()
            for it in resp.json() or []:
                self._totals["iterations"] += 1
                kv = it.get("kvCacheStats") or {}
                if "reusedBlocks" in kv:
                    # running totals of the KV cache manager: the latest entry holds them
                    self._totals["prefix_cache_hits"] = float(kv["reusedBlocks"])
                    self._totals["prefix_cache_queries"] = float(
                        kv["reusedBlocks"] + kv.get("missedBlocks", 0))
                spec = it.get("specDecodingStats") or {}
                if spec.get("numDraftTokens", 0) > 0:
                    self._totals["draft_tokens"] += spec["numDraftTokens"]
                    self._totals["accepted"] += spec.get("numAcceptedTokens", 0)
                    # AL = sum(accepted + reqs) / sum(reqs): each request with drafts is one
                    # verify step, which is what "drafts" counts for the other engines.
                    self._totals["drafts"] += spec.get("numRequestsWithDraftTokens", 0)

    async def scrape(self, http: httpx.AsyncClient) -> dict[str, float]:
        await self._poll_once(http)
        out = dict(self._totals)
        with contextlib.suppress(httpx.HTTPError):
            resp = await http.get("/prometheus/metrics")
            if resp.status_code == 200:
                out.update(self.counters_from_prometheus(resp.text))
        return out

    def start_polling(self, http: httpx.AsyncClient) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.POLL_INTERVAL_S)
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    await self._poll_once(http)

        self._poller = asyncio.get_running_loop().create_task(loop())

    async def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
