"""One request's life: encode, send, stream, check, record. Every way it can end is a record.

A conversation (a multi-turn prompt) is sent turn by turn: the next turn's ids are the previous
ids, the reply's ids and the next user turn (text records: the previous messages, the reply's
text as an assistant message and the next user turn). Each turn is one record. A reply that came
without every output id (OpenAI-compatible streams) is tokenized from its text instead, with the
prompt file's tokenizer (``reply_ids``, set from client/replay.py); the next turn's record counts
those ids (``prompt_ids_from_text``).

A request answered 429 is retried up to ``--retry-429`` times, each after its Retry-After
(bounded by what is left of the request timeout); it stays one record whose latency counts
from its first scheduled send, with ``retries`` saying how many resends it took.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any

from loadgen.client.plan import Item
from loadgen.client.replay import chat_turns
from loadgen.client.transport import Exchange, HttpClient, TransportError
from loadgen.config import RunConfig
from loadgen.engines.base import EngineAdapter, StreamState, error_text, one_line
from loadgen.engines.sse import SseError
from loadgen.results.records import CANCELLED, ERROR, OK, RequestRecord

_now_ns = time.monotonic_ns
DEFAULT_RETRY_AFTER_S = 1.0  # a 429 without a usable Retry-After


def retry_after_s(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    return max(0.0, when.timestamp() - time.time())


@dataclass(slots=True)
class Opening:
    """A conversation's first request: text or ids, the later turns, the encoded body and the
    bytes written on the wire for it (``HttpClient.message``)."""

    text: bool
    ids: list[int]
    messages: list[dict[str, str]] | None
    turns: list[Any]
    body: bytes | None
    message: bytes | None = None


@dataclass(slots=True)
class Written:
    """An opening request handed to the kernel (``RequestSender.write``), its record not yet
    made (``RequestSender.begin``): the exchange and the stamp taken just before the write."""

    exchange: Exchange
    sent: list[int]


@dataclass(slots=True)
class Turn:
    """One request on its way: its record, stream state, when it left the loop (``released``),
    the stamps of its attempts' sends, and its exchange once written (``begin``)."""

    rec: RequestRecord
    st: StreamState
    released: int
    sent: list[int] = field(default_factory=list)
    exchange: Exchange | None = None
    taken: bool = False  # its conversation went on with it (else ``abandon``)


