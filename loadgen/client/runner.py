"""One benchmark run: replay a prompt file against an endpoint at a controlled load.

Phases: probe the server and scrape its counters (run start), warm-up requests, then the measured
phase. The measurement window opens when warm-up is over and closes when the last measured
request has been sent (or ``--duration`` is up): the steady state, without ramp-up or drain.
Counters are scraped at both edges, so acceptance from counter deltas and output tokens/s cover
the same window.

Category windows (``--category-windows``; the default when the engine gives no per-request SD
numbers and the server has SD counters): the categories run one after another, each with its own
warm-up and measured window, and a counter scrape at each edge taken once the phase before has
drained, so each category's counter delta covers exactly its own requests.

Every request ends ok, error (with a reason) or cancelled, and its record is
appended to requests.jsonl the moment it ends; no record is kept in memory (the summary is
computed from the file afterwards, loadgen.analysis.accumulate).

``Run.execute()`` returns a ``RunOutcome``; ``loadgen.client.benchmark`` turns it into the run
directory's summary.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from loadgen.client.connect import CertificateError
from loadgen.client.endpoint import EndpointError
from loadgen.client.gcwindow import close_window, open_window
from loadgen.client.host import HostMonitor
from loadgen.client.lag import LagMonitor, client_stats
from loadgen.client.loops import Driver
from loadgen.client.plan import Item, iter_items, iter_records, split_by_category
from loadgen.client.replay import text_replay
from loadgen.client.request import RequestSender
from loadgen.client.scrape import Scrapes
from loadgen.client.tally import RecordTally, window_bounds
from loadgen.client.wiring import build_wire
from loadgen.data.lengthguard import length_warnings, parse_max_model_len
from loadgen.data.prompts import PromptFile
from loadgen.engines import make_adapter
from loadgen.engines.base import EngineAdapter
from loadgen.engines.sampling import Sampling
from loadgen.results.config import RunConfig
from loadgen.results.records import RecordWriter, write_failure
from loadgen.results.summary import ClientStats, HostStats

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class RunOutcome:
    """What one executed run observed, before any summary statistics."""

    records_path: Path
    window: dict[str, Any]  # start_ns, end_ns, includes_drain
    counters: Scrapes
    probe: dict[str, Any]
    client: ClientStats | None
    warnings: list[str] = field(default_factory=list)
    interrupted: bool = False
    windows: list[dict[str, Any]] = field(default_factory=list)  # category windows, in order
    failure: str | None = None  # why the run stopped on its own (a record it could not write)
    host: HostStats | None = None
    prefix_cache_policy: str | None = None


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
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                            seed_per_request=cfg.seed_per_request, run_seed=cfg.seed)
        self.adapter: EngineAdapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids, sampling=sampling,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        if not self.adapter.accepts_text and any(not r.prompt_token_ids
                                                 for r in prompts.records):
            raise ValueError(f"the {cfg.engine} engine sends token ids and the prompt file "
                             f"holds text: tokenize it first (loadgen data tokenize)")
        self.replay = text_replay(cfg, prompts, self.adapter)  # refused here if impossible
        if self.replay is not None:
            self.wire.notices.append(self.replay.notice)
        self.category_windows = False
        self._windows: list[dict[str, Any]] = []
        self.tally = RecordTally()
        self.warnings: list[str] = [*self.wire.notices, *([fd_warning] if fd_warning else [])]
        self.interrupted = False
        self.failure: str | None = None
        self.window: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.progress_cb: Callable[[dict[str, Any]], None] | None = None
        # told each warning that matters before the load starts (the CLI prints it)
        self.notify: Callable[[str], None] | None = None
        # who used the CPU over the window (client/host.py); the caller may set the engine PID
        self.host_monitor: HostMonitor | None = HostMonitor()
        self.prefix_cache_policy: str | None = None
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

    def _check_lengths(self, probe: dict[str, Any]) -> None:
        """Before sending: prompts that cannot fit the max model length the server reports
        (vLLM/SGLang /v1/models, llama.cpp /props) are a warning, printed now and kept."""
        limit = parse_max_model_len(probe.get("/v1/models"), probe.get("/props"))
        for line in length_warnings(self.prompts.records, limit, self.cfg.output_len):
            text = line.removeprefix("warning: ")
            self.warnings.append(text)
            if self.notify is not None:
                self.notify(text)

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
            self.tally.add(d)  # kept even when the file cannot take it
            try:
                if self.failure is None:
                    writer.write(d)
            except OSError as exc:
                self._fail(write_failure(writer.path, exc))
            if self.progress_cb:
                self.progress_cb(d)

        client = self.wire.stream_client()
        self._sender = sender = RequestSender(cfg, self.adapter, client, on_record)
        sender.reply_ids = self.replay.encode if self.replay else None
        self._driver = drv = Driver(sender)
        if self.interrupted:  # a signal arrived before the loop ran
            drv.stop.set()
        self._scrapes = scrapes = Scrapes(self.adapter, self.warnings, cfg.probe_timeout_s)
        windows: list[dict[str, Any]] = []
        probe: dict[str, Any] = {}
        stats = None
        self._lag = LagMonitor()
        self._cpu_s = 0.0
        self._gc_was = gc.isenabled()
        self._host: HostStats | None = None
        async with self.wire.http_client(timeout=cfg.probe_timeout_s) as http:
            try:
                async def start() -> None:  # a task, so that Ctrl-C cancels it too
                    nonlocal probe
                    probe, _ = await asyncio.gather(
                        self.adapter.probe(http, cfg.probe_timeout_s),
                        scrapes.take(http, "run_start"))

                await drv.wait([drv.spawn(start())])
                self._check_lengths(probe)
                self.prefix_cache_policy = await self.adapter.prepare_prefix_cache(
                    http, cfg.keep_prefix_cache, f"loadgen-{uuid.uuid4().hex}")
                self.adapter.start_polling(http)
                warm = cfg.effective_warmup()
                items = iter_items(self.prompts, cfg.seed, warm, cfg.shuffle)
                sent = 0
                if warm and self._needs_first_request(scrapes):
                    # vLLM sends per-request SD only with a server flag: the first warm-up
                    # request that succeeds tells whether category windows are needed.
                    while sent < warm and not self.stop_requested and (
                            self.tally.first_ok is None):
                        await drv.closed_loop(items, 1, None, 1)
                        sent += 1
                self.category_windows = self._decide_windows(scrapes)
                if self.category_windows and not self.stop_requested:
                    await self._category_phases(http, sent, warm)
                    windows = self._windows
                elif not self.stop_requested:
                    rest = max(0, warm - sent)
                    if rest:
                        await self._warmup(items, rest)
                    if not self.stop_requested:
                        w = await self._measure(http, items, cfg.num_requests, cfg.duration_s,
                                                None)
                        windows = [w]
                # the host monitor ran from the first window's opening to the last one's close
                if self.host_monitor is not None:
                    self._host = self.host_monitor.stop()
                stats = client_stats(self._cpu_s, self._lag.lags_ms, self.tally.events,
                                     self.tally.measured, cfg.lag_threshold_ms)
                if not self.interrupted and self.failure is None:
                    await scrapes.take(http, "run_end")
            finally:
                if self.host_monitor is not None:
                    self.host_monitor.stop()  # an interrupted run: stop the thread (idempotent)
                self._lag.stop()
                close_window(self._gc_was)
                await self.adapter.stop_polling()
                drv.cancel_all()
                await drv.wait(list(drv.tasks))
                client.close()
                writer.close()
                self._loop = None
        if not windows and self._windows:
            windows = self._windows  # interrupted mid-way: the windows that ran
        if not windows and self.window:
            windows = [self.window]  # interrupted inside the single window
        for exc in drv.failures:
            self.warnings.append(f"internal error in the client: {type(exc).__name__}: {exc}")
        if self.failure:
            self.warnings.append(self.failure)
        self.warnings[:] = [self.wire.scrub(w) for w in self.warnings]
        if not windows:
            windows = [{"start_ns": 0, "end_ns": 0, "includes_drain": False,
                        "category": None}]
        bounded = [self.bounds(w) for w in windows]
        return RunOutcome(records_path=writer.path, window=bounded[0] if len(bounded) == 1
                          else merged_window(bounded), counters=scrapes, probe=probe,
                          client=stats, warnings=self.warnings,
                          interrupted=self.interrupted, failure=self.failure,
                          windows=bounded if self.category_windows else [],
                          host=self._host, prefix_cache_policy=self.prefix_cache_policy)

    @property
    def stop_requested(self) -> bool:
        return self._driver is not None and self._driver.stop.is_set()

    def _needs_first_request(self, scrapes: Scrapes) -> bool:
        return (self.cfg.category_windows is None
                and self.adapter.per_request_sd_support == "optional"
                and self._auto_windows_possible(scrapes))

    def _auto_windows_possible(self, scrapes: Scrapes) -> bool:
        """Several categories and SD counters on the server (vLLM registers them only with
        SD on)."""
        snap = scrapes.snapshots.get("run_start") or {}
        return (len(self.prompts.categories()) > 1
                and any(k in snap for k in ("drafts", "verify_calls")))

    def _decide_windows(self, scrapes: Scrapes) -> bool:
        cfg = self.cfg
        if cfg.category_windows is not None:
            return cfg.category_windows
        support = self.adapter.per_request_sd_support
        if support == "always" or not self._auto_windows_possible(scrapes):
            return False
        if support == "optional":
            first = self.tally.first_ok
            if first is None:  # --warmup-requests 0, or no warm-up request succeeded
                return False
            return first.get("acceptance_length") is None
        return True

    async def _measure(self, http: httpx.AsyncClient, items: Iterator[Item],
                       n: int | None, duration_s: float | None,
                       category: str | None) -> dict[str, Any]:
        """One measured window: scrape, send, scrape at the window end (single window) or
        after the drain (a category window: its counter delta then covers exactly its
        requests)."""
        cfg, drv, scrapes = self.cfg, self._driver, self._scrapes
        assert drv is not None
        tag = f":{category}" if category is not None else ""
        drv.new_window()
        # warm-up requests (same prompts) must not leave their prefill in the window's cache
        await self.adapter.renew_prefix_cache(http, self.prefix_cache_policy,
                                              f"loadgen-{uuid.uuid4().hex}")
        await scrapes.take(http, "window_start" + tag)
        window: dict[str, Any] = {"start_ns": _now_ns(), "category": category,
                                  "start_scrape": "window_start" + tag}
        self.window = window  # the current window, for a partial summary
        cpu0 = time.process_time()
        if self.host_monitor is not None and not self.host_monitor.started:
            self.host_monitor.start()
        self._lag.start()
        open_window()  # no full-heap collector pause in the window; memory bounded
        deadline = (_now_ns() + int(duration_s * 1e9)) if duration_s else None
        if cfg.concurrency is not None:
            measured = drv.spawn(drv.closed_loop(items, n, deadline, cfg.concurrency))
        else:
            assert cfg.request_rate is not None
            measured = drv.spawn(drv.open_loop(
                items, n, deadline, cfg.request_rate, cfg.arrival, cfg.burstiness, cfg.seed,
                cfg.max_concurrency))
        measured.add_done_callback(lambda _: drv.mark_window_end())
        # counters also scraped inside the window, so a server restart shows (client/scrape.py)
        ticks = drv.spawn(scrapes.every(http, cfg.scrape_interval_s, drv.window_end))
        if category is None:
            async def scrape_at_window_end() -> None:
                await drv.window_end.wait()
                await scrapes.take(http, "window_end")

            scrape_end = drv.spawn(scrape_at_window_end())
            await drv.wait([measured])
            drv.mark_window_end()
            await drv.wait([scrape_end, ticks])
        else:
            await drv.wait([measured])
            drv.mark_window_end()
            await drv.wait([ticks])
            await scrapes.take(http, "window_end" + tag)
        self._cpu_s += time.process_time() - cpu0
        self._lag.stop()
        close_window(self._gc_was)
        window["end_ns"] = drv.window_end_ns or window["start_ns"]
        window["end_scrape"] = "window_end" + tag
        return window

    async def _warmup(self, items: Iterator[Item], n: int) -> None:
        """``n`` warm-up requests under the run's own load: the closed loop at its concurrency,
        or arrivals at its rate (never a burst of all of them at once)."""
        cfg, drv = self.cfg, self._driver
        assert drv is not None
        if cfg.concurrency is not None:
            await drv.closed_loop(items, n, None, min(cfg.concurrency, n))
        else:
            assert cfg.request_rate is not None
            await drv.open_loop(items, n, None, cfg.request_rate, cfg.arrival, cfg.burstiness,
                                cfg.seed, cfg.max_concurrency)

    async def _category_phases(self, http: httpx.AsyncClient, start: int, warm: int) -> None:
        """Category windows: per category, warm-up (min of the warm-up count and the
        category's size), then a measured window of that category's requests only."""
        cfg, drv = self.cfg, self._driver
        assert drv is not None
        for cat, recs, n, share in split_by_category(self.prompts.records, cfg.num_requests):
            if self.stop_requested:
                break
            w = min(warm, len(recs))
            items = iter_records(recs, cfg.seed, w, cfg.shuffle, start)
            if w:
                await self._warmup(items, w)
            dur = cfg.duration_s * share if cfg.duration_s else None
            self._windows.append(await self._measure(http, items, n, dur, cat))
            start = 1 + (self.tally.max_index if self.tally.max_index is not None
                         else start - 1)

    def bounds(self, window: dict[str, Any] | None = None) -> dict[str, Any]:
        """A measurement window (start_ns, end_ns, includes_drain) as far as the run got; by
        default the current one (a partial summary after a second Ctrl-C)."""
        window = self.window if window is None else window
        start = window.get("start_ns", 0)
        end = window.get("end_ns") or start
        cat = window.get("category")
        last = self.tally.last_end_ns if cat is None else self.tally.last_end_by_cat.get(cat)
        return {**window, **window_bounds(start, end, last)}


def merged_window(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's window when it has several (category windows): from the first start to the
    last end; its duration for throughput is the sum of the windows' (docs/METRICS.md)."""
    return {"start_ns": windows[0]["start_ns"], "end_ns": windows[-1]["end_ns"],
            "includes_drain": any(w["includes_drain"] for w in windows)}
