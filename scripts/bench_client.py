#!/usr/bin/env python3
"""Client hot-path benchmark: loadgen's transport beside plain httpx.AsyncClient, in one run.

The synthetic engine runs pinned to CPU 0 and paces ~10k stream events/s (SD off, so one token
per event); this process runs pinned to CPU 1. For each transport and each stream count it
prints client CPU µs per event, CPU ms per request, client-added stamp lag (the moment a read
returned minus the engine's own send stamp from its truth log, same monotonic clock) p50/p99, and
the client's event-loop lag p99 (how late a 5 ms timer fires, loadgen.client.lag.LagMonitor).

CPU per request, connections per request and the TTFT error are measured apart, on 1-token
requests (10 rounds over the same streams, a new prompt each round, a fresh engine), so CPU per
request is the per-request overhead (connect/reuse, request build, headers, completion) without
events. The TTFT error is the client's TTFT (first token's read stamp − the stamp taken before the
request was started, connect included) minus the engine's truth TTFT (first chunk's send stamp −
the kernel's receive stamp of the request, docs/SYNTHETIC.md); "p99 reused" is its p99 over the
rounds after the first (connections already open). Connections per request counts the distinct
connection ids in the engine's truth log.

The ``loadgen-tls`` row is the same client over https, against the engine's own TLS listener
(``--tls-cert/--tls-key``, certificates from trustme): its CPU per event beside the plain row is
the cost of TLS (target: at most 1.5x). Its TTFT error uses the read stamp of the request
(kernel stamps are for plain sockets).

Targets (issues 3 and 15): <= 10 µs per event, <= 0.1 ms per request, lag p99 < 1 ms at 100
streams, TTFT error p99 < 1 ms, connections per request = 1 / rounds.

    python scripts/bench_client.py [--streams 100,1000] [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadgen.client.connect import Connector, tls_context
from loadgen.client.endpoint import parse_endpoint
from loadgen.client.lag import LagMonitor
from loadgen.client.transport import HttpClient
from loadgen.engines import make_adapter
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import SyntheticProcess, read_truth

ROUNDS = 10


def prompts(n: int, offset: int, rounds: int = 1) -> list[list[list[int]]]:
    """Per stream, one distinct prompt per round (the truth log is matched by prompt hash)."""
    return [[[offset + i, 5, 6, 7, 8 + r] for r in range(rounds)] for i in range(n)]


def _warm_prompt(stream: list[list[int]]) -> list[int]:
    return [*stream[0][:-1], stream[0][-1] + 500]  # its own prompt: not in the matched states


async def run_loadgen(url: str, ids: list[list[list[int]]], tokens: int,
                      ca: str | None = None, warm: bool = False):
    """(CPU s, loop lags ms, {digest: (round, start stamp, stream state)}); ``ca``: https
    against the engine's own TLS listener, verified against that CA file. ``warm``: each
    stream first sends a 1-token request, outside the measured window, so the window sees
    kept-alive connections (as a run does after its warm-up)."""
    ad = make_adapter("vllm")
    ep = parse_endpoint(url)
    client = HttpClient(connector=Connector(ep, tls_context(ca) if ep.tls else None, None))
    out = {}
    if warm:
        await asyncio.gather(*(client.post(ad.stream_path, ad.encode(_warm_prompt(s), 1),
                                           sink=lambda d, s: None) for s in ids))

    async def one(stream):
        for r, p in enumerate(stream):
            st = ad.new_state()
            start = time.monotonic_ns()
            await client.post(ad.stream_path, ad.encode(p, tokens), sink=partial(ad.feed, st))
            out[prompt_digest(p)] = (r, start, st)

    mon = LagMonitor()
    mon.start()
    t0 = time.process_time()
    await asyncio.gather(*(one(s) for s in ids))
    cpu = time.process_time() - t0
    mon.stop()
    client.close()
    return cpu, mon.lags_ms, out


class _Drain(asyncio.Protocol):
    """The floor: a protocol that only takes the bytes (no HTTP parsing, SSE, JSON or stamps)."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] | None = None
        self.reads = 0

    def data_received(self, data: bytes) -> None:
        self.reads += 1
        if data.endswith(b"0\r\n\r\n") and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(ConnectionError("closed"))


