"""The run engine: one coordinator drives N workers, phase by phase.

A single-process run is a run of one worker in this process (``InProcessWorker``); ``--workers
N`` runs N worker processes, ``--ray`` Ray actors: the phases, scrapes and window rules are the
same code for all three. The coordinator alone probes the server and scrapes its counters: at
run start; at each window's opening, once warm-up has ended; at each window's close (the single
window: once every worker has sent its last measured request; a category window: once its
requests have drained, so its delta covers exactly them); inside the window every
``scrape_interval_s`` (a restart shows); at run end. Every worker starts a measured phase at one
start time fixed in advance (mapped to its clock by a clock-offset probe when it runs on
another host), so in rate mode the merged send schedule is the one arrival process a single
process would have followed.

Phases: the first warm-up requests one at a time when the engine may or may not send
per-request SD numbers (the first that succeeds tells whether category windows are needed),
the rest of the warm-up under the run's own load, then the measured window, or per category
(category windows) a warm-up and a measured window of that category's requests only.

A worker that dies is reported; every conversation it had started and not finished becomes an
error record in its file; the other workers go on (docs/FORMATS.md, "Scaled-out runs").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

import httpx

from loadgen.client.host import HostMonitor
from loadgen.client.plan import split_by_category
from loadgen.client.scrape import scrapes_for
from loadgen.client.tally import window_bounds
from loadgen.client.telemetry import Telemetry
from loadgen.client.wiring import build_wire
from loadgen.config import RunConfig
from loadgen.data.lengthguard import length_warnings, parse_max_model_len
from loadgen.data.prompts import PromptFile
from loadgen.engines import adapter_for
from loadgen.results.facts import RecordsFile, RunFacts, WindowFacts
from loadgen.results.summary import ClientStats
from loadgen.run.handles import WorkerDied, WorkerHandle
from loadgen.run.merge import ClockOffset, account_deaths, merge_client, probe_clock
from loadgen.run.windows import category_windows, needs_first_request
from loadgen.run.worker import Phase

_now_ns = time.monotonic_ns
START_MARGIN_NS = 200_000_000  # workers in other processes: the common start this far ahead
# one in-process open loop: its start this far ahead, for the first sends' connections
OPEN_LOOP_MARGIN_NS = 50_000_000


async def _wait(fut: Future[Any]) -> Any:
    return await asyncio.wrap_future(fut)


class Coordinator:
    def __init__(self, cfg: RunConfig, prompts: PromptFile, handles: list[WorkerHandle],
                 host_monitor: HostMonitor | None = None, in_process: bool = False) -> None:
        self.cfg = cfg
        self.prompts = prompts
        self.handles = handles
        self.in_process = in_process  # one worker in this process: no start margin
        self.wire = build_wire(cfg)
        self.adapter = adapter_for(cfg)
        self.warnings: list[str] = list(self.wire.notices)
        self.notify: Any = None  # told each warning that matters before the load starts
        self.offsets: list[ClockOffset] = [ClockOffset() for _ in handles]
        self.results: list[dict[str, Any] | None] = [None] * len(handles)
        self.deaths: list[str | None] = [None] * len(handles)
        self.interrupted = False
        self.failure: str | None = None  # a worker could not write its records: run stopped
        # the command's StopSignals take SIGINT/SIGTERM (else this coordinator's loop does)
        self.own_signals = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None  # set on interrupt (execute's loop)
        self.scrapes = scrapes_for(cfg, self.adapter, self.warnings)
        # other exporters (GPU power, CPU) over the same windows (--telemetry)
        self.telemetry = Telemetry(cfg.measurement.telemetry, self.warnings,
                                   cfg.endpoint.probe_timeout_s,
                                   cfg.measurement.telemetry_interval_s)
        self.probe: dict[str, Any] = {}
        self.prefix_cache_policy: str | None = None
        self.category_windows = False
        self.windows: list[WindowFacts] = []
        self.current: WindowFacts | None = None  # the window under way (a partial summary)
        self.host_monitor = host_monitor
        self.host: Any = None
        self.first_ok_has_sd: bool | None = None
        self.max_index: int | None = None

    # -- stopping -------------------------------------------------------------------------
    def request_stop(self) -> None:
        """From a signal handler (StopSignals): interrupt on the coordinator's loop."""
        self.interrupted = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.interrupt)
        else:
            self.interrupt()

    def interrupt(self) -> None:
        self.interrupted = True
        if self._stopped is not None:
            self._stopped.set()
        self._stop_workers()

    def _stop_workers(self) -> None:
        for h in self.handles:
            with contextlib.suppress(Exception):
                h.stop()

    @property
    def stopping(self) -> bool:
        return self.interrupted or self.failure is not None

    # -- talking to the workers ---------------------------------------------------------------
    def _dead(self, k: int, exc: BaseException) -> None:
        if self.deaths[k] is None:
            h = self.handles[k]
            self.deaths[k] = h.death() or f"worker {k}: {exc}"
            print(f"loadgen run: {self.deaths[k]}; the run goes on without it",
                  file=sys.stderr)

    def _live(self) -> list[int]:
        return [k for k in range(len(self.handles)) if self.deaths[k] is None]

    async def _all(self, futs: dict[int, Future[Any]]) -> dict[int, Any]:
        """Wait for one future per live worker; a dead worker's is None (reported once)."""
        keys = list(futs)
        res = await asyncio.gather(*(_wait(futs[k]) for k in keys), return_exceptions=True)
        out: dict[int, Any] = {}
        for k, r in zip(keys, res, strict=True):
            if isinstance(r, BaseException):
                if isinstance(r, WorkerDied) or self.handles[k].death():
                    self._dead(k, r)
                else:
                    self.warnings.append(f"worker {k}: {r}")
                out[k] = None
            else:
                out[k] = r
        return out

    def _learn(self, results: dict[int, Any]) -> None:
        for k, res in results.items():
            if res is None:
                continue
            self.results[k] = res
            if res["first_ok_has_sd"] is not None and self.first_ok_has_sd is None:
                self.first_ok_has_sd = res["first_ok_has_sd"]
            if res["max_index"] is not None:
                self.max_index = max(self.max_index or 0, res["max_index"])
            self._fail(res.get("failure"))

    def _on_phase_done(self, fut: Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._fail(fut.result().get("failure"))

    def _fail(self, failure: str | None) -> None:
        """A worker that cannot write its records stops the run at once."""
        if failure and self.failure is None:
            self.failure = failure
            self._stop_workers()

    async def _phase(self, phase: Phase) -> None:
        """An unmeasured phase (warm-up) on every live worker."""
        if self.cfg.load.request_rate is not None:  # a common schedule origin
            start = _now_ns() + self._margin()
            futs = {k: self.handles[k].run_phase(replace(
                phase, start_ns=start + self.offsets[k].offset_ns)) for k in self._live()}
        else:
            futs = {k: self.handles[k].run_phase(phase) for k in self._live()}
        self._learn(await self._all(futs))

    def _margin(self) -> int:
        if self.in_process:
            return OPEN_LOOP_MARGIN_NS if self.cfg.load.request_rate is not None else 0
        return START_MARGIN_NS + max(o.error_ns for o in self.offsets)

    # -- the run ----------------------------------------------------------------------------
    async def execute(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        if self.interrupted:
            self._stopped.set()
        for sig in (signal.SIGINT, signal.SIGTERM) if self.own_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.interrupt)
        try:
            await self._execute()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM) if self.own_signals else ():
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)

    async def _execute(self) -> None:
        cfg = self.cfg
        ready = await self._all({k: h.ready() for k, h in enumerate(self.handles)})
        failed = [k for k, r in ready.items() if self.deaths[k] is None and r is None]
        if failed:
            raise ValueError(f"worker {failed[0]} could not start: {self.warnings[-1]}")
        loop = asyncio.get_running_loop()
        for k, h in enumerate(self.handles):
            if not h.shared_clock and self.deaths[k] is None:
                self.offsets[k] = await loop.run_in_executor(None, probe_clock, h.clock_ns)
        async with self.wire.http_client(timeout=cfg.endpoint.probe_timeout_s) as http:
            try:
                started = not self.stopping and await self._unless_interrupted(
                    self._start(http))
                if started and not self.stopping:
                    await self._phases(http)
                if self.host_monitor is not None:  # the drain included
                    self.host = self.host_monitor.stop()
                if started:  # interrupted too, once the run_start scrapes were taken
                    await asyncio.gather(self.scrapes.take(http, "run_end"),
                                         self.telemetry.take("run_end"))
            finally:
                await self.telemetry.aclose()
                if self.host_monitor is not None:
                    self.host_monitor.stop()  # interrupted: stop its thread (idempotent)
                await self.adapter.stop_polling()

    async def _unless_interrupted(self, coro: Any) -> bool:
        """Run ``coro`` (the start: probe, first scrapes, prefix-cache preparation, each
        bounded by the probe timeout) unless an interrupt comes first: then it is cancelled
        at once (Ctrl-C does not wait for a silent server's timeouts) and False returned."""
        assert self._stopped is not None
        task, stop = asyncio.ensure_future(coro), asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                self.warnings.append("interrupted during start-up (the probe and the first "
                                     "scrapes): no request was sent")
        with contextlib.suppress(asyncio.CancelledError):  # cancelled here: False
            await task  # its exception, if it failed
            return True
        return False

    async def _start(self, http: httpx.AsyncClient) -> None:
        cfg = self.cfg

        async def probe() -> dict[str, Any]:
            try:
                return await self.adapter.probe(http, cfg.endpoint.probe_timeout_s)
            except httpx.HTTPError as exc:
                self.warnings.append(f"probe failed: {type(exc).__name__}: {exc}")
                return {}

        self.probe, _ = await asyncio.gather(probe(), self.scrapes.take(http, "run_start"))
        limit = parse_max_model_len(self.probe.get("/v1/models"), self.probe.get("/props"))
        for line in length_warnings(self.prompts.records, limit, cfg.load.output_len):
            self.warn_now(line.removeprefix("warning: "))
        # the run's prefill its own (a salt the workers send, or a flush), renewed at each
        # window's opening so the warm-up's prefill is not reused in it
        self.prefix_cache_policy = await self.adapter.prepare_prefix_cache(
            http, cfg.measurement.keep_prefix_cache, f"loadgen-{uuid.uuid4().hex}")
        self.adapter.start_polling(http)

    def warn_now(self, text: str) -> None:
        self.warnings.append(text)
        if self.notify is not None:
            self.notify(text)

    async def _phases(self, http: httpx.AsyncClient) -> None:
        cfg = self.cfg
        warm = cfg.load.effective_warmup()
        salt = self.adapter.cache_salt
        sent = 0
        ncat = len(self.prompts.categories())
        run_start = self.scrapes.snapshots.get("run_start")
        if warm and needs_first_request(cfg, self.adapter, ncat, run_start):
            # vLLM sends per-request SD only with a server flag: the first warm-up request
            # that succeeds tells whether category windows are needed
            while sent < warm and not self.stopping and self.first_ok_has_sd is None:
                await self._phase(Phase(False, sent, 1, salt=salt, concurrency=1))
                sent += 1
        self.category_windows = category_windows(cfg, self.adapter, ncat, run_start,
                                                 self.first_ok_has_sd)
        if not self.category_windows:
            if warm - sent > 0 and not self.stopping:
                await self._phase(Phase(False, sent, warm - sent, salt=salt))
            if not self.stopping:
                await self._measure(http, warm, cfg.load.num_requests, cfg.load.duration_s, None)
            return
        start = sent
        for cat, recs, n, share in split_by_category(self.prompts.records, cfg.load.num_requests):
            if self.stopping:
                break
            w = min(warm, len(recs))
            await self._all({k: self.handles[k].select(cat, start, w) for k in self._live()})
            if w:
                await self._phase(Phase(False, start, w, salt=self.adapter.cache_salt))
            if self.stopping:
                break
            dur = cfg.load.duration_s * share if cfg.load.duration_s else None
            await self._measure(http, start + w, n, dur, cat)
            start = 1 + (self.max_index if self.max_index is not None else start - 1)

    async def _measure(self, http: httpx.AsyncClient, first: int, n: int | None,
                       duration_s: float | None, category: str | None) -> None:
        """One measured window: scrape, send from a common start, scrape at the window's
        close (the single window) or after its drain (a category window)."""
        cfg, scrapes = self.cfg, self.scrapes
        tag = f":{category}" if category is not None else ""
        # warm-up requests (same prompts) must not leave their prefill in the window's cache
        await self.adapter.renew_prefix_cache(http, self.prefix_cache_policy,
                                              f"loadgen-{uuid.uuid4().hex}")
        await self._all({k: self.handles[k].prepare() for k in self._live()})
        await scrapes.take(http, "window_start" + tag)
        start = _now_ns() + self._margin()
        await self.telemetry.open("window_start" + tag, at_ns=start)  # at the common start
        self.current = WindowFacts(start_ns=start, end_ns=start, category=category,
                                   start_scrape="window_start" + tag)
        phase = Phase(True, first, n, duration_s, salt=self.adapter.cache_salt)
        futs: dict[int, Future[Any]] = {}
        loop = asyncio.get_running_loop()
        for k in self._live():
            futs[k] = f = self.handles[k].run_phase(
                replace(phase, start_ns=start + self.offsets[k].offset_ns))
            f.add_done_callback(lambda f: loop.call_soon_threadsafe(self._on_phase_done, f))
        if self.host_monitor is not None and not self.host_monitor.started:
            await asyncio.sleep(max(0.0, (start - _now_ns()) / 1e9))
            self.host_monitor.start()
        sent_all = asyncio.Event()
        ticks = asyncio.ensure_future(scrapes.every(http, cfg.measurement.scrape_interval_s,
                                                    sent_all))
        try:
            ends = await self._all({k: self.handles[k].window_end(first) for k in futs})
            sent_all.set()
            local = [e - self.offsets[k].offset_ns for k, e in ends.items() if e is not None]
            end = max(local) if local else _now_ns()
            self.current.end_ns = end
            if category is None:
                await asyncio.gather(scrapes.take(http, "window_end"),
                                     self.telemetry.close("window_end"))
                self._learn(await self._all(futs))
            else:
                self._learn(await self._all(futs))
                await asyncio.gather(scrapes.take(http, "window_end" + tag),
                                     self.telemetry.close("window_end" + tag))
        finally:
            sent_all.set()
            await ticks
        last = [(r["last_end_by_cat"].get(category) if category is not None
                 else r["last_end_ns"]) for r in self.results if r is not None]
        last_local = [t - self.offsets[k].offset_ns for k, t in enumerate(last) if t is not None]
        b = window_bounds(start, end, max(last_local) if last_local else None)
        self.current.end_ns, self.current.includes_drain = b["end_ns"], b["includes_drain"]
        self.current.end_scrape = "window_end" + tag
        self.windows.append(self.current)
        self.current = None

    # -- after the run ------------------------------------------------------------------------
    def account(self) -> None:
        """Each dead worker's unfinished conversations become error records in its file."""
        self.warnings += account_deaths(self.cfg, self.prompts, self.handles, self.deaths)

    def client_stats(self) -> ClientStats | None:
        if all(r is None for r in self.results) and not any(self.deaths):
            return None
        client = merge_client(self.results, [h.node for h in self.handles], self.deaths,
                              self.cfg.measurement.lag_threshold_ms)
        if self.in_process:
            client.workers = None  # one worker: its figures are the client's
        return client

    def facts(self, partial: bool = False) -> RunFacts:
        """What the run observed (facts.json); ``partial``: a second interrupt, the window as
        far as it got."""
        windows = list(self.windows)
        if partial and self.current is not None:
            cur = replace(self.current, end_ns=max(self.current.start_ns, _now_ns()))
            windows.append(cur)
        seen = Counter(f"internal error in the client: {f}" if self.in_process
                       else f"internal error in worker {r['index']}: {f}"
                       for r in self.results if r is not None for f in r["failures"])
        failures = [w if k == 1 else f"{w} ({k} times)" for w, k in seen.items()]
        warnings = [*self.warnings, *failures, *([self.failure] if self.failure else [])]
        if partial:
            warnings.append("partial summary written on a second interrupt: requests still in "
                            "flight have no record; no server counters")
        sources = [r["token_count_source"] for r in self.results
                   if r is not None and r.get("token_count_source")]
        interrupted = self.interrupted or partial or any(
            r["interrupted"] for r in self.results if r is not None)
        return RunFacts(
            windows=windows, category_windows=self.category_windows,
            counters=self.scrapes.log.to_dict(),
            records=[RecordsFile(file=h.describe()["shard"], clock_offset_ns=o.offset_ns,
                                 clock_error_ns=o.error_ns, clock=o.method, node=h.node,
                                 died=d)
                     for h, o, d in zip(self.handles, self.offsets, self.deaths, strict=True)],
            client=None if partial else self.client_stats(),
            host=None if partial else self.host,
            prefix_cache_policy=self.prefix_cache_policy,
            telemetry=list(self.telemetry.targets) if self.cfg.measurement.telemetry else None,
            token_count_source=sources[0] if sources else None,
            warnings=[self.wire.scrub(w) for w in warnings],
            interrupted=interrupted and self.failure is None,
            failure=self.failure, partial=partial)
