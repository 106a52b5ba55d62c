"""One benchmark run: replay a prompt file against an endpoint at a controlled load.

Phases: probe the server and scrape its counters (run start), warm-up requests, then the measured
phase. The measurement window opens when warm-up is over and closes when the last measured
request has been sent (or ``--duration`` is up): the steady state, without ramp-up or drain.
Counters are scraped at both edges, so acceptance from counter deltas and output tokens/s cover
the same window. Every request ends ok, error (with a reason) or cancelled, and its record is
appended to requests.jsonl the moment it ends.

Built so that several worker processes can share one run later: the request plan is a pure
function of (dataset, seed, index) and the rate-mode schedule of (rate, arrival, seed), so worker k
of N can take the indices i with i % N == k against the same t0 and write its own requests.jsonl
shard; every summary number is computed from the merged records (loadgen/analysis/metrics.py is pure) and
the counter scrapes bracket the whole window from the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadgen.engines import make_adapter
from loadgen.engines.base import EngineAdapter
from loadgen.data.prompts import PromptFile, PromptRecord
from loadgen.results.records import CANCELLED, ERROR, OK, RecordWriter, RequestRecord
from loadgen.client.schedule import arrival_offsets
from loadgen.client.transport import HttpClient, TransportError

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class RunConfig:
    endpoint: str
    engine: str
    out: Path
    output_len: int | None = None
    concurrency: int | None = None
    request_rate: float | None = None
    arrival: str = "poisson"
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    model: str | None = None
    api_key_env: str | None = None
    seed: int = 0
    timeout_s: float = 600.0
    keep_token_ids: bool = False
    openai_mode: str = "completions"
    lag_threshold_ms: float = 5.0
    multi_turn: bool = True
    shuffle: bool = True
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if (self.concurrency is None) == (self.request_rate is None):
            raise ValueError("give exactly one of --concurrency or --request-rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("--concurrency must be >= 1")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give --num-requests or --duration")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError("--num-requests must be >= 1")
        if self.output_len is not None and self.output_len < 1:
            raise ValueError("--output-len must be >= 1")


@dataclass(slots=True)
class _Item:
    index: int
    prompt: PromptRecord
    warmup: bool


class LagMonitor:
    """Event-loop lag: how late a 5 ms timer fires. High lag means the client, not the server,
    delays the timestamps. A bare timer callback (no task, no future) costs a few µs a tick."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval = interval_s
        self._interval_ns = int(interval_s * 1e9)
        self.lags_ms: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0

    def _tick(self) -> None:
        now = _now_ns()
        self.lags_ms.append(max(0, now - self._due) / 1e6)
        self._due = now + self._interval_ns
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def start(self) -> None:
        self._due = _now_ns() + self._interval_ns
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    async def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Run:
    def __init__(self, cfg: RunConfig, prompts: PromptFile) -> None:
        cfg.validate()
        self.cfg = cfg
        self.prompts = prompts
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ValueError(f"environment variable {cfg.api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        self._headers = headers
        self.adapter: EngineAdapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.scrapes: dict[str, dict[str, float]] = {}
        self.window: dict[str, Any] = {}
        self.probe: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.interrupted = False
        self.in_flight = 0
        self.progress_cb = None  # called with (record dict) after each request

    # -- the plan -------------------------------------------------------------------------------
    def _items(self) -> Iterator[_Item]:
        """Endless: the prompts in a seeded shuffled order, reshuffled on every pass."""
        rng = random.Random(self.cfg.seed)
        warm = self.cfg.warmup_requests
        i = 0
        while True:
            order = list(self.prompts.records)
            if self.cfg.shuffle:
                rng.shuffle(order)
            for p in order:
                yield _Item(i, p, warmup=i < warm)
                i += 1

    def _max_tokens(self, p: PromptRecord) -> int:
        return self.cfg.output_len or p.max_tokens or 256

    # -- one request ----------------------------------------------------------------------------
    async def _request(self, client: HttpClient, item: _Item, scheduled_ns: int,
                       writer: RecordWriter) -> None:
        p = item.prompt
        ids = list(p.prompt_token_ids)
        turns = p.turns if (self.cfg.multi_turn and p.turns) else []
        for turn in range(len(turns) + 1):
            rec = await self._one_turn(client, item, ids, turn, scheduled_ns,
                                       keep=turn < len(turns))
            d = rec.to_dict()
            writer.write(d)
            self.records.append(d)
            if self.progress_cb:
                self.progress_cb(d)
            if rec.status != OK or turn == len(turns):
                return
            # next turn: what the model saw, its reply, then the next user turn
            ids = ids + (rec.token_ids or []) + turns[turn]
            scheduled_ns = 0  # later turns are sent as soon as the previous reply ends

    async def _one_turn(self, client: HttpClient, item: _Item, ids: list[int], turn: int,
                        scheduled_ns: int, keep: bool) -> RequestRecord:
        p = item.prompt
        max_tokens = self._max_tokens(p)
        ad = self.adapter
        st = ad.new_state()
        if keep and st.token_ids is None:
            st.token_ids = []
        body = ad.encode(ids, max_tokens, p.messages)
        rec = RequestRecord(index=item.index, prompt_id=p.id, category=p.category, turn=turn,
                            warmup=item.warmup, input_tokens=len(ids),
                            expected_tokens=max_tokens, scheduled_ns=scheduled_ns)
        feed = ad.feed
        self.in_flight += 1
        rec.send_ns = _now_ns()
        if not scheduled_ns:
            rec.scheduled_ns = rec.send_ns
        try:
            res = await client.post(ad.stream_path, body,
                                    sink=lambda data, stamp: feed(st, data, stamp),
                                    timeout=self.cfg.timeout_s, reuse=ad.reuse_connections)
            rec.end_ns = _now_ns()
            rec.http_status = res.status
            rec.headers_ns = res.headers_ns
            if res.status != 200:
                rec.status = ERROR
                rec.retry_after = res.headers.get("retry-after")
                rec.error = f"HTTP {res.status}: {res.body[:300].decode('utf-8', 'replace')}"
            else:
                reason = ad.check_complete(st)
                if reason is None and st.tokens != max_tokens:
                    reason = (f"output length {st.tokens} != requested {max_tokens} "
                              f"(finish_reason {st.finish_reason!r})")
                rec.status, rec.error = (ERROR, reason) if reason else (OK, None)
        except TransportError as exc:
            rec.end_ns = _now_ns()
            rec.status, rec.error = ERROR, str(exc)
        except TimeoutError:
            rec.end_ns = _now_ns()
            rec.status, rec.error = ERROR, f"timed out after {self.cfg.timeout_s:g} s"
        except asyncio.CancelledError:
            rec.end_ns = _now_ns()
            rec.status, rec.error = CANCELLED, "run interrupted"
        finally:
            self.in_flight -= 1
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
            if st.text_parts is not None:
                rec.neutral_output_tokens = ad.neutral_count("".join(st.text_parts))  # type: ignore[attr-defined]
            if keep and rec.status == OK and (rec.token_ids is None
                                              or len(rec.token_ids) != rec.output_tokens):
                rec.status = ERROR
                rec.error = ("cannot replay the next turn: the stream did not carry every "
                             "output token id")
            if rec.status == OK and rec.usage_completion_tokens not in (None, rec.output_tokens):
                rec.status = ERROR
                rec.error = (f"server usage says {rec.usage_completion_tokens} tokens, the "
                             f"stream carried {rec.output_tokens}")
        return rec

    # -- scrapes --------------------------------------------------------------------------------
    async def _scrape(self, http: httpx.AsyncClient, name: str) -> None:
        try:
            self.scrapes[name] = await self.adapter.scrape(http)
        except (httpx.HTTPError, ValueError) as exc:
            self.warnings.append(f"could not scrape server statistics at {name}: {exc!r}")

    def _delta(self, a: str, b: str) -> dict[str, float] | None:
        if a not in self.scrapes or b not in self.scrapes:
            return None
        x, y = self.scrapes[a], self.scrapes[b]
        return {k: y[k] - x.get(k, 0.0) for k in y}

    # -- phases ---------------------------------------------------------------------------------
    async def _closed_loop(self, client: HttpClient, items: Iterator[_Item], n: int | None,
                           deadline_ns: int | None, writer: RecordWriter,
                           concurrency: int) -> None:
        """C workers; each sends its next request as soon as its previous one ends."""
        issued = 0

        def next_item() -> _Item | None:
            nonlocal issued
            if self._stop.is_set() or (n is not None and issued >= n):
                return None
            if deadline_ns is not None and _now_ns() >= deadline_ns:
                self._mark_window_end()
                return None
            issued += 1
            return next(items)

        async def worker() -> None:
            while (item := next_item()) is not None:
                if n is not None and issued == n and not item.warmup:
                    self._mark_window_end()
                await self._request(client, item, 0, writer)

        await self._gather([worker() for _ in range(concurrency)])

    async def _open_loop(self, client: HttpClient, items: Iterator[_Item], n: int | None,
                         deadline_ns: int | None, writer: RecordWriter) -> None:
        cfg = self.cfg
        assert cfg.request_rate is not None
        sem = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
        t0 = _now_ns()
        offsets = arrival_offsets(cfg.request_rate, cfg.arrival, cfg.burstiness, cfg.seed)

        async def fire(item: _Item, due: int) -> None:
            if sem is None:
                await self._request(client, item, due, writer)
                return
            async with sem:  # waiting for a slot counts in latency: it is from `due`
                await self._request(client, item, due, writer)

        tasks = []
        for sent, off in enumerate(offsets):
            if self._stop.is_set() or (n is not None and sent >= n):
                break
            due = t0 + int(off * 1e9)
            if deadline_ns is not None and due >= deadline_ns:
                break
            delay = (due - _now_ns()) / 1e9
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    break
                # Event-loop timers have millisecond resolution and may fire early: never
                # send before the scheduled time.
                while _now_ns() < due:
                    await asyncio.sleep(0)
            tasks.append(self._spawn(fire(next(items), due)))
        self._mark_window_end()
        await self._wait(tasks)

    def _mark_window_end(self) -> None:
        if "end_ns" not in self.window:
            self.window["end_ns"] = _now_ns()
            self._window_end_event.set()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _gather(self, coros) -> None:
        await self._wait([self._spawn(c) for c in coros])

    async def _wait(self, tasks: list[asyncio.Task]) -> None:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _measured(self, client: HttpClient, items: Iterator[_Item],
                        writer: RecordWriter) -> None:
        cfg = self.cfg
        deadline = (_now_ns() + int(cfg.duration_s * 1e9)) if cfg.duration_s else None
        if cfg.concurrency is not None:
            await self._closed_loop(client, items, cfg.num_requests, deadline, writer,
                                    cfg.concurrency)
        else:
            await self._open_loop(client, items, cfg.num_requests, deadline, writer)
        self._mark_window_end()

    async def execute(self) -> dict[str, Any]:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        writer = RecordWriter(cfg.out / "requests.jsonl")
        client = HttpClient(cfg.endpoint, headers=self._headers)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.interrupt)
        self._window_end_event = asyncio.Event()
        lag = LagMonitor()
        base = cfg.endpoint.rstrip("/")
        async with httpx.AsyncClient(base_url=base, headers=self._headers, timeout=30) as http:
            try:
                self.probe = await self.adapter.probe(http)
            except httpx.HTTPError as exc:
                self.warnings.append(f"probe failed: {exc!r}")
            self.adapter.start_polling(http)
            await self._scrape(http, "run_start")
            items = self._items()
            gc_was = gc.isenabled()
            try:
                if cfg.warmup_requests:
                    conc = cfg.concurrency or cfg.max_concurrency or cfg.warmup_requests
                    await self._closed_loop(client, items, cfg.warmup_requests, None, writer,
                                            min(conc, cfg.warmup_requests))
                # The window opens now.
                await self._scrape(http, "window_start")
                self.window["start_ns"] = _now_ns()
                cpu0 = time.process_time()
                lag.start()
                gc.disable()  # no collector pauses inside the timed window; re-enabled below
                measured = self._spawn(self._measured(client, items, writer))
                scrape_end = self._spawn(self._scrape_at_window_end(http))
                await asyncio.gather(measured, return_exceptions=True)
                await asyncio.gather(scrape_end, return_exceptions=True)
                cpu1 = time.process_time()
                await lag.stop()
                if gc_was:
                    gc.enable()
                await self._scrape(http, "run_end")
            finally:
                if gc_was:
                    gc.enable()
                await self.adapter.stop_polling()
                for t in list(self._tasks):
                    t.cancel()
                await self._wait(list(self._tasks))
                client.close()
                writer.close()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        return self._client_stats(cpu1 - cpu0, lag)

    async def _scrape_at_window_end(self, http: httpx.AsyncClient) -> None:
        await self._window_end_event.wait()
        await self._scrape(http, "window_end")

    def _client_stats(self, cpu_s: float, lag: LagMonitor) -> dict[str, Any]:
        from loadgen.analysis.metrics import stats

        measured = [r for r in self.records if not r["warmup"]]
        events = sum(r["events"] for r in measured)
        lag_stats = stats(lag.lags_ms)
        p99 = lag_stats["p99"] or 0.0
        return {
            "cpu_s": cpu_s,
            "cpu_us_per_event": cpu_s * 1e6 / events if events else None,
            "cpu_ms_per_request": cpu_s * 1e3 / len(measured) if measured else None,
            "loop_lag_ms": lag_stats,
            "lag_threshold_ms": self.cfg.lag_threshold_ms,
            "overloaded": p99 > self.cfg.lag_threshold_ms,
        }

    def interrupt(self) -> None:
        """Ctrl-C: stop sending, cancel what is in flight (each becomes a cancelled record)."""
        self.interrupted = True
        self._stop.set()
        for t in list(self._tasks):
            t.cancel()

    def window_bounds(self) -> dict[str, Any]:
        start = self.window.get("start_ns", 0)
        end = self.window.get("end_ns", start)
        measured = [r for r in self.records if not r["warmup"]]
        includes_drain = False
        if measured and end - start < 0.2 * (max(r["end_ns"] for r in measured) - start):
            # Everything was sent at once (n <= concurrency): no steady state to isolate.
            end = max(r["end_ns"] for r in measured)
            includes_drain = True
        return {"start_ns": start, "end_ns": end, "includes_drain": includes_drain}
