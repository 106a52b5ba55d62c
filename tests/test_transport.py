"""The streaming transport (loadgen/client/transport.py) against a small real HTTP server on
127.0.0.1, written here with asyncio streams so each test scripts exactly what goes on the wire."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable

import pytest

from loadgen.client.transport import HttpClient, TransportError

Reply = Callable[[asyncio.StreamWriter, int], Awaitable[bool]]  # -> keep serving this connection

SSE = b"".join(b'data: {"n": %d}\n\n' % i for i in range(12)) + b"data: [DONE]\n\n"


def chunked(body: bytes, size: int = 40) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size])
             for i in range(0, len(body), size)]
    return b"".join(parts) + b"0\r\n\r\n"


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\n\r\n")
STREAM = STREAM_HEAD + chunked(SSE)


class Server:
    """Reads one HTTP request at a time per connection and answers with ``reply``."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests = 0
        self.bodies: list[bytes] = []
        self._srv: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._srv is not None
        self._srv.close()

    @property
    def url(self) -> str:
        assert self._srv is not None
        return f"http://127.0.0.1:{self._srv.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                self.requests += 1
                if not await self.reply(writer, self.requests - 1):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def serve(reply: Reply, client_calls: Callable[[HttpClient], Awaitable[object]]):
    """Run ``client_calls`` against a server answering with ``reply``; (result, server)."""

    async def main():
        async with Server(reply) as srv:
            client = HttpClient(srv.url)
            try:
                return await client_calls(client), srv, client
            finally:
                client.close()

    return asyncio.run(main())


