"""The interface every engine adapter implements: build a request, parse its stream, scrape the
server's SD statistics. One small module per engine sits behind it (vllm, sglang, trtllm,
llamacpp, openai)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadgen.engines.sampling import Sampling
from loadgen.engines.sse import ERROR_EVENT, SseParser
from loadgen.results.summary import AcceptanceSummary, PrefixCacheStats

_loads = orjson.loads  # ~4x faster than json.loads on a stream chunk


def one_line(text: str, limit: int = 300) -> str:
    """A server's message as one bounded line (whitespace runs, newlines included, collapsed)."""
    return " ".join(text[:8 * limit].split())[:limit]


_SCRIPT = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_TAG = re.compile(r"(?s)<[^>]*>")


def error_text(body: bytes, limit: int = 300) -> str:
    """An error response's body as one bounded line: an HTML page (a proxy's 502) becomes its
    text, markup and scripts dropped."""
    text = body[:16384].decode("utf-8", "replace")
    if "<" in text and ">" in text and _TAG.search(text):
        text = html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", text)))
    return one_line(text, limit) or "(empty body)"


@dataclass(slots=True)
class StreamState:
    """What one streamed response has told us so far. Tokens are counted from ids or cumulative
    counts in the payload, never from the number of events."""

    sse: SseParser = field(default_factory=SseParser)  # this stream's SSE framing
    tokens: int = 0
    arrivals_ns: list[int] = field(default_factory=list)  # one per token-carrying event
    event_tokens: list[int] = field(default_factory=list)  # tokens in that event
    token_ids: list[int] | None = None  # kept only when asked (greedy-equality checks)
    ids_complete: bool = True  # False when the engine's stream omitted some ids
    text_parts: list[str] | None = None  # output text, kept for tokenizer-neutral counts
    done: bool = False  # the stream's terminal marker arrived ([DONE] / stop: true)
    final_seen: bool = False  # the final chunk (usage / finish) arrived
    finish_reason: str | None = None
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    sd: dict[str, Any] | None = None  # per-request SD fields as the engine names them
    error: str | None = None
    reasoning_tokens: int = 0  # of ``tokens``: those that came as reasoning deltas
    provisional: bool = False  # counted one per text event until a final usage reconciles
    reasoning_parts: list[str] | None = None  # reasoning text, kept with text_parts

    def add(self, n: int, stamp: int, ids: list[int] | None = None) -> None:
        if n <= 0:
            return
        self.tokens += n
        self.arrivals_ns.append(stamp)
        self.event_tokens.append(n)
        if self.token_ids is not None and ids is not None:
            self.token_ids.extend(ids)


