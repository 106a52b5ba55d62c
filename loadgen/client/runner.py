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
import contextlib
import gc
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

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


class Run:
    def __init__(self, cfg: RunConfig, prompts: PromptFile) -> None:
        cfg.validate()
        self.cfg = cfg
        self.prompts = prompts
        # the endpoint parsed once: headers, TLS, proxy, secrets (EndpointError is a ValueError)
        self.wire = build_wire(cfg)
        self.warnings: list[str] = list(self.wire.notices)
        self.adapter: EngineAdapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        self.records: list[dict[str, Any]] = []
        self.interrupted = False
        self.progress_cb: Callable[[dict[str, Any]], None] | None = None
        self._driver: Driver | None = None
        self._sender: RequestSender | None = None

    @property
    def in_flight(self) -> int:
        return self._sender.in_flight if self._sender else 0

    def interrupt(self) -> None:
        """Ctrl-C: stop sending, cancel what is in flight (each becomes a cancelled record)."""
        self.interrupted = True
        if self._driver is not None:
            self._driver.stop.set()
            self._driver.cancel_all()

    async def execute(self) -> RunOutcome:
        cfg = self.cfg
        try:  # a certificate that does not verify fails every request: say so once, up front
            await self.wire.connector.check_certificate()
        except CertificateError as exc:
            raise EndpointError(str(exc)) from None
        writer = RecordWriter(cfg.out / "requests.jsonl")

        def on_record(d: dict[str, Any]) -> None:
            if d["error"]:  # a server may echo a key or URL back in its error text
                d["error"] = self.wire.scrub(d["error"])
            writer.write(d)
            self.records.append(d)
            if self.progress_cb:
                self.progress_cb(d)

        client = self.wire.stream_client()
        self._sender = sender = RequestSender(cfg, self.adapter, client, on_record)
        self._driver = drv = Driver(sender)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.interrupt)
        scrapes = Scrapes(self.adapter, self.warnings)
        window: dict[str, Any] = {}
        probe: dict[str, Any] = {}
        stats = None
        lag = LagMonitor()
        gc_was = gc.isenabled()
        async with self.wire.http_client() as http:
            try:
                try:
                    probe = await self.adapter.probe(http)
                except httpx.HTTPError as exc:
                    self.warnings.append(f"probe failed: {exc!r}")
                self.adapter.start_polling(http)
                await scrapes.take(http, "run_start")
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
                await drv.wait([measured])
                drv.mark_window_end()
                await drv.wait([scrape_end])
                cpu1 = time.process_time()
                lag.stop()
                if gc_was:
                    gc.enable()
                stats = client_stats(cpu1 - cpu0, lag.lags_ms, self.records,
                                     cfg.lag_threshold_ms)
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
                for sig in (signal.SIGINT, signal.SIGTERM):
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        window["end_ns"] = drv.window_end_ns or window.get("start_ns", 0)
        for exc in drv.failures:
            self.warnings.append(f"internal error in the client: {type(exc).__name__}: {exc}")
        self.warnings[:] = [self.wire.scrub(w) for w in self.warnings]
        return RunOutcome(records=self.records, window=self._bounds(window), counters=scrapes,
                          probe=probe, client=stats, warnings=self.warnings,
                          interrupted=self.interrupted)

    def _bounds(self, window: dict[str, Any]) -> dict[str, Any]:
        start = window.get("start_ns", 0)
        end = window.get("end_ns", start)
        measured = [r for r in self.records if not r["warmup"]]
        includes_drain = False
        if measured and end - start < 0.2 * (max(r["end_ns"] for r in measured) - start):
            # Everything was sent at once (n <= concurrency): no steady state to isolate.
            end = max(r["end_ns"] for r in measured)
            includes_drain = True
        return {"start_ns": start, "end_ns": end, "includes_drain": includes_drain}