class Collect:
    """A sink: body pieces and their read stamps."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.stamps: list[int] = []

    def __call__(self, data: bytes, stamp: int) -> None:
        self.parts.append(data)
        self.stamps.append(stamp)

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


async def stream_reply(writer: asyncio.StreamWriter, i: int) -> bool:
    writer.write(STREAM)
    await writer.drain()
    return True


def test_keep_alive_reuses_one_connection():
    async def calls(client: HttpClient):
        return [await client.post("/v1/completions", b'{"i": %d}' % i, sink=Collect())
                for i in range(5)]

    results, srv, client = serve(stream_reply, calls)
    assert srv.connections == 1 and srv.requests == 5
    assert client.connections_opened == 1
    assert srv.bodies == [b'{"i": %d}' % i for i in range(5)]
    assert results[0].connect_ns > 0  # the first request waited for the connect
    assert [r.connect_ns for r in results[1:]] == [0, 0, 0, 0]
    assert all(r.status == 200 for r in results)


def test_connection_close_is_honoured():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        writer.write(STREAM_HEAD[:-2] + b"connection: close\r\n\r\n" + chunked(SSE))
        await writer.drain()
        return False  # and the server closes, as it said

    async def calls(client: HttpClient):
        out = []
        for _ in range(3):
            sink = Collect()
            res = await client.post("/v1/completions", b"{}", sink=sink)
            out.append((res, sink.body))
        return out

    results, srv, client = serve(reply, calls)
    assert srv.connections == 3 and client.connections_opened == 3
    assert all(res.status == 200 and body == SSE for res, body in results)
    assert all(res.connect_ns > 0 for res, _ in results)


def test_chunked_body_split_at_every_byte():
    """The same response, cut in two writes at each byte offset in turn (a pause between them
    so they reach the client as separate reads), over one kept-alive connection: the sink gets
    exactly the de-chunked body every time, its stamps never decreasing."""
    cuts = list(range(1, len(STREAM)))

    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        cut = cuts[i]
        writer.write(STREAM[:cut])
        await writer.drain()
        await asyncio.sleep(0.002)
        writer.write(STREAM[cut:])
        await writer.drain()
        return True

    async def calls(client: HttpClient):
        out = []
        for _ in cuts:
            sink = Collect()
            res = await client.post("/v1/completions", b"{}", sink=sink)
            out.append((res, sink))
        return out

    results, srv, _ = serve(reply, calls)
    assert srv.connections == 1
    for res, sink in results:
        assert res.status == 200
        assert sink.body == SSE
        assert sink.stamps == sorted(sink.stamps)
        assert res.headers_ns <= sink.stamps[0]


def test_sink_stamps_never_decrease_and_lie_within_the_request():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        writer.write(STREAM_HEAD)
        for k in range(50):
            event = b'data: {"n": %d}\n\n' % k
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.0005)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True

    async def calls(client: HttpClient):
        sink = Collect()
        before = time.monotonic_ns()
        res = await client.post("/v1/completions", b"{}", sink=sink)
        return before, res, sink, time.monotonic_ns()

    (before, res, sink, after), _, _ = serve(reply, calls)
    assert sink.body == b"".join(b'data: {"n": %d}\n\n' % k for k in range(50))
    assert len(sink.stamps) > 1
    assert sink.stamps == sorted(sink.stamps)
    assert before <= res.headers_ns <= sink.stamps[0] and sink.stamps[-1] <= after


def _expect_error(reply: Reply) -> str:
    async def calls(client: HttpClient):
        with pytest.raises(TransportError) as info:
            await client.post("/v1/completions", b"{}", sink=Collect(), timeout=30)
        return str(info.value)

    message, _, _ = serve(reply, calls)
    return message


def test_response_closed_mid_body():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        writer.write(STREAM[:len(STREAM) // 2])
        await writer.drain()
        return False  # close (FIN) in the middle of the chunked body

    assert _expect_error(reply) == "connection closed mid-response"


def test_response_reset_mid_body():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        writer.write(STREAM[:len(STREAM) // 2])
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # RST
        return False

    message = _expect_error(reply)
    assert message.startswith(("connection reset mid-response",
                               "connection closed mid-response")), message


def test_server_closes_before_headers():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        return False

    assert _expect_error(reply) == "connection closed before the response headers"


def test_non_http_reply():
    async def reply(writer: asyncio.StreamWriter, i: int) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)  # stay open: the client must fail on the bytes, not the close
        return False

    message = _expect_error(reply)
    assert message.startswith("invalid HTTP response"), message


def test_connect_refused_is_a_transport_error():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now

    async def main():
        client = HttpClient(f"http://127.0.0.1:{port}")
        with pytest.raises(TransportError, match="cannot connect"):
            await client.post("/x", b"{}")
        return client.connections_opened

    assert asyncio.run(main()) == 1


def test_kept_alive_connection_closed_under_a_request_is_resent_once():
    """A server that says keep-alive but closes the connection after each response (llama-server
    after every stream): a request written to such a connection before its close was seen is
    sent once more on a new connection (``resent``), and nothing is reused after."""

    async def reply(w: asyncio.StreamWriter, i: int) -> bool:
        if i == 1:  # the request that arrives on the reused connection: dropped unanswered
            return False
        w.write(STREAM)
        await w.drain()
        return True

    async def calls(client: HttpClient) -> list[tuple[bytes, bool]]:
        out = []
        for _ in range(3):
            sink = Collect()
            res = await client.post("/x", b"{}", sink=sink)
            assert res.status == 200
            out.append((sink.body, res.resent))
        return out

    results, srv, client = serve(reply, calls)
    assert results == [(SSE, False), (SSE, True), (SSE, False)]
    assert client.reuse_disabled
    assert srv.requests == 4  # the dropped one was sent again
    assert srv.connections == 3  # the first, the resend's, and a new one for the third


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.001)


def test_preopened_connections_take_sends_written_without_yielding():
    """The open loop's path: ``preopen(3)`` opens three connections ahead; ``start`` writes a
    request on one at once (its send stamp taken before ``start`` returns, no turn of the loop)
    and returns None when none is ready; ``post(started=)`` awaits each response; none of them
    paid a connect, and the next request reuses a kept-alive one."""

    async def calls(client: HttpClient):
        client.preopen(3)
        client.preopen(3)  # already opening: no more
        await _until(lambda: client.ready() == 3)
        sent: list[int] = []
        sinks = [Collect() for _ in range(4)]
        started = [client.start(client.message("/x", b'{"i": %d}' % i), sent=sent)
                   for i in range(4)]
        assert len(sent) == 3 and started[3] is None  # written synchronously, three ready
        for ex, sink in zip(started[:3], sinks, strict=False):
            ex.stream_to(sink)  # in the turn of the loop it was written
        results = [await client.post("/x", b"", sink=sinks[i], started=ex)
                   for i, ex in enumerate(started[:3])]
        await asyncio.sleep(0.003)  # parked long enough ago: reused without a loop turn
        later = await client.post("/x", b'{"i": 3}', sink=sinks[3])
        return results, later, [s.body for s in sinks]

    (results, later, bodies), srv, client = serve(stream_reply, calls)
    assert client.connections_opened == 3 and srv.connections == 3
    assert srv.bodies == [b'{"i": %d}' % i for i in range(4)]
    assert all(r.status == 200 and r.connect_ns == 0 for r in [*results, later])
    assert bodies == [SSE] * 4


def test_preopened_connection_closed_by_the_server_is_not_used():
    """A connection opened ahead that the server closed before it was used (an idle timeout)
    is skipped: the request opens its own, and connections stay reusable."""
    first = asyncio.Event()

    async def reply(w: asyncio.StreamWriter, i: int) -> bool:
        w.write(STREAM)
        await w.drain()
        return True

    class Closing(Server):
        async def _handle(self, reader, writer):  # the first connection: closed at once
            if not first.is_set():
                first.set()
                self.connections += 1
                writer.close()
                return
            await super()._handle(reader, writer)

    async def main():
        async with Closing(reply) as srv:
            client = HttpClient(srv.url)
            try:
                client.preopen(1)
                await _until(lambda: client.connections_opened == 1 and client.ready() == 0
                             and first.is_set())
                # the closed one is never written on
                assert client.start(client.message("/x", b"{}")) is None
                res = await client.post("/x", b"{}", sink=Collect())
                return res, srv, client
            finally:
                client.close()

    res, srv, client = asyncio.run(main())
    assert res.status == 200 and res.connect_ns > 0 and not res.resent
    assert client.connections_opened == 2 and srv.connections == 2 and srv.requests == 1
    assert not client.reuse_disabled