class RequestSender:
    """Sends requests of one run through one HTTP client and hands each finished record (as a
    dict) to ``on_record``."""

    def __init__(self, cfg: RunConfig, adapter: EngineAdapter, client: HttpClient,
                 on_record: Callable[[dict[str, Any]], None]) -> None:
        self.cfg = cfg
        self.adapter = adapter
        self.client = client
        self.on_record = on_record
        self.in_flight = 0
        # a reply's text to ids, for a stream without every output id (client/replay.py)
        self.reply_ids: Callable[[str], list[int]] | None = None

    def max_tokens(self, item: Item) -> int:
        return self.cfg.load.output_len or item.prompt.max_tokens or 256

    def opening(self, item: Item, wire: bool = False) -> Opening:
        """What the conversation's first request sends, its body encoded: the open loop
        builds it ahead of the scheduled time (loadgen/client/loops.py); ``wire``: its bytes
        on the wire too, for the loop to write itself (``write``)."""
        p = item.prompt
        text = not p.prompt_token_ids  # a text record (loadgen/data/prompts.py)
        # never copied: a 14k-id list per request in flight is what a collection inside the
        # window would have to scan (turns build new lists; nothing here mutates ids)
        ids = p.prompt_token_ids
        messages = list(p.messages) if p.messages else None
        later = (p.text_turns if text else p.turns) if self.cfg.load.multi_turn else None
        if not text and messages and self.adapter.sends_messages:
            # a chat endpoint takes the token-id record's text: replayed as a text record
            text, ids = True, []
            messages, text_later = chat_turns(messages)
            later = text_later if self.cfg.load.multi_turn else None
        try:
            body: bytes | None = self.adapter.encode(
                ids, self.max_tokens(item), messages,
                self.adapter.sampling.request_seed(item.index, 0))
        except Exception:  # encoded again inside the request, whose record says why
            body = None
        message = (self.client.message(self.adapter.stream_path, body)
                   if wire and body is not None else None)
        return Opening(text, ids, messages, list(later or []), body, message)

    async def conversation(self, item: Item, scheduled_ns: int,
                           opening: Opening | None = None, begun: Turn | None = None) -> None:
        """Every turn of ``item``'s conversation (``opening``: its first request prepared;
        ``begun``: that request already written, ``begin``), each turn's record handed on."""
        first = opening if opening is not None else self.opening(item)
        text, ids, messages, turns = first.text, first.ids, first.messages, first.turns
        body: bytes | None = first.body
        from_text = 0  # prompt ids tokenized from earlier replies' text
        for turn in range(len(turns) + 1):
            rec, reply = await self.one_turn(item, ids, messages, turn, scheduled_ns,
                                             keep=turn < len(turns), from_text=from_text,
                                             body=body, begun=begun)
            body = begun = None
            self.on_record(rec.to_dict())
            if rec.status != OK or turn == len(turns):
                return
            # next turn: what the model saw, its reply, then the next user turn
            if text:
                assert messages is not None
                messages = [*messages, {"role": "assistant", "content": reply or ""},
                            {"role": "user", "content": turns[turn]}]
            else:
                reply_ids = rec.token_ids
                if reply_ids is None or len(reply_ids) != rec.output_tokens:
                    assert self.reply_ids is not None  # else _finish made it an error
                    reply_ids = self.reply_ids(reply or "")
                    from_text += len(reply_ids)
                ids = ids + reply_ids + turns[turn]
            scheduled_ns = 0  # later turns are sent as soon as the previous reply ends

    def write(self, opening: Opening) -> Written | None:
        """The conversation's first request written now, without yielding to the event loop,
        when a connection is ready for it (``HttpClient.start``); None when not (the
        conversation then sends it as any other). Only the write: a burst of requests due
        at one time is written first, their records made after (``begin``)."""
        if opening.message is None:
            return None
        sent: list[int] = []
        exchange = self.client.start(opening.message, reuse=self.adapter.reuse_connections,
                                     sent=sent)
        return None if exchange is None else Written(exchange, sent)

    def begin(self, item: Item, scheduled_ns: int, opening: Opening, written: Written) -> Turn:
        """The record and stream state of a request ``write`` has written, in the same turn
        of the loop; ``conversation(..., begun=)`` goes on with it."""
        t = self._turn(item, opening.ids, 0, scheduled_ns, bool(opening.turns), 0,
                       released=written.sent[0])
        t.sent, t.exchange = written.sent, written.exchange
        written.exchange.stream_to(partial(self.adapter.feed, t.st))
        return t

    def abandon(self, t: Turn) -> None:
        """A begun request whose conversation was cancelled before it could go on (Ctrl-C in
        the same turn of the loop): its record, cancelled; its connection closed."""
        if t.taken:
            return
        t.taken = True
        if t.exchange is not None:
            t.exchange.done.cancel()  # nobody awaits it: no "exception never retrieved"
            t.exchange.conn.abort()
        self.in_flight -= 1
        rec = t.rec
        rec.end_ns = _now_ns()
        rec.status, rec.error = CANCELLED, "run interrupted"
        if t.sent:
            rec.send_ns = t.sent[0]
            rec.send_delay_ns = t.sent[0] - t.released
        self._finish(rec, t.st, False)
        self.on_record(rec.to_dict())

    def _turn(self, item: Item, ids: list[int], turn: int, scheduled_ns: int, keep: bool,
              from_text: int, released: int | None = None) -> Turn:
        """A request about to be sent (``released``: written already, at that stamp): its
        record and stream state, counted in flight."""
        p = item.prompt
        text = not ids
        rec = RequestRecord(index=item.index, prompt_id=p.id, category=p.category, turn=turn,
                            warmup=item.warmup, input_tokens=len(ids),
                            expected_tokens=self.max_tokens(item), scheduled_ns=scheduled_ns,
                            text_prompt=text,
                            seed=self.adapter.sampling.request_seed(item.index, turn),
                            prompt_ids_from_text=from_text or None)
        self.in_flight += 1
        # the request left the loop; the wire stamp is in ``sent``
        rec.send_ns = _now_ns() if released is None else released
        return Turn(rec, self._new_state(keep, text), rec.send_ns)

    async def one_turn(self, item: Item, ids: list[int],
                       messages: list[dict[str, str]] | None, turn: int, scheduled_ns: int,
                       keep: bool, from_text: int = 0, body: bytes | None = None,
                       begun: Turn | None = None) -> tuple[RequestRecord, str | None]:
        """One request (``body``: already encoded; ``begun``: already written, ``begin``);
        returns its record and, for a turn kept for its next turn, the reply's text (when
        the stream's text was kept)."""
        max_tokens = self.max_tokens(item)
        ad = self.adapter
        text = not ids
        t = begun if begun is not None else self._turn(item, ids, turn, scheduled_ns, keep,
                                                       from_text)
        t.taken = True
        rec, st, released, sent = t.rec, t.st, t.released, t.sent
        feed = ad.feed
        exchange = t.exchange
        try:
            if body is None:
                body = ad.encode(ids, max_tokens, messages, rec.seed)
            # connect and response, end to end
            async with asyncio.timeout(self.cfg.endpoint.timeout_s):
                while True:
                    res = await self.client.post(ad.stream_path, body, sink=partial(feed, st),
                                                 reuse=ad.reuse_connections, sent=sent,
                                                 started=exchange)
                    exchange = None
                    if res.status != 429 or rec.retries >= self.cfg.endpoint.retry_429:
                        break
                    wait = retry_after_s(res.headers.get("retry-after"))
                    left = self.cfg.endpoint.timeout_s - (_now_ns() - released) / 1e9
                    if wait >= left:
                        break  # the retry could not finish within the request timeout
                    rec.retries += 1
                    rec.retry_after = res.headers.get("retry-after")
                    # the whole Retry-After: a timer may fire up to a millisecond early
                    until = _now_ns() + int(wait * 1e9)
                    while (rest := until - _now_ns()) > 0:
                        await asyncio.sleep(rest / 1e9)
                    st = self._new_state(keep, text)
            rec.end_ns = _now_ns()
            rec.http_status = res.status
            rec.headers_ns = res.headers_ns
            rec.connect_ns = res.connect_ns
            rec.resent = res.resent
            if res.status != 200:
                rec.status = ERROR
                rec.retry_after = res.headers.get("retry-after")
                rec.error = f"HTTP {res.status}: {error_text(res.body)}"
            else:
                reason = ad.check_complete(st)
                ctype = res.headers.get("content-type", "")
                if reason and not st.arrivals_ns and ctype and "event-stream" not in ctype:
                    reason = f"answered {one_line(ctype)}, not an event stream ({reason})"
                if reason is None and st.tokens != max_tokens:
                    reason = (f"output length {st.tokens} != requested {max_tokens} "
                              f"(finish_reason {st.finish_reason!r})")
                rec.status, rec.error = (ERROR, reason) if reason else (OK, None)
        except (TransportError, SseError) as exc:
            rec.end_ns = _now_ns()
            rec.status, rec.error = ERROR, one_line(str(exc))
        except TimeoutError:
            rec.end_ns = _now_ns()
            rec.status, rec.error = ERROR, f"timed out after {self.cfg.endpoint.timeout_s:g} s"
        except asyncio.CancelledError:
            rec.end_ns = _now_ns()
            rec.status, rec.error = CANCELLED, "run interrupted"
        except Exception as exc:  # anything else is this request's error, never a dead worker
            rec.end_ns = _now_ns()
            rec.status, rec.error = ERROR, one_line(f"client error: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
            if sent:  # the first attempt's start: at its connect, or its write
                rec.send_ns = sent[0]
                rec.send_delay_ns = sent[0] - released
            if not scheduled_ns:
                rec.scheduled_ns = rec.send_ns
            self._finish(rec, st, keep)
        reply = "".join(st.text_parts) if keep and st.text_parts is not None else None
        return rec, reply

    def _new_state(self, keep: bool, text: bool) -> StreamState:
        """A stream state that keeps what the next turn needs: the output ids of a token-id
        turn, and its text too where a reply may come without them (``reply_ids``)."""
        st = self.adapter.new_state()
        if keep and not text and st.token_ids is None:
            st.token_ids = []
        if keep and (text or self.reply_ids is not None) and st.text_parts is None:
            st.text_parts = []
        return st

    def _finish(self, rec: RequestRecord, st: StreamState, keep: bool) -> None:
        ad = self.adapter
        if st.arrivals_ns:
            rec.first_token_ns = st.arrivals_ns[0]
        rec.output_tokens = st.tokens
        rec.events = len(st.arrivals_ns)
        rec.arrivals_ns = st.arrivals_ns
        rec.event_tokens = st.event_tokens
        rec.usage_prompt_tokens = st.usage_prompt_tokens
        rec.usage_completion_tokens = st.usage_completion_tokens
        rec.finish_reason = st.finish_reason
        rec.sd = st.sd
        sd = ad.per_request_sd(st)
        rec.acceptance_length = sd.get("acceptance_length") if sd else None
        rec.token_ids = st.token_ids if st.ids_complete else None
        if rec.text_prompt:
            # the server's count of the text it was sent (no ids on this side)
            rec.input_tokens = st.usage_prompt_tokens or 0
        if st.reasoning_parts or st.reasoning_tokens:  # reasoning deltas came
            rec.reasoning_tokens = st.reasoning_tokens
        if ad.neutral_count is not None and st.text_parts is not None:
            rec.neutral_output_tokens = ad.neutral_count(
                "".join(st.reasoning_parts or ()) + "".join(st.text_parts))
        if keep and not rec.text_prompt and rec.status == OK and self.reply_ids is None and (
                rec.token_ids is None or len(rec.token_ids) != rec.output_tokens):
            rec.status = ERROR
            rec.error = ("cannot replay the next turn: the stream did not carry every "
                         "output token id")
        if rec.status == OK and rec.usage_completion_tokens not in (None, rec.output_tokens):
            rec.status = ERROR
            rec.error = (f"server usage says {rec.usage_completion_tokens} tokens, the "
                         f"stream carried {rec.output_tokens}")
