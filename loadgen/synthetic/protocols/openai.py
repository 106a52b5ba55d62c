"""OpenAI-style ``/v1/completions`` and ``/v1/chat/completions`` as vLLM, SGLang and TRT-LLM
serve them. The three differ in a few switches (token ids in chunks, text, extra choice fields,
per-request SD metrics), which ``CompletionOptions`` carries."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadgen.synthetic.engine import Sequence
from loadgen.synthetic.http import Response
from loadgen.synthetic.wire import SSE_DONE, BadRequest, detokenize, sse, tokenize_text


def is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def prompt_ids_from(body: dict[str, Any], vocab_size: int) -> list[int]:
    """``prompt`` as token ids (a list, or a one-element batch of one list) or as text."""
    prompt = body.get("prompt")
    if prompt is None:
        raise BadRequest("field 'prompt' is required")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenize_text(prompt)
    elif is_token_list(prompt):
        ids = prompt
    else:
        raise BadRequest("field 'prompt' must be a string or a list of token ids "
                         "(batched prompts are not served by the synthetic engine)")
    if not ids:
        raise BadRequest("prompt is empty")
    bad = next((t for t in ids if t >= vocab_size), None)
    if bad is not None:
        raise BadRequest(f"token id {bad} is out of vocabulary (size {vocab_size})")
    return ids


def chat_prompt_ids(body: dict[str, Any]) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("field 'messages' must be a non-empty list")
    parts = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise BadRequest("each message needs a string 'content'")
        parts.append(f"<|{m.get('role', 'user')}|>{m['content']}")
    return tokenize_text("".join(parts) + "<|assistant|>")


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "seed", "sampling_seed")


def sampling_of(params: dict[str, Any]) -> dict[str, Any]:
    """The sampling fields a request carried, under the names it used (for the truth log)."""
    return {k: params[k] for k in SAMPLING_FIELDS if k in params}


def int_field(body: dict[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadRequest(f"field '{name}' must be an integer >= {minimum}")
    return value


def check_stream_options(body: dict[str, Any]) -> tuple[bool, bool, bool]:
    """(stream, include_usage, continuous_usage_stats)."""
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options")
    if opts is not None:
        if not stream:
            raise BadRequest("Stream options can only be defined when `stream=True`.")
        if not isinstance(opts, dict):
            raise BadRequest("field 'stream_options' must be an object")
    opts = opts or {}
    return stream, bool(opts.get("include_usage")), bool(opts.get("continuous_usage_stats"))


def completion_sequence(server: Any, body: dict[str, Any]) -> tuple[Sequence, bool, bool, bool]:
    """A /v1/completions body as a sequence: (seq, stream, include_usage, continuous_usage)."""
    ids = prompt_ids_from(body, server.engine.vocab_size)
    max_tokens = int_field(body, "max_tokens", 16, 1)
    stream, include_usage, continuous = check_stream_options(body)
    seq = server.engine.new_sequence(server.next_rid(), ids, max_tokens,
                                     bool(body.get("ignore_eos", False)),
                                     int_field(body, "min_tokens", 0, 0) or 0)
    seq.sampling = sampling_of(body)
    return seq, stream, include_usage, continuous


@dataclass(slots=True)
class CompletionOptions:
    model: str
    token_ids: bool  # put delta ids in choices[0].token_ids
    text: bool  # put detokenized text in choices[0].text
    include_usage: bool
    continuous_usage: bool
    prompt_ids_first: bool = False  # vLLM: first chunk carries prompt_token_ids
    choice_extra: Callable[[Sequence], dict[str, Any]] | None = None  # TRT-LLM
    final_extra: Callable[[Sequence], dict[str, Any]] | None = None  # vLLM per-request SD
    chat: bool = False
    reasoning_tokens: int = 0  # chat: the reply's first N tokens are reasoning_content deltas


def _usage(seq: Sequence) -> dict[str, int]:
    p, c = len(seq.prompt_ids), len(seq.generated)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


class CompletionFormatter:
    def __init__(self, rid: str, opts: CompletionOptions) -> None:
        self.opts = opts
        self.id = ("chatcmpl-" if opts.chat else "cmpl-") + rid
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if opts.chat else "text_completion"
        self._first = True

    def _choice(self, seq: Sequence, tokens: list[int], finished: bool) -> dict[str, Any]:
        o = self.opts
        choice: dict[str, Any] = {"index": 0}
        if o.chat:
            # the reply's first `reasoning_tokens` tokens go out as reasoning (a reasoning
            # parser's split); a chunk that spans the boundary carries both fields
            start = len(seq.generated) - len(tokens)
            cut = max(0, min(len(tokens), o.reasoning_tokens - start))
            delta: dict[str, Any] = {}
            if self._first:
                delta["role"] = "assistant"
            if cut:
                delta["reasoning_content"] = detokenize(tokens[:cut])
            if cut < len(tokens) or not cut:
                delta["content"] = detokenize(tokens[cut:])
            choice["delta"] = delta
        else:
            choice["text"] = detokenize(tokens) if o.text else ""
        choice["logprobs"] = None
        choice["finish_reason"] = seq.finish_reason if finished else None
        choice["stop_reason"] = None
        if o.token_ids:
            choice["token_ids"] = tokens
            if o.prompt_ids_first and self._first:
                choice["prompt_token_ids"] = seq.prompt_ids
        if o.choice_extra is not None:
            choice.update(o.choice_extra(seq))
        return choice

    def events(self, seq: Sequence, tokens: list[int], finished: bool) -> list[tuple[bytes, int]]:
        chunk: dict[str, Any] = {
            "id": self.id, "object": self.object, "created": self.created,
            "model": self.opts.model, "choices": [self._choice(seq, tokens, finished)],
        }
        self._first = False
        if self.opts.continuous_usage:
            chunk["usage"] = _usage(seq)
        return [(sse(chunk), len(tokens))]

    def tail(self, seq: Sequence) -> list[bytes]:
        out = []
        if self.opts.include_usage:
            final: dict[str, Any] = {
                "id": self.id, "object": self.object, "created": self.created,
                "model": self.opts.model, "choices": [], "usage": _usage(seq),
            }
            if self.opts.final_extra is not None:
                final.update(self.opts.final_extra(seq))
            out.append(sse(final))
        out.append(SSE_DONE)
        return out

    def complete(self, seq: Sequence) -> Response:
        choice = self._choice(seq, seq.generated, True)
        if self.opts.chat:
            delta = choice.pop("delta")
            choice["message"] = {"role": "assistant", "content": delta.get("content", "")}
            if "reasoning_content" in delta:
                choice["message"]["reasoning_content"] = delta["reasoning_content"]
        body: dict[str, Any] = {
            "id": self.id, "object": "chat.completion" if self.opts.chat else "text_completion",
            "created": self.created, "model": self.opts.model, "choices": [choice],
            "usage": _usage(seq),
        }
        if self.opts.final_extra is not None:
            body.update(self.opts.final_extra(seq))
        return Response.json(200, body)