async def run_floor(url: str, ids: list[list[list[int]]], tokens: int,
                    ca: str | None = None, warm: bool = True):
    """(CPU s, reads) of the same requests read by ``_Drain`` on the same kind of connection
    (plain or TLS, opened and warmed outside the window): what reading the events costs this
    process on this machine before any client logic."""
    ad = make_adapter("vllm")
    ep = parse_endpoint(url)
    connector = Connector(ep, tls_context(ca) if ep.tls else None, None)
    loop = asyncio.get_running_loop()

    async def exchange(proto: _Drain, prompt: list[int], n: int) -> None:
        body = ad.encode(prompt, n)
        proto.done = loop.create_future()
        proto.transport.write(  # type: ignore[attr-defined]
            f"POST {ad.stream_path} HTTP/1.1\r\nhost: {ep.host}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            .encode() + body)
        await proto.done

    def factory() -> _Drain:
        proto = _Drain()
        proto.connection_made = lambda tr: setattr(proto, "transport", tr)  # type: ignore
        return proto

    protos = [await connector.open(factory, 10.0) for _ in ids]
    pairs = list(zip(protos, ids, strict=True))
    await asyncio.gather(*(exchange(pr, _warm_prompt(s), 1) for pr, s in pairs))
    reads0 = sum(pr.reads for pr in protos)
    t0 = time.process_time()
    await asyncio.gather(*(exchange(pr, s[0], tokens) for pr, s in pairs))
    cpu = time.process_time() - t0
    for pr in protos:
        pr.transport.close()  # type: ignore[attr-defined]
    return cpu, sum(pr.reads for pr in protos) - reads0


async def run_httpx(url: str, ids: list[list[list[int]]], tokens: int, ca: str | None = None,
                    warm: bool = False):
    import httpx

    ad = make_adapter("vllm")
    out = {}
    limits = httpx.Limits(max_connections=len(ids), max_keepalive_connections=len(ids))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        if warm:
            await asyncio.gather(*(client.post(ad.stream_path,
                                               content=ad.encode(_warm_prompt(s), 1))
                                   for s in ids))

        async def one(stream):
            for r, p in enumerate(stream):
                st = ad.new_state()
                start = time.monotonic_ns()
                async with client.stream("POST", ad.stream_path,
                                         content=ad.encode(p, tokens)) as resp:
                    async for chunk in resp.aiter_raw():
                        ad.feed(st, chunk, time.monotonic_ns())
                out[prompt_digest(p)] = (r, start, st)

        mon = LagMonitor()
        mon.start()
        t0 = time.process_time()
        await asyncio.gather(*(one(s) for s in ids))
        cpu = time.process_time() - t0
        mon.stop()
    return cpu, mon.lags_ms, out


def lag_ms(states: dict, truth: list[dict]) -> np.ndarray:
    by_digest = {r["prompt_sha256"]: r for r in truth}
    lags = []
    for digest, (_, _, st) in states.items():
        sent = by_digest[digest]["chunk_send_ns"]
        lags.extend((a - b) / 1e6 for a, b in zip(st.arrivals_ns, sent, strict=False))
    return np.array(lags)


def ttft_error_ms(states: dict, truth: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(client TTFT − truth TTFT for every request, the same for rounds after the first)."""
    by_digest = {r["prompt_sha256"]: r for r in truth}
    every, reused = [], []
    for digest, (rnd, start, st) in states.items():
        t = by_digest[digest]
        err = ((st.arrivals_ns[0] - start) - (t["chunk_send_ns"][0] - t["rx_ns"])) / 1e6
        every.append(err)
        if rnd > 0:
            reused.append(err)
    return np.array(every), np.array(reused)


def connections_per_request(truth: list[dict]) -> float:
    return len({r["connection_id"] for r in truth}) / len(truth)


def _certificates(tmp: Path) -> tuple[list[str], str | None]:
    """The engine's TLS flags and the CA file, from trustme (the dev extra); none without it."""
    try:
        import trustme
    except ImportError:
        print("trustme not installed: no TLS row (pip install trustme)", file=sys.stderr)
        return [], None
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    return (["--tls-cert", str(tmp / "server.pem"), "--tls-key", str(tmp / "server.pem")],
            str(tmp / "ca.pem"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", default="100,1000")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--events-per-s", type=float, default=10000.0)
    args = ap.parse_args()
    import uvloop

    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        os.sched_setaffinity(0, {1})
    rows = []
    floors = []
    offset = 1000
    with tempfile.TemporaryDirectory() as tmp:
        tls_args, ca = _certificates(Path(tmp))
        for n in (int(x) for x in args.streams.split(",")):
            step_ms = 1000.0 * n / args.events_per_s  # each step emits one event per stream
            engine = ["--protocol", "vllm", "--no-spec", "--step-base-ms", f"{step_ms:g}",
                      "--per-token-ms", "0", "--max-num-seqs", str(n + 1)]
            for name, tls in (("floor", False), ("floor-tls", True)):
                if tls and not tls_args:
                    continue
                with SyntheticProcess([*engine, *(tls_args if tls else [])], cpu=0) as eng:
                    gc.disable()
                    cpu, reads = uvloop.run(run_floor(eng.url, prompts(n, offset), args.tokens,
                                                      ca if tls else None))
                    gc.enable()
                    offset += n
                floors.append((name, n, cpu * 1e6 / (n * args.tokens), reads / (n * args.tokens)))
            for name, fn, tls in (("loadgen", run_loadgen, False),
                                  ("loadgen-tls", run_loadgen, True),
                                  ("httpx", run_httpx, False)):
                if tls and not tls_args:
                    continue
                extra = tls_args if tls else []
                truth = Path(tmp) / f"{name}-{n}.jsonl"
                short_truth = Path(tmp) / f"{name}-{n}-short.jsonl"
                with SyntheticProcess([*engine, "--truth-log", str(truth), *extra],
                                      cpu=0) as eng:
                    ids = prompts(n, offset)
                    offset += n
                    gc.disable()  # as `loadgen run` does inside its window
                    wall = time.monotonic()
                    cpu, loop_lags, states = uvloop.run(fn(eng.url, ids, args.tokens, ca,
                                                           warm=True))
                    wall = time.monotonic() - wall
                    gc.enable()
                    eng.stop()
                    events = sum(len(s.arrivals_ns) for _, _, s in states.values())
                    ok = sum(s.tokens == args.tokens for _, _, s in states.values())
                    lags = lag_ms(states, read_truth(truth))
                # a fresh engine for the short requests, so its truth log holds them alone
                with SyntheticProcess([*engine, "--truth-log", str(short_truth), *extra],
                                      cpu=0) as eng:
                    short_ids = prompts(n, offset, rounds=ROUNDS)  # ids stay in vocabulary
                    offset += n
                    gc.disable()
                    cpu_short, _, short = uvloop.run(fn(eng.url, short_ids, 1, ca))
                    gc.enable()
                    eng.stop()
                    short_t = read_truth(short_truth)
                    short_ok = sum(st.tokens == 1 for _, _, st in short.values())
                    if short_ok != n * ROUNDS or len(short_t) != n * ROUNDS:
                        sys.exit(f"{name} at {n} streams: {short_ok} of {n * ROUNDS} short "
                                 f"requests ok, {len(short_t)} in the truth log")
                    err, err_reused = ttft_error_ms(short, short_t)
                rows.append((name, n, ok, events / wall, cpu * 1e6 / events,
                             cpu_short * 1e3 / (ROUNDS * n),
                             np.percentile(lags, 50), np.percentile(lags, 99),
                             np.percentile(loop_lags, 99), connections_per_request(short_t),
                             np.percentile(err, 50), np.percentile(err, 99),
                             np.percentile(err_reused, 99)))
    head = ("transport", "streams", "ok", "events/s", "CPU us/event", "CPU ms/req",
            "lag p50 ms", "lag p99 ms", "loop p99 ms", "conn/req", "ttft err p50",
            "ttft err p99", "p99 reused")
    print("  ".join(f"{h:>12}" for h in head))
    for r in rows:
        print(f"{r[0]:>12}  {r[1]:>12}  {r[2]:>12}  {r[3]:>12.0f}  {r[4]:>12.1f}  "
              + "  ".join(f"{v:>12.3f}" for v in r[5:]))
    print()
    print("floor: the same events read by a protocol that only takes the bytes (no HTTP, SSE,")
    print("JSON or stamps), on warm connections: what this machine charges any asyncio client")
    print(f"{'floor':>12}  {'streams':>12}  {'CPU us/event':>12}  {'reads/event':>12}  "
          f"{'client above':>12}")
    for name, n, us, rpe in floors:
        mine = [r[4] for r in rows if r[1] == n and r[0] == name.replace("floor", "loadgen")]
        above = f"{mine[0] - us:>12.1f}" if mine else f"{'-':>12}"
        print(f"{name:>12}  {n:>12}  {us:>12.1f}  {rpe:>12.2f}  {above}")
    plain = {r[1]: r[4] for r in rows if r[0] == "loadgen"}
    for r in rows:
        if r[0] == "loadgen-tls" and r[1] in plain:
            print(f"TLS / plain CPU per event at {r[1]} streams: {r[4] / plain[r[1]]:.2f}x "
                  f"(target <= 1.5x)")
    print(f"targets: <= 10 us/event, <= 0.1 ms/request, lag p99 < 1 ms at 100 streams, "
          f"TTFT error p99 < 1 ms, conn/req = {1 / ROUNDS:g} ({ROUNDS} rounds)")


if __name__ == "__main__":
    main()
