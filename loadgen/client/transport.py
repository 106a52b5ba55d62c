"""The streaming hot path: HTTP/1.1 over a raw asyncio Protocol, parsed by httptools.

Measured on 2 vCPU (../shared/REFERENCE.md, scripts/bench_client.py): httpx's pool costs ~40 ms
per request at 1,000 connections and ~60 µs per SSE event; a Protocol on uvloop ~25 µs. So streams
go through this module, one kept-alive connection per in-flight request, and every read is stamped
with ``time.monotonic_ns()`` the moment the kernel hands it over, before any parsing.
httpx stays in use for everything off the hot path (health checks, metric scrapes, probes).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httptools

from loadgen.client.connect import Connector, TransportError
from loadgen.client.endpoint import check_header_value

_now_ns = time.monotonic_ns
_SETTLE_NS = 2_000_000  # a connection parked this recently gets one loop turn before reuse

# sink(body_bytes, read_stamp_ns): called for every piece of (de-chunked) response body.
BodySink = Callable[[bytes, int], None]


__all__ = ["BodySink", "Exchange", "HttpClient", "HttpResult", "TransportError"]


@dataclass(slots=True)
class HttpResult:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # only when no sink was given, or for non-2xx responses
    headers_ns: int = 0  # when the status line and headers had arrived
    connect_ns: int = 0  # how long opening this request's connection took; 0 when reused
    resent: bool = False  # sent again: its kept-alive connection was closed under it


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_body", "_done", "_headers", "_keep_alive", "_parser", "_result", "_sink", "_stamp",
        "_stream", "closed", "parked_ns", "received", "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[HttpResult] | None = None
        self._sink: BodySink | None = None
        self._stream: BodySink | None = None  # the sink, once a 2xx status has arrived
        self._result: HttpResult | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._stamp = 0
        self._keep_alive = False
        self.received = 0  # bytes of the current response so far
        self.closed = False
        self.parked_ns = 0  # when it last became idle

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._stamp = _now_ns()
        self.received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"invalid HTTP response: {exc}"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost reports it

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._done is not None and not self._done.done():
            where = "mid-response" if self._result is not None else "before the response headers"
            reason = f"connection {'reset' if exc else 'closed'} {where}"
            self._fail(TransportError(reason + (f" ({exc})" if exc else "")))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        self._result = HttpResult(status, self._headers, headers_ns=self._stamp)
        self._stream = self._sink if 200 <= status < 300 else None

    def on_body(self, body: bytes) -> None:
        # the hot path: one call per streamed event
        sink = self._stream
        if sink is None:
            self._body.append(body)
            return
        try:
            sink(body, self._stamp)
        except Exception as exc:  # the sink's own error (an oversized SSE event, a bug)
            self._stream = self._sink = None
            self._fail(exc)  # is the request's error, not "invalid HTTP response"
            self.abort()

    def on_message_complete(self) -> None:
        res = self._result
        if res is None:
            return
        res.body = b"".join(self._body)
        # httptools answers should_keep_alive() from the message just parsed only inside this
        # callback: once feed_data has returned it says False (httptools 0.9.0), so remember it.
        self._keep_alive = self._parser.should_keep_alive()
        done = self._done
        if done is not None and not done.done():
            done.set_result(res)

    # use
    def _fail(self, exc: Exception) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)

    def begin(self, payload: bytes, sink: BodySink | None) -> asyncio.Future[HttpResult]:
        self._done = asyncio.get_running_loop().create_future()
        self._sink = sink
        self._stream = None
        self._result = None
        self._headers = {}
        self._body = []
        self._keep_alive = False
        self.received = 0
        assert self.transport is not None
        self.transport.write(payload)
        return self._done

    def stream_to(self, sink: BodySink) -> None:
        assert self._result is None, "a sink set after the response began"
        self._sink = sink

    @property
    def keep_alive(self) -> bool:
        """The last response completed and allowed the connection to be reused."""
        return not self.closed and self._keep_alive

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass(slots=True)
class Exchange:
    """A request written on ``conn`` whose response ``done`` will carry."""

    conn: _Connection
    done: asyncio.Future[HttpResult]
    payload: bytes  # head and body, for a resend
    kind: str  # its connection: "new", "fresh" (opened for it: preopen) or "reused"
    reuse: bool  # park the connection for reuse after the response

    def stream_to(self, sink: BodySink) -> None:
        """Where the response's body goes: set in the loop turn the request was written
        (``HttpClient.start``), before any of its bytes can be read."""
        self.conn.stream_to(sink)


class HttpClient:
    """Kept-alive HTTP/1.1 connections to one origin, one request per connection at a time.

    ``connector`` (loadgen/client/connect.py) opens connections: TLS, proxies; without one,
    ``base_url`` is connected to directly (https verified against the system trust store).
    """

    def __init__(self, base_url: str | None = None, headers: dict[str, str] | None = None,
                 connect_timeout: float = 10.0, connector: Connector | None = None) -> None:
        if connector is None:
            if base_url is None:
                raise ValueError("HttpClient needs a base_url or a connector")
            connector = Connector.direct(base_url)
        self.connector = connector
        self.connect_timeout = connect_timeout
        for k, v in (headers or {}).items():
            check_header_value(f"header {k!r}", k + v)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._fixed_headers = (connector.head_lines() +
                               "content-type: application/json\r\n"
                               "accept: text/event-stream, application/json\r\n" + extra)
        self._idle: list[_Connection] = []
        # opened ahead of a scheduled send (preopen) and never used yet
        self._fresh: list[_Connection] = []
        self._opening: set[asyncio.Task[None]] = set()
        self.connections_opened = 0  # connects attempted (successful or not)
        self.reuse_disabled = False  # set once the server dropped a kept-alive connection

    async def _connect(self) -> _Connection:
        return await self.connector.open(_Connection, self.connect_timeout)

    def _take(self, reuse: bool, settled: bool = True) -> tuple[_Connection | None, str]:
        """A connection to write on at once and its kind: "fresh", opened for this send
        (``preopen``, never used, so never stale), or with ``reuse`` "reused", a kept-alive
        one; ``settled``: only one parked long enough ago that a close the server sent with
        its last response has been seen (one parked this moment gets a loop turn first:
        ``post``). (None, "new") when there is none."""
        while self._fresh:
            c = self._fresh.pop()
            if not c.closed:
                return c, "fresh"
        while reuse and self._idle and (
                not settled or _now_ns() - self._idle[-1].parked_ns >= _SETTLE_NS):
            c = self._idle.pop()
            if not c.closed:
                return c, "reused"
        return None, "new"

    def message(self, path: str, body: bytes) -> bytes:
        """A POST of ``body`` to ``path`` as written on the wire: head and body (built ahead
        of a scheduled send, so that at its time ``start`` only writes)."""
        return self._head(path, len(body)) + body

    def start(self, message: bytes, reuse: bool = True,
              sent: list[int] | None = None) -> Exchange | None:
        """Write ``message`` (``message()``) now, without yielding to the event loop, on a
        connection that is ready (``_take``); None when none is (``post`` then connects). The
        open loop sends this way at a request's scheduled time: a task would start a turn of
        the loop later, after every stream's reads (milliseconds under load). The response's
        body goes to the sink given by ``Exchange.stream_to`` (before the loop turns again);
        ``post(started=...)`` awaits it."""
        reuse = reuse and not self.reuse_disabled
        conn, kind = self._take(reuse)
        if conn is None:
            return None
        if sent is not None:
            sent.append(_now_ns())
        return Exchange(conn, conn.begin(message, None), message, kind, reuse)

    def _head(self, path: str, length: int) -> bytes:
        return (f"POST {self.connector.target(path)} HTTP/1.1\r\n{self._fixed_headers}"
                f"content-length: {length}\r\n\r\n").encode("latin-1")

    async def post(self, path: str, body: bytes, sink: BodySink | None = None,
                   timeout: float | None = None, reuse: bool = True,
                   sent: list[int] | None = None, started: Exchange | None = None
                   ) -> HttpResult:
        """POST ``body``; body bytes of a 2xx response go to ``sink`` as they arrive.
        ``started``: the request was written already (``start``); its response is awaited.

        ``reuse=False`` for servers known to close every streamed response whatever their
        headers say (llama-server's native API). A request whose reused connection the server
        closed before any response byte is sent once more on a new connection
        (``HttpResult.resent``), and no connection to this server is reused after.
        ``sent`` gets the moment each attempt started: just before its connect when it opens
        a connection, else just before its bytes are written to the kept-alive one (or the
        one ``preopen`` opened for it).
        """
        connect_ns = 0
        if started is None:
            reuse = reuse and not self.reuse_disabled
            conn, kind = self._take(reuse)
            if conn is None and reuse and self._idle:
                await asyncio.sleep(0)  # parked this moment: its close, if any, is seen first
                conn, kind = self._take(reuse, settled=False)
            if sent is not None:
                sent.append(_now_ns())
            if conn is None:
                conn, connect_ns = await self._open()
            payload = self.message(path, body)
            started = Exchange(conn, conn.begin(payload, sink), payload, kind, reuse)
        conn, reuse = started.conn, started.reuse
        resent = False
        try:
            result = await self._await(conn, started.done, timeout)
        except TransportError:
            if started.kind == "new" or conn.received:
                raise
            # The kept-alive race: the server closed this connection (llama-server does after
            # every stream, whatever its headers say; any server once its idle timeout is up)
            # as the request was written. Sent once more on a new connection; the record says
            # so, and after a reused connection's race nothing is reused again.
            resent = True
            if started.kind == "reused":
                self.reuse_disabled = True
                self.close()
            if sent is not None:
                sent.append(_now_ns())
            conn, connect_ns = await self._open()
            result = await self._await(conn, conn.begin(started.payload, sink), timeout)
        if reuse and not self.reuse_disabled and conn.keep_alive:
            conn.parked_ns = _now_ns()
            self._idle.append(conn)
        else:
            conn.abort()
        result.connect_ns = connect_ns
        result.resent = resent
        return result

    def preopen(self, want: int = 1) -> None:
        """Have ``want`` connections ready (opened, or opening) for sends scheduled shortly:
        the open loop calls this a little before each due time, so a send writes at its time
        instead of waiting for a connect and its turn of the event loop. A connect that
        fails here is left to the send, which reports it."""
        loop = asyncio.get_running_loop()
        for _ in range(want - len(self._fresh) - len(self._idle) - len(self._opening)):
            task = loop.create_task(self._preopen())
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    def ready(self) -> int:
        """Connections open and free to write on: opened ahead (``preopen``) or kept alive."""
        return sum(not c.closed for c in (*self._fresh, *self._idle))

    async def _preopen(self) -> None:
        try:
            conn, _ = await self._open()
        except (TransportError, OSError, TimeoutError):
            return
        self._fresh.append(conn)

    async def _open(self) -> tuple[_Connection, int]:
        """A new connection, and how long the connect took (ns)."""
        self.connections_opened += 1
        t0 = _now_ns()
        conn = await self._connect()
        return conn, _now_ns() - t0

    @staticmethod
    async def _await(conn: _Connection, fut: asyncio.Future[HttpResult],
                     timeout: float | None) -> HttpResult:
        try:
            return await asyncio.wait_for(fut, timeout) if timeout else await fut
        except BaseException:
            conn.abort()  # cancelled, timed out or failed: this connection's state is unknown
            raise

    def close(self) -> None:
        for task in list(self._opening):
            task.cancel()
        for c in (*self._idle, *self._fresh):
            c.abort()
        self._idle.clear()
        self._fresh.clear()