class EngineAdapter:
    name: ClassVar[str] = "base"
    stream_path: ClassVar[str] = "/v1/completions"
    metrics_path: ClassVar[str | None] = "/metrics"
    health_path: ClassVar[str] = "/health"
    # whether the stream ends with a terminal marker after the final chunk
    has_done_marker: ClassVar[bool] = True
    # what probe() reads (JSON, kept in the manifest; /v1/models also gives max_model_len)
    PROBE_PATHS: ClassVar[tuple[str, ...]] = ("/version", "/v1/models", "/loadgen/info")
    # whether a connection may carry the next request (False: the server closes it anyway)
    reuse_connections: ClassVar[bool] = True
    # tokenizer-neutral counting of the output text (vendor endpoints), and how tokens were
    # counted when the stream carries no ids; None for engines that send token ids
    neutral_count: Callable[[str], int] | None = None
    neutral_tokenizer: str | None = None
    token_count_source: str | None = None
    # Whether the stream carries per-request SD numbers: "always" (when SD is on), "optional"
    # (only with a server flag: a first request tells) or "never". Category windows
    # (docs/METRICS.md) are the default when they are absent.
    per_request_sd_support: ClassVar[str] = "always"
    # whether prompts may be text records (messages) instead of token ids
    accepts_text: ClassVar[bool] = False

    # prefix cache: whether requests take vLLM's `cache_salt`, the engine's flush endpoint,
    # and the unit of its reuse counters (docs/METRICS.md, "Prefix cache")
    supports_cache_salt: ClassVar[bool] = False
    flush_path: ClassVar[str | None] = None
    prefix_cache_unit: ClassVar[str] = "tokens"

    def __init__(self, model: str | None = None, keep_token_ids: bool = False,
                 sampling: Sampling | None = None) -> None:
        self.model = model
        self.keep_token_ids = keep_token_ids
        self.sampling = sampling or Sampling()
        self.cache_salt: str | None = None

    # -- requests -------------------------------------------------------------------------------
    def build_body(self, prompt_ids: list[int], max_tokens: int,
                   seed: int | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def sampling_fields(self, seed: int | None) -> dict[str, Any]:
        """The run's sampling in the OpenAI-style names that vLLM, TRT-LLM and llama.cpp
        share (temperature, top_p, top_k, seed); unset ones are left to the engine."""
        s = self.sampling
        out: dict[str, Any] = {"temperature": s.temperature}
        if s.top_p is not None:
            out["top_p"] = s.top_p
        if s.top_k is not None:
            out["top_k"] = s.top_k
        if seed is not None:
            out["seed"] = seed
        return out

    def encode(self, prompt_ids: list[int], max_tokens: int,
               messages: list[dict[str, str]] | None = None, seed: int | None = None) -> bytes:
        """The request body. ``messages`` (the record's text conversation) is for adapters
        that send text; token-id adapters ignore it. ``seed``: the per-request seed."""
        return orjson.dumps(self.build_body(prompt_ids, max_tokens, seed))

    def new_state(self) -> StreamState:
        return StreamState(token_ids=[] if self.keep_token_ids else None)

    # -- the stream (hot path) ------------------------------------------------------------------
    def feed(self, st: StreamState, data: bytes, stamp: int) -> None:
        """Frame SSE events out of body bytes (loadgen/engines/sse.py) and hand each event's
        data to on_event; an ``error`` event is the request's error. Raises ``SseError`` for
        an event over the size cap (the transport then closes the connection)."""
        sse = st.sse
        payload = sse.single(data)  # the hot path: one whole `data:` event in this read
        if payload is not None:
            try:
                self.on_event(st, payload, stamp)
            except (AttributeError, KeyError, TypeError, IndexError, ValueError) as exc:
                self._unexpected(st, payload, exc)
            return
        for name, payload in sse.feed_general(data):
            if name is None:
                try:
                    self.on_event(st, payload, stamp)
                except (AttributeError, KeyError, TypeError, IndexError, ValueError) as exc:
                    self._unexpected(st, payload, exc)
            elif name == ERROR_EVENT:
                st.error = st.error or "server error event: " + one_line(
                    payload.decode("utf-8", "replace"))
            # other event names (none of the engines sends one) carry nothing we count

    def _unexpected(self, st: StreamState, payload: bytes, exc: Exception) -> None:
        """Valid JSON of a shape the adapter does not know: the request's error."""
        st.error = st.error or (f"the server sent a stream event of a shape the {self.name} "
                                f"protocol does not have (a field missing or of another type): "
                                f"{one_line(payload.decode('utf-8', 'replace'), 80)}")

    def on_event(self, st: StreamState, payload: bytes, stamp: int) -> None:
        raise NotImplementedError

    def parse_event(self, st: StreamState, payload: bytes) -> dict[str, Any] | None:
        """The common prelude of every engine's event: the ``[DONE]`` marker, JSON, and an
        ``error`` object in the stream. Returns the chunk, or None when there is nothing more
        to read from this event."""
        if payload == b"[DONE]":
            st.done = True
            return None
        try:  # once per streamed event
            obj = _loads(payload)
        except ValueError:
            st.error = st.error or ("malformed JSON chunk: "
                                    + one_line(payload.decode("utf-8", "replace"), 80))
            return None
        if type(obj) is not dict:
            st.error = st.error or ("stream event is not a JSON object: "
                                    + one_line(payload.decode("utf-8", "replace"), 80))
            return None
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            st.error = "server error in stream: " + one_line(str(msg))
            return None
        return obj

    def check_complete(self, st: StreamState) -> str | None:
        """Why a stream that ended is not a complete response, or None."""
        if st.error:
            return st.error
        if self.has_done_marker and not st.done:
            return "stream ended without its [DONE] marker"
        if not st.final_seen:
            return "stream ended without its final chunk"
        return None

    def per_request_sd(self, st: StreamState) -> dict[str, float] | None:
        """Per-request SD numbers: ``{"acceptance_length", "drafted", "accepted"}`` as far as
        the engine tells (docs/METRICS.md says which formula each engine's value follows)."""
        return None

    # -- server statistics ----------------------------------------------------------------------
    async def scrape(self, http: httpx.AsyncClient) -> dict[str, float]:
        """A snapshot of monotonic counters (names are loadgen's, see ``COUNTERS``)."""
        if self.metrics_path is None:
            return {}
        resp = await http.get(self.metrics_path)
        resp.raise_for_status()
        return self.counters_from_prometheus(resp.text)

    # (loadgen name, exposition sample name, label that splits it or None)
    COUNTERS: ClassVar[tuple[tuple[str, str, str | None], ...]] = ()

    def counters_from_prometheus(self, text: str) -> dict[str, float]:
        wanted = {sample: (ours, label) for ours, sample, label in self.COUNTERS}
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                hit = wanted.get(s.name)  # exact names: `_created` series never match
                if hit is None:
                    continue
                ours, label = hit
                key = f"{ours}{s.labels[label]}" if label else ours
                out[key] = out.get(key, 0.0) + s.value  # summed over engines / data parallel
        return out

    def acceptance(self, delta: dict[str, float]) -> AcceptanceSummary | None:
        """SD acceptance from counter deltas over the window (vLLM's formulas by default)."""
        drafts = delta.get("drafts", 0.0)
        if "drafts" not in delta or drafts <= 0:
            return None
        accepted = delta.get("accepted", 0.0)
        draft_tokens = delta.get("draft_tokens", 0.0)
        per_pos = []
        i = 0
        while f"accepted_pos_{i}" in delta:
            per_pos.append(delta[f"accepted_pos_{i}"])
            i += 1
        per_pos_rate = [p / drafts for p in per_pos] if per_pos else None
        cond = None
        if per_pos:
            prev = [drafts, *per_pos[:-1]]
            cond = [p / q if q else 0.0 for p, q in zip(per_pos, prev, strict=True)]
        return AcceptanceSummary(
            source=f"server_counters:{self.name}",
            acceptance_length=1.0 + accepted / drafts,
            acceptance_rate=accepted / draft_tokens if draft_tokens else None,
            per_position_rate=per_pos_rate, conditional_rate=cond,
            drafts=drafts, draft_tokens=draft_tokens, accepted_tokens=accepted,
        )

    # -- prefix cache ---------------------------------------------------------------------------
    async def prepare_prefix_cache(self, http: httpx.AsyncClient, keep: bool,
                                   salt: str) -> str:
        """Make this run's prefill its own: a per-run ``cache_salt`` where the engine takes one,
        else the engine's cache flush, else nothing. Returns the policy: ``kept``, ``salted``,
        ``flushed`` or ``unprotected``."""
        if keep:
            return "kept"
        if self.supports_cache_salt:
            self.cache_salt = salt
            return "salted"
        if self.flush_path:
            try:
                r = await http.post(self.flush_path)
                if r.status_code == 200:
                    return "flushed"
            except httpx.HTTPError:
                pass
        return "unprotected"

    async def renew_prefix_cache(self, http: httpx.AsyncClient, policy: str | None,
                                 salt: str) -> None:
        """At a window's opening: a new salt, or another flush, so that what the warm-up
        requests (the same prompts) prefilled is not served from cache inside the window."""
        if policy == "salted":
            self.cache_salt = salt
        elif policy == "flushed" and self.flush_path:
            with contextlib.suppress(httpx.HTTPError):
                await http.post(self.flush_path)

    def prefix_cache(self, delta: dict[str, float] | None, end: dict[str, float] | None,
                     sent_prompt_tokens: float) -> PrefixCacheStats | None:
        """Prefix-cache reuse over the window from counter deltas (``prefix_cache_queries``,
        ``prefix_cache_hits``); ``end`` is the window-end snapshot (for gauges) and
        ``sent_prompt_tokens`` the prompt tokens of the requests prefilled in the window."""
        if not delta or "prefix_cache_queries" not in delta:
            return None
        q, h = delta["prefix_cache_queries"], delta.get("prefix_cache_hits", 0.0)
        return PrefixCacheStats(source=f"server_counters:{self.name}",
                                unit=self.prefix_cache_unit, queries=q, hits=h,
                                hit_rate=h / q if q > 0 else None)

    async def probe(self, http: httpx.AsyncClient, timeout_s: float = 5.0) -> dict[str, Any]:
        """What the server says about itself (version, SD config, max model length), for the
        run manifest. ``PROBE_PATHS`` are asked concurrently, each bounded by ``timeout_s``; no
        answer is no entry."""

        async def one(path: str) -> tuple[str, Any]:
            try:
                r = await asyncio.wait_for(http.get(path), timeout_s)
                if r.status_code == 200:
                    return path, r.json()
            except (httpx.HTTPError, ValueError, TimeoutError):
                pass
            return path, None

        answers = await asyncio.gather(*(one(p) for p in self.PROBE_PATHS))
        return {path: body for path, body in answers if body is not None}

    def start_polling(self, http: httpx.AsyncClient) -> None:
        """Engines whose stats are consumed on read poll in the background (TRT-LLM)."""

    async def stop_polling(self) -> None:
        return None
