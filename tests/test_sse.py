"""SSE framing (loadgen/engines/sse.py) per the WHATWG event-stream rules, on streams recorded from
the synthetic engine in each protocol, split at every byte boundary."""

from __future__ import annotations

import asyncio
import time

import pytest

from loadgen.client.transport import HttpClient
from loadgen.engines import make_adapter
from loadgen.engines.sse import BOM, SseError, SseParser

TOKENS = 6
# adapter name -> synthetic protocol serving it
PROTOCOLS = {"vllm": "vllm", "sglang": "sglang", "trtllm": "trtllm", "llamacpp": "llamacpp",
             "openai": "vllm"}


def record_stream(url: str, engine: str) -> bytes:
    """The raw (de-chunked) body of one streamed response."""
    ad = make_adapter(engine, model="m")
    parts: list[bytes] = []

    async def go() -> None:
        client = HttpClient(url)
        try:
            res = await client.post(ad.stream_path, ad.encode([5, 6, 7, 8], TOKENS),
                                    sink=lambda d, _s: parts.append(d), timeout=30)
            assert res.status == 200, res.body
        finally:
            client.close()

    asyncio.run(go())
    return b"".join(parts)


def events_of(chunks: list[bytes], cap: int | None = None) -> list:
    p = SseParser(cap) if cap else SseParser()
    out = []
    for c in chunks:
        out.extend(p.feed(c))
    return out


def variants(body: bytes) -> dict[str, bytes]:
    """The same stream with other line ends, a BOM, comments and heartbeats."""
    return {
        "lf": body,
        "crlf": body.replace(b"\n", b"\r\n"),
        "cr": body.replace(b"\n", b"\r"),
        "bom+comments": BOM + b": hello\n\n" + body.replace(b"\n\n", b"\n: ping\n\n:\n\n"),
        "bom+crlf": BOM + body.replace(b"\n", b"\r\n"),
    }


def adapter_state(engine: str, chunks: list[bytes]):
    ad = make_adapter(engine, model="m")
    st = ad.new_state()
    for c in chunks:
        ad.feed(st, c, 1)
    return st


@pytest.mark.parametrize("engine", sorted(PROTOCOLS))
def test_recorded_streams_split_at_every_byte_give_identical_events(synthetic, engine):
    eng = synthetic("--protocol", PROTOCOLS[engine], "--model-name", "m", "--fast", "-k", "3")
    body = record_stream(eng.url, engine)
    reference = events_of([body])
    assert len(reference) >= 2 and all(name is None for name, _ in reference)
    whole = adapter_state(engine, [body])
    assert whole.tokens == TOKENS and whole.error is None and whole.final_seen
    for label, stream in variants(body).items():
        assert events_of([stream]) == reference, label
        assert events_of([stream[i:i + 1] for i in range(len(stream))]) == reference, label
        for i in range(1, len(stream)):
            assert events_of([stream[:i], stream[i:]]) == reference, (label, i)
        # through the adapter: the same tokens
        st = adapter_state(engine, [stream[:len(stream) // 3], stream[len(stream) // 3:]])
        assert (st.tokens, st.done, st.final_seen, st.error) == (
            whole.tokens, whole.done, whole.final_seen, None), label


def test_multiline_data_event_names_and_fields():
    stream = (b"event: error\ndata: first\ndata:second\ndata\n\n"
              b"id: 7\nretry: 10\ndata:  two spaces\n\n"
              b"event: custom\n\n"  # no data: nothing dispatched, the name does not leak
              b"data: after\n\n"
              b"data: never ended")
    assert events_of([stream]) == [(b"error", b"first\nsecond\n"), (None, b" two spaces"),
                                   (None, b"after")]


def test_error_event_is_the_requests_error():
    ad = make_adapter("vllm")
    st = ad.new_state()
    ad.feed(st, b'data: {"choices":[{"token_ids":[1],"text":"a"}]}\n\n', 1)
    ad.feed(st, b"event: error\ndata: engine overloaded\n\n", 2)
    assert st.error == "server error event: engine overloaded"
    assert ad.check_complete(st) == st.error
    # llama-server's `error:` lines
    st = ad.new_state()
    ad.feed(st, b'error: {"code": 500,\r\n\r\n', 1)
    assert st.error is not None and "code" in st.error


def test_unexpected_json_shape_is_the_adapters_error():
    """Valid JSON the adapter cannot read is the request's error in one line (not "invalid HTTP
    response: on_body callback error")."""
    odd = {"vllm": b'{"choices": [null]}', "openai": b'{"choices": [null]}',
           "sglang": b'{"meta_info": []}', "llamacpp": b'{"tokens_predicted": "x"}'}
    for engine, shape in odd.items():
        ad = make_adapter(engine, model="m")
        for payload in (b"[1, 2]", shape):
            st = ad.new_state()
            ad.feed(st, b"data: " + payload + b"\n\n", 1)
            assert st.error is not None and "\n" not in st.error, (engine, payload)
            # the user's language, not Python's: no exception class names
            assert "Error" not in st.error and "object has no attribute" not in st.error


def test_event_over_the_cap_is_an_error():
    p = SseParser(1000)
    assert p.feed(b"data: " + b"x" * 500 + b"\n\n") == [(None, b"x" * 500)]
    with pytest.raises(SseError, match="larger than 1000 bytes"):
        for _ in range(10):  # an endless line, never a newline
            p.feed(b"y" * 200)
    p = SseParser(1000)
    with pytest.raises(SseError):
        for _ in range(10):  # many data lines of one event
            p.feed(b"data: " + b"z" * 200 + b"\n")


def test_parsing_is_linear_in_the_bytes_received():
    """One 16 MiB event arriving in 64 KiB reads costs a few times what it costs in one read
    (the copies of joining it); the old framing re-joined and re-searched the whole buffer on
    every read: 23x for a 12 MiB event, growing with its size."""
    body = b"data: " + b"a" * (16 << 20) + b"\n\n"

    def cpu_for(reads: list[bytes]) -> float:
        best = float("inf")
        for _ in range(5):  # the least of five: other processes only ever add to it
            t0 = time.process_time()
            p = SseParser(1 << 30)
            for r in reads:
                out = p.feed(r)
            best = min(best, time.process_time() - t0)
        assert out == [(None, body[6:-2])]
        return best

    one = cpu_for([body])
    many = cpu_for([body[i:i + 65536] for i in range(0, len(body), 65536)])
    assert many < 10 * one, (one, many)
