"""A small HTTP/1.1 server on asyncio, built for the synthetic engine.

Why not an off-the-shelf framework: the synthetic engine must (a) stamp every stream chunk with the
monotonic time it was handed to the kernel, (b) misbehave on purpose (reset a connection mid-stream,
close before the response headers, write a broken chunk), and (c) never be the bottleneck when a
client is calibrated against it. A Protocol with httptools' parser (the one uvicorn uses) gives all
three with little code. Keep-alive, Content-Length request bodies and chunked streaming responses
are supported; that is all the engines' APIs need.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

from loadgen.synthetic import rxstamp

_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error",
    503: "Service Unavailable",
}
_monotonic_ns = time.monotonic_ns
_connection_ids = itertools.count(1)


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    received_ns: int  # when the server's event loop had parsed the whole request
    connection_id: int = 0  # which connection (numbered from 1 in accept order) carried it
    rx_ns: int = 0  # when the request's first bytes reached the host (see rx_source)
    rx_source: str = "read"  # "kernel": SO_TIMESTAMPING RX stamp; "read": data_received stamp

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass(slots=True)
class Response:
    """A whole (non-streamed) response."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj).encode(), "application/json", headers or {})

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8"):
        return cls(status, text.encode(), content_type)


Handler = Callable[[Request, "Connection"], Awaitable[Response | None]]


class Connection(asyncio.Protocol):
    """One client connection. Handlers either return a Response or stream with
    ``start_stream``/``write_chunk``/``end_stream`` and return None."""

    __slots__ = (
        "_app",
        "_body_parts",
        "_closed",
        "_headers",
        "_keep_alive",
        "_msg_rx",
        "_parser",
        "_pending",
        "_read_rx",
        "_streaming",
        "_task",
        "_url",
        "between_messages",
        "closed_event",
        "connection_id",
        "current",
        "peer",
        "transport",
    )

    def __init__(self, app: Handler) -> None:
        self._app = app
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._headers: dict[str, str] = {}
        self._url = b""
        self._body_parts: list[bytes] = []
        self._pending: list[Request] = []
        self._task: asyncio.Task | None = None
        self._closed = False
        self._streaming = False
        self._keep_alive = True
        self.closed_event = asyncio.Event()
        self.peer = None
        self.connection_id = next(_connection_ids)
        self.current: Request | None = None  # the request being served
        self._read_rx: tuple[int, str] = (0, "read")
        self._msg_rx: tuple[int, str] = (0, "read")
        # no request begun and unfinished: the next read starts one (rxstamp.py reads its
        # first byte alone so that the request's stamp is its first segment's)
        self.between_messages = True

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = transport.get_extra_info("peername")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.closed_event.set()

    def data_received(self, data: bytes) -> None:
        """From an asyncio transport: no kernel stamp, the read's own stamp stands in."""
        self.data_received_at(data, _monotonic_ns(), "read")

    def data_received_at(self, data: bytes, rx_ns: int, source: str) -> None:
        self._read_rx = (rx_ns, source)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._send_simple(400, b'{"error":"upgrade not supported"}')
            self.close()
        except httptools.HttpParserError as exc:
            body = json.dumps({"error": f"bad HTTP request: {exc}"}).encode()
            self._send_simple(400, body)
            self.close()

    # -- httptools callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = {}
        self._url = b""
        self._body_parts = []
        self._msg_rx = self._read_rx  # the read that carried this request's first bytes
        self.between_messages = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body_parts.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self._url)
        req = Request(
            method=self._parser.get_method().decode(),
            path=parsed.path.decode(),
            query=(parsed.query or b"").decode(),
            headers=self._headers,
            body=b"".join(self._body_parts),
            received_ns=_monotonic_ns(),
            connection_id=self.connection_id,
            rx_ns=self._msg_rx[0],
            rx_source=self._msg_rx[1],
        )
        self._keep_alive = self._parser.should_keep_alive()
        self.between_messages = True
        self._pending.append(req)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())

    # -- request loop -----------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            while self._pending and not self._closed:
                req = self._pending.pop(0)
                self.current = req
                try:
                    resp = await self._app(req, self)
                except Exception as exc:  # a handler bug must not kill the server
                    if self._streaming:
                        self.abort()
                        return
                    resp = Response.json(500, {"error": {"message": f"internal error: {exc!r}"}})
                if resp is not None and not self._closed:
                    self.send(resp)
                if not self._keep_alive:
                    self.close()
                    return
        finally:
            self._task = None

    # -- writing ----------------------------------------------------------------------------
    def _send_simple(self, status: int, body: bytes) -> None:
        self.send(Response(status, body))

    def send(self, resp: Response) -> None:
        if self._closed or self.transport is None:
            return
        head = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}\r\n",
                f"content-type: {resp.content_type}\r\n",
                f"content-length: {len(resp.body)}\r\n"]
        head.extend(f"{k}: {v}\r\n" for k, v in resp.headers.items())
        if not self._keep_alive:
            head.append("connection: close\r\n")
        head.append("\r\n")
        self.transport.write("".join(head).encode("latin-1") + resp.body)

    def start_stream(self, status: int = 200, content_type: str = "text/event-stream",
                     headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n",
                f"content-type: {content_type}\r\n",
                "cache-control: no-cache\r\n",
                "transfer-encoding: chunked\r\n"]
        if headers:
            head.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        head.append("\r\n")
        self._streaming = True
        if not self._closed and self.transport is not None:
            self.transport.write("".join(head).encode("latin-1"))

    def write_chunk(self, payload: bytes) -> int:
        """Write one chunk of a chunked body; return the monotonic ns stamp just before writing
        (0 if the peer is gone)."""
        if self._closed or self.transport is None:
            return 0
        now = _monotonic_ns()
        self.transport.write(b"%x\r\n%s\r\n" % (len(payload), payload))
        return now

    def end_stream(self) -> None:
        self._streaming = False
        if not self._closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.close()

    def abort(self) -> None:
        """Reset the connection (RST, not FIN): what a crashed server or a proxy time-out looks
        like to a client."""
        if self.transport is None or self._closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


async def start_server(app: Handler, host: str, port: int, backlog: int = 4096,
                       kernel_stamps: bool = True, ssl: Any = None) -> asyncio.base_events.Server \
        | rxstamp.StampedServer:
    """Listen on host:port. With ``kernel_stamps`` (and where Linux gives them) connections are
    served on raw sockets whose reads carry the kernel's receive stamp (rxstamp.py); otherwise,
    or if the kernel refuses the option, by the event loop's own transports, and each request's
    ``rx_ns`` is the stamp of the read that brought its first bytes (``rx_source`` "read").
    ``ssl``: an ``ssl.SSLContext`` to serve https (the bench's TLS row; always on the event
    loop's transports, so ``rx_ns`` is the read's stamp)."""
    loop = asyncio.get_running_loop()
    if kernel_stamps and ssl is None and rxstamp.supported():
        try:
            sock = rxstamp.listen(host, port, backlog)
        except OSError:
            pass
        else:
            return rxstamp.StampedServer(loop, sock, lambda: Connection(app))
    return await loop.create_server(lambda: Connection(app), host, port, backlog=backlog,
                                    reuse_address=True, ssl=ssl)
