"""The synthetic SD server: routing, the shared generate-and-stream path, faults and the truth log.

Each engine's protocol (loadgen/synthetic/protocols/) only validates its request bodies and formats
its chunks; everything that must be identical across protocols (how tokens reach the wire, how a
fault is injected, what the truth log records) lives here once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import IO, Any

from loadgen.synthetic.engine import Engine, Sequence
from loadgen.synthetic.faults import PRE_HEADER_KINDS, STREAM_ERROR_MESSAGE, FaultRule
from loadgen.synthetic.http import Connection, Request, Response
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.protocols import make_protocol
from loadgen.synthetic.wire import (
    MALFORMED_EVENT,
    SSE_DONE,
    BadRequest,
    Formatter,
    Route,
    ServerConfig,
    oversized_event,
    sse,
)


class TruthLog:
    """One JSONL record per generation request, written when it ends."""

    def __init__(self, path: Path | None) -> None:
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class SyntheticServer:
    def __init__(self, cfg: ServerConfig, engine: Engine) -> None:
        self.cfg = cfg
        self.engine = engine
        self.truth = TruthLog(cfg.truth_log)
        self.started = time.monotonic()
        self._request_index = itertools.count()
        self._rid = itertools.count()
        self.protocol = make_protocol(cfg.protocol, self)
        self.routes: dict[tuple[str, str], Route] = self.protocol.routes()
        self.routes[("GET", "/loadgen/info")] = self._info

    # -- state ----------------------------------------------------------------------------------
    @property
    def loading(self) -> bool:
        return time.monotonic() - self.started < self.cfg.load_delay_s

    def next_rid(self) -> str:
        return f"{next(self._rid):08d}"

    async def _info(self, req: Request, conn: Connection) -> Response:
        e = self.engine
        return Response.json(200, {
            "protocol": self.cfg.protocol, "model": self.cfg.model_name,
            "spec": {"enabled": e.spec.enabled, "num_spec_tokens": e.k,
                     "accept_rates": e.spec.rates_for([]) if e.spec.enabled else []},
            "timing": {k: getattr(e.timing, k) for k in e.timing.__slots__},
            "seed": e.seed, "stream_interval": self.cfg.stream_interval,
        })

    # -- dispatch -------------------------------------------------------------------------------
    async def handle(self, req: Request, conn: Connection) -> Response | None:
        if self.cfg.never_answer:  # accepts, reads, never replies: health, metrics, everything
            await conn.closed_event.wait()
            return None
        route = self.routes.get((req.method, req.path))
        if route is None:
            if any(path == req.path for _, path in self.routes):
                return self.protocol.error(405, f"method {req.method} not allowed")
            return self.protocol.error(404, f"no route for {req.path}")
        try:
            return await route(req, conn)
        except BadRequest as exc:
            return self.protocol.error(exc.status, str(exc))

    def parse_json(self, req: Request) -> dict[str, Any]:
        try:
            body = req.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    # -- generation -----------------------------------------------------------------------------
    async def generate(self, conn: Connection, seq: Sequence, fmt: Formatter, stream: bool,
                       endpoint: str) -> Response | None:
        if self.loading:
            return self.protocol.error(503, "the model is still loading")
        if len(seq.prompt_ids) + seq.max_tokens > self.cfg.max_model_len:
            raise BadRequest(
                f"prompt ({len(seq.prompt_ids)} tokens) plus max_tokens ({seq.max_tokens}) "
                f"exceeds the maximum context length {self.cfg.max_model_len}")
        index = next(self._request_index)
        if self.cfg.faults.resets_counters_at(index):
            self.engine.reset_counters()
        fault = self.cfg.faults.for_request(index)
        record: dict[str, Any] = {
            "request_id": seq.rid, "index": index, "protocol": self.cfg.protocol,
            "endpoint": endpoint, "prompt_len": len(seq.prompt_ids),
            "prompt_sha256": prompt_digest(seq.prompt_ids), "max_tokens": seq.max_tokens,
            "received_ns": time.monotonic_ns(), "fault": fault.kind if fault else None,
            "connection_id": conn.connection_id,
        }
        req = conn.current
        if req is not None:  # when the request's bytes reached the host (truth TTFT counts
            record["rx_ns"] = req.rx_ns  # from there: it includes the wait in the socket)
            record["rx_source"] = req.rx_source
        if fault is not None and fault.kind in PRE_HEADER_KINDS:
            resp = self._pre_header_fault(conn, fault, record)
            if fault.kind == "hang":
                await conn.closed_event.wait()
            return resp
        if stream:
            await self._stream(conn, seq, fmt, fault, record)
            if self.protocol.close_after_stream:
                conn.close()
            return None
        done = asyncio.get_running_loop().create_future()

        def sink(s: Sequence, tokens: list[int], finished: bool) -> None:
            if finished and not done.done():
                done.set_result(None)

        self.engine.submit(seq, sink)
        if not await self._until_done(conn, seq, done):
            self._finish_record(seq, record, "cancelled")
            return None
        self._finish_record(seq, record, "ok")
        return fmt.complete(seq)

    def _pre_header_fault(self, conn: Connection, fault: FaultRule,
                          record: dict[str, Any]) -> Response | None:
        record.update(status="fault:" + fault.kind, output_len=0, end_ns=time.monotonic_ns())
        self.truth.write(record)
        if fault.kind == "close_before_headers":
            conn.close()
            return None
        if fault.kind == "hang":
            return None  # the caller holds the connection without a byte
        if fault.kind == "http429":
            resp = self.protocol.error(429, "rate limit exceeded (injected)")
            resp.headers["retry-after"] = f"{fault.retry_after:g}"
            return resp
        status = 500 if fault.kind == "http500" else 503
        return self.protocol.error(status, f"injected fault {fault.kind}")

    async def _stream(self, conn: Connection, seq: Sequence, fmt: Formatter,
                      fault: FaultRule | None, record: dict[str, Any]) -> None:
        """Stream a generation. The truth record is written before the response's last byte,
        so a client that has seen the end of its stream can read its record."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        send_ns: list[int] = []
        chunk_tokens: list[int] = []
        interval = self.cfg.stream_interval
        pending: list[int] = []
        sent = 0
        stream_fault = fault.kind if fault else None
        after = fault.after if fault else 0
        stalled = False

        def finish(status: str) -> None:
            if done.done():
                return
            done.set_result(status)
            record["chunk_send_ns"] = send_ns
            record["chunk_tokens"] = chunk_tokens
            if stream_fault == "stall":
                record["stall_s"] = fault.seconds  # type: ignore[union-attr]
            self._finish_record(seq, record, status)

        def sink(s: Sequence, tokens: list[int], finished: bool) -> None:
            nonlocal sent, stalled
            if conn.is_closed:
                self.engine.cancel(s)
                finish("cancelled")
                return
            pending.extend(tokens)
            # The first token always goes out at once (TTFT); later ones in batches of
            # `interval` tokens, as --stream-interval does.
            if not finished and sent > 0 and len(pending) < interval:
                return
            batch = pending.copy()
            pending.clear()
            for payload, ntok in fmt.events(s, batch, finished):
                before = sent
                sent += ntok
                crossed = before < after <= sent
                if stream_fault == "malformed" and crossed:
                    payload = MALFORMED_EVENT
                elif stream_fault == "oversized" and crossed:
                    payload = oversized_event(fault.bytes)  # type: ignore[union-attr]
                stamp = conn.write_chunk(payload)
                send_ns.append(stamp)
                chunk_tokens.append(ntok)
                if crossed and stream_fault == "reset":
                    self.engine.cancel(s)
                    finish("fault:reset")
                    conn.abort()
                    return
                if crossed and stream_fault == "truncate":
                    self.engine.cancel(s)
                    finish("fault:truncate")
                    conn.end_stream()
                    return
                if crossed and stream_fault == "stream_error":
                    self.engine.cancel(s)
                    finish("fault:stream_error")
                    conn.write_chunk(sse({"error": {"message": STREAM_ERROR_MESSAGE,
                                                    "type": "InternalServerError",
                                                    "code": 500}}))
                    if self.protocol.stream_done_marker:
                        conn.write_chunk(SSE_DONE)
                    conn.end_stream()
                    return
                if crossed and stream_fault == "stall" and not stalled:
                    stalled = True
                    s.paused_until = loop.time() + fault.seconds  # type: ignore[union-attr]
            if finished:
                if stream_fault == "truncate":  # `after` beyond the output: drop only the tail
                    finish("fault:truncate")
                    conn.end_stream()
                    return
                tail = fmt.tail(s)
                finish("fault:" + stream_fault if stream_fault in ("malformed", "oversized")
                       else "ok")
                for payload in tail:
                    conn.write_chunk(payload)
                conn.end_stream()

        conn.start_stream()
        self.engine.submit(seq, sink)
        if not await self._until_done(conn, seq, done):
            finish("cancelled")

    async def _until_done(self, conn: Connection, seq: Sequence, done: asyncio.Future) -> bool:
        """Wait until the generation ends or the client goes away (then stop generating for
        it). True if it ended."""
        closed = asyncio.ensure_future(conn.closed_event.wait())
        try:
            await asyncio.wait([done, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not done.done():
            self.engine.cancel(seq)
            return False
        return True

    def _finish_record(self, seq: Sequence, record: dict[str, Any], status: str) -> None:
        record.update(
            status=status, end_ns=time.monotonic_ns(), output_len=len(seq.generated),
            output_token_ids=seq.generated, finish_reason=seq.finish_reason,
            accepted_per_step=seq.accepted_per_step, drafted_per_step=seq.drafted_per_step,
            category_key=seq.prompt_ids[0] if seq.prompt_ids else None,
            sampling=seq.sampling,
        )
        self.truth.write(record)
