"""A vendor's OpenAI-compatible endpoint.

``completions`` mode (default) sends the token ids to /v1/completions, where the vendor accepts
them (a text record, with no ids, is sent as a text ``prompt``: its messages' contents joined by
blank lines); ``chat`` mode sends the record's text ``messages`` to /v1/chat/completions.
Reasoning models' ``reasoning_content`` (or ``reasoning``) deltas are output tokens and are also
counted apart (``reasoning_tokens``). Tokens are
counted, in order of preference, from ``token_ids`` in the chunk, from cumulative
``usage.completion_tokens`` (continuous usage), or by tokenizing each text delta with the
dataset's tokenizer (``count_text``); the summary says which (``token_count_source``). The API key
comes from the environment and is never written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from loadgen.engines.base import EngineAdapter, StreamState
from loadgen.engines.sampling import Sampling

REASONING_FIELDS = ("reasoning_content", "reasoning")  # older / newer vLLM, DeepSeek-style APIs


def completion_text(messages: list[dict[str, str]]) -> str:
    """A text record as one /v1/completions prompt: the contents joined by blank lines."""
    return "\n\n".join(m["content"] for m in messages)


class OpenAIAdapter(EngineAdapter):
    name = "openai"
    metrics_path = None
    health_path = "/v1/models"
    per_request_sd_support = "never"
    accepts_text = True
    output_ids = "maybe"  # vLLM honours return_token_ids; llama-server and hosted APIs do not

    def __init__(self, model: str | None = None, keep_token_ids: bool = False,
                 mode: str = "completions",
                 count_text: Callable[[str], int] | None = None,
                 sampling: Sampling | None = None) -> None:
        super().__init__(model, keep_token_ids, sampling)
        if mode not in ("completions", "chat"):
            raise ValueError("openai mode must be 'completions' or 'chat'")
        self.mode = mode
        self.stream_path = "/v1/chat/completions" if mode == "chat" else "/v1/completions"
        self.sends_messages = mode == "chat"
        self.count_text = count_text
        self.token_count_source: str | None = None
        from loadgen.engines.tokencount import neutral_counter

        neutral = neutral_counter()
        self.neutral_count, self.neutral_tokenizer = neutral if neutral else (None, None)

    def new_state(self) -> StreamState:
        st = super().new_state()
        if self.neutral_count is not None:
            st.text_parts = []
            st.reasoning_parts = []
        return st

    def encode(self, prompt_ids: list[int], max_tokens: int,
               messages: list[dict[str, str]] | None = None, seed: int | None = None) -> bytes:
        return orjson.dumps(self.build_body(prompt_ids, max_tokens, seed, messages))

    def build_body(self, prompt_ids: list[int], max_tokens: int, seed: int | None = None,
                   messages: list[dict[str, str]] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": max_tokens, "stream": True,
                                "stream_options": {"include_usage": True,
                                                   "continuous_usage_stats": True},
                                "ignore_eos": True, **self.sampling_fields(seed)}
        if self.model:
            body["model"] = self.model
        if self.mode == "chat":
            if not messages:
                raise ValueError("chat mode needs text `messages` in the prompt records")
            body["messages"] = messages
        elif prompt_ids:
            body["prompt"] = prompt_ids
            body["return_token_ids"] = True
        elif messages:
            body["prompt"] = completion_text(messages)
        else:
            raise ValueError("the prompt record has neither token ids nor text")
        return body

    def on_event(self, st: StreamState, payload: bytes, stamp: int) -> None:
        obj = self.parse_event(st, payload)
        if obj is None:
            return
        usage = obj.get("usage")
        choices = obj.get("choices")
        if choices:
            c = choices[0]
            ids = c.get("token_ids")
            reasoning = None
            if "text" in c:
                text = c.get("text")
            else:
                delta = c.get("delta") or {}
                text = delta.get("content")
                reasoning = next((r for f in REASONING_FIELDS if (r := delta.get(f))), None)
            if text and st.text_parts is not None:
                st.text_parts.append(text)
            if reasoning and st.reasoning_parts is not None:
                st.reasoning_parts.append(reasoning)
            before = st.tokens
            if ids is not None:
                self.token_count_source = "token_ids"
                st.add(len(ids), stamp, ids)
            elif st.provisional and usage and usage.get("completion_tokens") is not None:
                self._reconcile(st, usage["completion_tokens"])
            elif usage and usage.get("completion_tokens") is not None:
                self.token_count_source = "continuous_usage"
                st.add(usage["completion_tokens"] - st.tokens, stamp)
            elif text or reasoning:
                if self.count_text is not None:
                    self.token_count_source = "tokenizer_on_text"
                    st.add(self.count_text((text or "") + (reasoning or "")), stamp)
                else:  # one token per text event until the final usage says how many
                    self.token_count_source = "events+final_usage"
                    st.provisional = True
                    st.add(1, stamp)
            if reasoning and not text:  # a reasoning-only delta: its tokens are reasoning
                st.reasoning_tokens += st.tokens - before
            if c.get("finish_reason") is not None:
                st.finish_reason = c["finish_reason"]
                if usage:  # llama-server: the finishing choice carries the final usage
                    self._final_usage(st, usage)
        elif usage:
            if st.provisional and usage.get("completion_tokens") is not None:
                self._reconcile(st, usage["completion_tokens"])
            self._final_usage(st, usage)

    @staticmethod
    def _final_usage(st: StreamState, usage: dict[str, Any]) -> None:
        st.final_seen = True
        st.usage_prompt_tokens = usage.get("prompt_tokens")
        st.usage_completion_tokens = usage.get("completion_tokens")

    @staticmethod
    def _reconcile(st: StreamState, total: int) -> None:
        """A stream with neither ids nor continuous usage (llama-server's OpenAI surface, most
        hosted APIs): the final usage total is split evenly over its text events (largest
        remainders first). Fewer tokens than events stays a mismatch (an error)."""
        n = len(st.event_tokens)
        if n == 0 or total < n or total == st.tokens:
            return
        base, extra = divmod(total, n)
        st.event_tokens = [base + (1 if i < extra else 0) for i in range(n)]
        st.tokens = total
