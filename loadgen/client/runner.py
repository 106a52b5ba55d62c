"""One benchmark run: replay a prompt file against an endpoint at a controlled load.

Phases: probe the server and scrape its counters (run start), warm-up requests, then the measured
phase. The measurement window opens when warm-up is over and closes when the last measured
request has been sent (or ``--duration`` is up): the steady state, without ramp-up or drain.
Counters are scraped at both edges, so acceptance from counter deltas and output tokens/s cover
the same window. Every request ends ok, error (with a reason) or cancelled, and its record is
appended to requests.jsonl the moment it ends.

``Run.execute()`` returns a ``RunOutcome``; ``loadgen.client.benchmark`` turns it into the run
directory's summary.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadgen.client.connect import CertificateError
from loadgen.client.endpoint import EndpointError
from loadgen.client.lag import LagMonitor, client_stats
from loadgen.client.loops import Driver
from loadgen.client.plan import iter_items
from loadgen.client.request import RequestSender
from loadgen.client.scrape import Scrapes
from loadgen.client.wiring import build_wire
from loadgen.data.prompts import PromptFile
from loadgen.engines import make_adapter
from loadgen.engines.base import EngineAdapter
from loadgen.results.config import RunConfig
from loadgen.results.records import RecordWriter
from loadgen.results.summary import ClientStats

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class RunOutcome:
    """What one executed run observed, before any summary statistics."""

    records: list[dict[str, Any]]
    window: dict[str, Any]  # start_ns, end_ns, includes_drain
    counters: Scrapes
    probe: dict[str, Any]
    client: ClientStats | None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    failure: str | None = None  # why the run stopped on its own (a record it could not write)


FD_MARGIN = 64  # files the process needs besides one socket per request in flight


def ensure_open_files(cfg: RunConfig) -> str | None:
    """One socket per request in flight: raise the soft open-file limit up to the hard one when
    the load needs more, or refuse up front (instead of failing requests with EMFILE). An open
    loop without --max-concurrency is not refused: a warning is returned instead."""
    in_flight = cfg.concurrency or cfg.max_concurrency
    if in_flight is None:  # an open loop without a cap: as many as could be in flight at once
        n = cfg.num_requests or float("inf")
        in_flight = int(min(n, (cfg.request_rate or 1.0) * cfg.timeout_s))
    need = in_flight + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(max(need, soft), hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if need > soft and (cfg.concurrency or cfg.max_concurrency):
        flag = "--concurrency" if cfg.concurrency else "--max-concurrency"
        raise ValueError(f"{flag} {in_flight} needs about {need} open files but the limit is "
                         f"{soft} (hard limit {hard}); raise it (ulimit -n) or lower the load")
    if need > soft:
        return (f"up to {in_flight} requests may be in flight but the open-file limit is {soft}: "
                f"requests beyond it fail (give --max-concurrency)")
    return None


class Run:
    def __init__(self, cfg: RunConfig, prompts: PromptFile) -> None:
        cfg.validate()
        self.cfg = cfg
        self.prompts = prompts
        # the endpoint parsed once: headers, TLS, proxy, secrets (EndpointError is a ValueError)
        self.wire = build_wire(cfg)
        fd_warning = ensure_open_files(cfg)
        self.adapter: EngineAdapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        self.records: list[dict[str, Any]] = []
        self.warnings: list[str] = [*self.wire.notices, *([fd_warning] if fd_warning else [])]
        self.interrupted = False
        self.failure: str | None = None
        self.window: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.progress_cb: Callable[[dict[str, Any]], None] | None = None
        self._driver: Driver | None = None
        self._sender: RequestSender | None = None

    @property
    def in_flight(self) -> int:
        return self._sender.in_flight if self._sender else 0

    def interrupt(self) -> None:
        """Ctrl-C / SIGTERM: stop sending, cancel what is in flight (each becomes a cancelled
        record). Safe to call from a signal handler, before, during or after the event loop."""
        self.interrupted = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        if self._driver is not None:
            self._driver.stop.set()
            self._driver.cancel_all()

    def _fail(self, reason: str) -> None:
        """The run cannot go on (a record could not be written): stop it like Ctrl-C."""
        if self.failure is None:
            self.failure = reason
            self._stop_now()

    async def check_endpoint(self) -> None:
        """A certificate that does not verify fails every request: say so once, up front
        (EndpointError, before anything is written). Bounded by ``probe_timeout_s``."""
        try:
            await self.wire.connector.check_certificate(self.cfg.probe_timeout_s)
        except CertificateError as exc:
            raise EndpointError(str(exc)) from None

    async def execute(self) -> RunOutcome:
        cfg = self.cfg
        self._loop = asyncio.get_running_loop()
        writer = RecordWriter(cfg.out / "requests.jsonl")

        def on_record(d: dict[str, Any]) -> None:
            if d["error"]:  # a server may echo a key or URL back in its error text
                d["error"] = self.wire.scrub(d["error"])
            self.records.append(d)  # kept even when the file cannot take it (summary from these)
            try:
                if self.failure is None:
                    writer.write(d)
            except OSError as exc:
                self._fail(f"cannot write a record to {writer.path} ({exc.strerror or exc}); "
                           f"the run was stopped")
            if self.progress_cb:
                self.progress_cb(d)

        client = self.wire.stream_client()
        self._sender = sender = RequestSender(cfg, self.adapter, client, on_record)
        self._driver = drv = Driver(sender)
        if self.interrupted:  # a signal arrived before the loop ran
            drv.stop.set()
        scrapes = Scrapes(self.adapter, self.warnings, cfg.probe_timeout_s)
        window = self.window
        probe: dict[str, Any] = {}
        stats = None
        lag = LagMonitor()
        gc_was = gc.isenabled()
        async with self.wire.http_client(timeout=cfg.probe_timeout_s) as http:
            try:
                async def start() -> None:  # a task, so that Ctrl-C cancels it too
                    nonlocal probe
                    probe, _ = await asyncio.gather(
                        self.adapter.probe(http, cfg.probe_timeout_s),
                        scrapes.take(http, "run_start"))

                await drv.wait([drv.spawn(start())])
                self.adapter.start_polling(http)
                items = iter_items(self.prompts, cfg.seed, cfg.warmup_requests, cfg.shuffle)
                if cfg.warmup_requests:
                    conc = cfg.concurrency or cfg.max_concurrency or cfg.warmup_requests
                    await drv.closed_loop(items, cfg.warmup_requests, None,
                                          min(conc, cfg.warmup_requests))
                # The window opens now.
                await scrapes.take(http, "window_start")
                window["start_ns"] = _now_ns()
                cpu0 = time.process_time()
                lag.start()
                gc.disable()  # no collector pauses inside the timed window; re-enabled below
                deadline = (_now_ns() + int(cfg.duration_s * 1e9)) if cfg.duration_s else None
                if cfg.concurrency is not None:
                    measured = drv.spawn(drv.closed_loop(items, cfg.num_requests, deadline,
                                                         cfg.concurrency))
                else:
                    assert cfg.request_rate is not None
                    measured = drv.spawn(drv.open_loop(
                        items, cfg.num_requests, deadline, cfg.request_rate, cfg.arrival,
                        cfg.burstiness, cfg.seed, cfg.max_concurrency))
                measured.add_done_callback(lambda _: drv.mark_window_end())

                async def scrape_at_window_end() -> None:
                    await drv.window_end.wait()
                    await scrapes.take(http, "window_end")

                scrape_end = drv.spawn(scrape_at_window_end())
                ticks = drv.spawn(scrapes.every(http, cfg.scrape_interval_s, drv.window_end))
                await drv.wait([measured])
                drv.mark_window_end()
                await drv.wait([scrape_end, ticks])
                cpu1 = time.process_time()
                lag.stop()
                if gc_was:
                    gc.enable()
                stats = client_stats(cpu1 - cpu0, lag.lags_ms, self.records,
                                     cfg.lag_threshold_ms)
                if not self.interrupted and self.failure is None:
                    await scrapes.take(http, "run_end")
            finally:
                lag.stop()
                if gc_was:
                    gc.enable()
                await self.adapter.stop_polling()
                drv.cancel_all()
                await drv.wait(list(drv.tasks))
                client.close()
                writer.close()
                self._loop = None
        window["end_ns"] = drv.window_end_ns or window.get("start_ns", 0)
        for exc in drv.failures:
            self.warnings.append(f"internal error in the client: {type(exc).__name__}: {exc}")
        if self.failure:
            self.warnings.append(self.failure)
        self.warnings[:] = [self.wire.scrub(w) for w in self.warnings]
        return RunOutcome(records=self.records, window=self.bounds(), counters=scrapes,
                          probe=probe, client=stats, warnings=self.warnings,
                          interrupted=self.interrupted, failure=self.failure)

    def bounds(self) -> dict[str, Any]:
        """The measurement window (start_ns, end_ns, includes_drain) as far as the run got."""
        window = self.window
        start = window.get("start_ns", 0)
        end = window.get("end_ns") or start
        measured = [r for r in self.records if not r["warmup"]]
        includes_drain = False
        if measured and end - start < 0.2 * (max(r["end_ns"] for r in measured) - start):
            # Everything was sent at once (n <= concurrency): no steady state to isolate.
            end = max(r["end_ns"] for r in measured)
            includes_drain = True
        return {"start_ns": start, "end_ns": end, "includes_drain": includes_drain}
