"""What the synthetic server and its protocol modules share: the wire helpers, the server
configuration, and the ``Host`` interface a protocol needs from the server.

The protocols import this module, never the server, so the server can import the protocols
without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from loadgen.synthetic.engine import Engine, Sequence
from loadgen.synthetic.faults import FaultPlan
from loadgen.synthetic.http import Connection, Request, Response

Route = Callable[[Request, Connection], Any]


class BadRequest(Exception):
    """A request the engine rejects; ``status`` and message go back in the engine's format."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class ServerConfig:
    protocol: str
    model_name: str = "synthetic-sd"
    load_delay_s: float = 0.0
    max_model_len: int = 131072
    stream_interval: int = 1  # tokens buffered per chunk (vLLM/SGLang --stream-interval)
    incremental_streaming: bool = False  # SGLang --incremental-streaming-output
    per_request_spec_metrics: str | None = None  # vLLM: None | "summary" | "detailed"
    llamacpp_partial_utf8: int = 13  # llama.cpp: ids divisible by this get no event of their own
    add_bos: bool = False  # vLLM: prepend BOS to token-id prompts (what no real engine does)
    reasoning_tokens: int = 0  # vLLM chat: first N reply tokens as reasoning_content deltas
    text_only: bool = False  # vLLM: /v1/completions ignores return_token_ids (text, no ids)
    honour_eos: bool = False  # vLLM: ignore_eos, min_tokens not obeyed (natural lengths)
    truth_log: Path | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)
    never_answer: bool = False  # accept connections, read requests, never send a byte


class Formatter(Protocol):
    """How one endpoint puts a generation on the wire."""

    def events(self, seq: Sequence, tokens: list[int], finished: bool) -> list[tuple[bytes, int]]:
        """Stream events (SSE-framed bytes, tokens carried) for new tokens."""

    def tail(self, seq: Sequence) -> list[bytes]:
        """What follows the last token: final/usage chunk, ``[DONE]``."""

    def complete(self, seq: Sequence) -> Response:
        """The whole response for ``stream: false``."""


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
MALFORMED_EVENT = b'data: {"choices": [{"text": "\xe2\x80\xa6 this chunk is cut\n\n'


def oversized_event(size: int) -> bytes:
    """One SSE event of ``size`` bytes (fault ``oversized``)."""
    head = b'data: {"pad": "'
    return head + b"x" * max(0, size - len(head) - 4) + b'"}\n\n'

# Output tokens are shown as text through a fixed word table, so text-only endpoints have
# something deterministic to show; one token is one word followed by a space.
_WORDS = ("the", "model", "draft", "token", "verify", "accept", "batch", "step", "cache",
          "decode", "serve", "query", "value", "layer", "head", "score", "path", "spec")


def detokenize(tokens: list[int]) -> str:
    return "".join(_WORDS[t % len(_WORDS)] + " " for t in tokens)


def tokenize_text(text: str) -> list[int]:
    """The synthetic tokenizer for text prompts: one token per UTF-8 byte (id = byte + 3)."""
    return [b + 3 for b in text.encode("utf-8")]




class Host(Protocol):
    """What a protocol module uses of the server that hosts it."""

    engine: Engine
    cfg: ServerConfig

    @property
    def loading(self) -> bool: ...

    def next_rid(self) -> str: ...

    def parse_json(self, req: Request) -> dict[str, Any]: ...

    async def generate(self, conn: Connection, seq: Sequence, fmt: Formatter, stream: bool,
                       endpoint: str) -> Response | None: ...
