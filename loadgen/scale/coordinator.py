"""A scaled-out run: N workers (local processes or Ray actors) driven by this coordinator.

The coordinator alone probes the server and scrapes its counters, at the same moments as a
single-process run (loadgen/client/runner.py): run start; window start, once every worker's
warm-up has ended; window end, once every worker has sent its last measured request; run end.
Every worker starts its measured phase at one start time fixed in advance (mapped to its clock
by a clock-offset probe when it runs on another host), so in rate mode the merged send schedule
is the one arrival process a single process would have followed. Each worker appends its
records to its shard requests.<k>.jsonl; the summary is streamed from all shards afterwards.

A worker that dies is reported (manifest, summary warnings, the client table); every
conversation it had started and not finished becomes an error record in its shard; the other
workers go on, and the run ends normally (docs/FORMATS.md, "Scaled-out runs").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
import uuid
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from loadgen.client.benchmark import RunFailed, prefix_cache_stats
from loadgen.client.connect import CertificateError
from loadgen.client.endpoint import EndpointError
from loadgen.client.host import HostMonitor, pid_listening_on
from loadgen.client.replay import text_replay
from loadgen.client.scrape import Scrapes, consistent
from loadgen.client.stop import StopSignals
from loadgen.client.tally import window_bounds
from loadgen.client.wiring import build_wire
from loadgen.data.prompts import PromptFile
from loadgen.engines import make_adapter
from loadgen.results.config import RunConfig
from loadgen.results.files import write_json
from loadgen.results.manifest import build_manifest
from loadgen.results.redact import redact_url
from loadgen.results.summary import HostStats, Summary
from loadgen.scale.handles import LocalWorker, WorkerDied, WorkerHandle
from loadgen.scale.merge import (
    ClockOffset,
    account_dead,
    merge_client,
    probe_clock,
    summarize_shards,
)
from loadgen.scale.share import plan_workers
from loadgen.scale.worker import WorkerSpec, check_split, peak_rss_mb, split

_now_ns = time.monotonic_ns
START_MARGIN_NS = 200_000_000  # the common start is this far after the window-start scrape


def shard_path(out: Path, k: int) -> Path:
    return out / f"requests.{k}.jsonl"


def worker_specs(cfg: RunConfig, workers: int, out: Path,
                 endpoints: list[str] | None = None) -> list[WorkerSpec]:
    """Each worker's share of the run. ``endpoints``: worker k sends to endpoints[k % len]
    (scripts/bench_scale.py spreads its load over several engine processes this way)."""
    check_split(cfg, workers)
    return [WorkerSpec(cfg=replace(cfg, endpoint=endpoints[k % len(endpoints)])
                       if endpoints else cfg, index=k, workers=workers,
                       concurrency=split(cfg.concurrency, k, workers),
                       max_concurrency=split(cfg.max_concurrency, k, workers),
                       shard=shard_path(out, k)) for k in range(workers)]


async def _wait(fut: Future[Any]) -> Any:
    return await asyncio.wrap_future(fut)


class Coordinator:
    def __init__(self, cfg: RunConfig, prompts: PromptFile, handles: list[WorkerHandle],
                 host_monitor: HostMonitor | None = None) -> None:
        self.cfg = cfg
        self.prompts = prompts
        self.handles = handles
        self.wire = build_wire(cfg)
        self.adapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        self.warnings: list[str] = []
        self.offsets: list[ClockOffset] = [ClockOffset() for _ in handles]
        self.results: list[dict[str, Any] | None] = [None] * len(handles)
        self.deaths: list[str | None] = [None] * len(handles)
        self.interrupted = False
        # the command's StopSignals take SIGINT/SIGTERM (else this coordinator's loop does)
        self.own_signals = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self.window: dict[str, Any] = {}
        self.scrapes = Scrapes(self.adapter, self.warnings)
        self.probe: dict[str, Any] = {}
        self.prefix_cache_policy: str | None = None
        self.failure: str | None = None  # a worker could not write its records: run stopped
        self.start_ns: int | None = None  # the measured phase's common start (this clock)
        # who used this host's CPU in the window (worker processes on this host only)
        self.host_monitor = host_monitor
        self.host: HostStats | None = None

    def request_stop(self) -> None:
        """From a signal handler (StopSignals): interrupt on the coordinator's loop."""
        self.interrupted = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.interrupt)

    def interrupt(self) -> None:
        self.interrupted = True
        for h in self.handles:
            with contextlib.suppress(Exception):
                h.stop()

    def _dead(self, k: int, exc: BaseException) -> None:
        if self.deaths[k] is None:
            h = self.handles[k]
            self.deaths[k] = h.death() or f"worker {k}: {exc}"
            print(f"loadgen run: {self.deaths[k]}; the run goes on without it",
                  file=sys.stderr)

    def _on_measured(self, fut: Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is not None or not fut.result().get("failure"):
            return
        if self.failure is None:
            self.failure = fut.result()["failure"]
            for h in self.handles:
                with contextlib.suppress(Exception):
                    h.stop()

    async def _all(self, futs: list[Future[Any]]) -> list[Any]:
        out = []
        for k, res in enumerate(await asyncio.gather(*(_wait(f) for f in futs),
                                                     return_exceptions=True)):
            if isinstance(res, BaseException):
                if isinstance(res, WorkerDied) or self.handles[k].death():
                    self._dead(k, res)
                else:
                    self.warnings.append(f"worker {k}: {res}")
                out.append(None)
            else:
                out.append(res)
        return out

    async def execute(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM) if self.own_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.interrupt)
        ready = await self._all([h.ready() for h in self.handles])
        failed = [k for k, r in enumerate(ready) if self.deaths[k] is None and r is None]
        if failed:
            raise ValueError(f"worker {failed[0]} could not start: {self.warnings[-1]}")
        for k, h in enumerate(self.handles):
            if not h.shared_clock and self.deaths[k] is None:
                self.offsets[k] = await loop.run_in_executor(None, probe_clock, h.clock_ns)
        async with self.wire.http_client() as http:
            try:
                try:
                    self.probe = await self.adapter.probe(http)
                except httpx.HTTPError as exc:
                    self.warnings.append(f"probe failed: {exc!r}")
                self.adapter.start_polling(http)
                await self.scrapes.take(http, "run_start")
                # the run's prefill its own (a salt the workers send, or a flush), renewed at
                # the window's opening so the warm-up's prefill is not reused in it
                self.prefix_cache_policy = await self.adapter.prepare_prefix_cache(
                    http, self.cfg.keep_prefix_cache, f"loadgen-{uuid.uuid4().hex}")
                await self._all([h.warmup(self.adapter.cache_salt) for h in self.handles])
                await self.adapter.renew_prefix_cache(http, self.prefix_cache_policy,
                                                      f"loadgen-{uuid.uuid4().hex}")
                await self.scrapes.take(http, "window_start")
                start = _now_ns() + START_MARGIN_NS + max(o.error_ns for o in self.offsets)
                self.start_ns = start
                measures = [h.measure(start + self.offsets[k].offset_ns, self.adapter.cache_salt)
                            for k, h in enumerate(self.handles)]
                for fut in measures:  # a worker that cannot write its records stops the run
                    fut.add_done_callback(
                        lambda f: loop.call_soon_threadsafe(self._on_measured, f))
                if self.host_monitor is not None:
                    await asyncio.sleep(max(0.0, (start - _now_ns()) / 1e9))
                    self.host_monitor.start()
                ends = await self._all([h.window_end() for h in self.handles])
                end_local = [e - self.offsets[k].offset_ns for k, e in enumerate(ends)
                             if e is not None]
                end = max(end_local) if end_local else _now_ns()
                await self.scrapes.take(http, "window_end")
                self.results = await self._all(measures)
                if self.host_monitor is not None:  # as a single process: the drain included
                    self.host = self.host_monitor.stop()
                await self.scrapes.take(http, "run_end")
            finally:
                if self.host_monitor is not None:
                    self.host_monitor.stop()  # interrupted: stop its thread (idempotent)
                await self.adapter.stop_polling()
                for sig in (signal.SIGINT, signal.SIGTERM) if self.own_signals else ():
                    with contextlib.suppress(NotImplementedError, RuntimeError):
                        loop.remove_signal_handler(sig)
        last_ends = []
        for k, res in enumerate(self.results):
            if res is not None:
                if res["last_end_ns"] is not None:
                    last_ends.append(res["last_end_ns"] - self.offsets[k].offset_ns)
                self.warnings.extend(f"internal error in worker {k}: {f}"
                                     for f in res["failures"])
                self.interrupted = self.interrupted or res["interrupted"]
                self.failure = self.failure or res.get("failure")
        self.window = window_bounds(start, end, max(last_ends) if last_ends else None)

    def account(self) -> None:
        """Each dead worker's unfinished conversations become error records in its shard."""
        for k, reason in enumerate(self.deaths):
            if reason is None:
                continue
            h = self.handles[k]
            error = (f"worker {k} died with its node: this request was started, its record "
                     f"was lost" if h.records_lost else None)
            added = account_dead(shard_path(self.cfg.out, k), self.cfg, self.prompts, k,
                                 len(self.handles), h.issued(), f"worker {k} died", error)
            what = "started" if h.records_lost else "in flight"
            self.warnings.append(f"{reason}: {added} request(s) {what} accounted as errors; "
                                 f"the other workers went on{h.shard_note}")

    def summary(self) -> Summary:
        cfg = self.cfg
        counters, window = self.scrapes, self.window
        notes: list[str] = []  # counter resets (a server restart) left out of the deltas
        window_delta = consistent(counters.delta(
            "window_start", "run_end" if window["includes_drain"] else "window_end"),
            "window", notes)
        run_delta = consistent(counters.delta("run_start", "run_end"), "run", notes)
        acceptance = self.adapter.acceptance(window_delta) if window_delta else None
        nodes = [h.node for h in self.handles]
        client = merge_client(self.results, nodes, self.deaths, cfg.lag_threshold_ms)
        end = counters.snapshots.get("run_end" if window["includes_drain"] else "window_end")
        pc_warnings: list[str] = []
        summary = summarize_shards(
            self._shards(), self.offsets, window, cfg.request_rate is not None,
            acceptance=acceptance, counter_delta=window_delta, run_counter_delta=run_delta,
            client=client, sampling=cfg.sampling(), host=self.host,
            prefix_cache=lambda sent: prefix_cache_stats(
                self.adapter, self.prefix_cache_policy, window_delta, end, sent, pc_warnings))
        summary.warnings.extend(pc_warnings)
        bad = [w for w in client.workers or [] if w.overloaded]
        summary.warnings.extend(f"worker {w.index} is overloaded (event-loop lag p99 "
                                f"{w.loop_lag_ms.p99:.2f} ms)" for w in bad)
        failed = [self.failure] if self.failure else []
        summary.warnings = [self.wire.scrub(w) for w in
                            self.warnings + failed + notes + summary.warnings]
        summary.interrupted = self.interrupted
        summary.token_count_source = self.adapter.token_count_source
        return summary

    def _shards(self) -> list[Path]:
        return [shard_path(self.cfg.out, k) for k in range(len(self.handles))]

    def partial_summary(self) -> Summary:
        """On a second interrupt: the summary of the shards as they are (local workers only),
        the window from the common start to now, no server counters."""
        start = self.start_ns or _now_ns()
        window = window_bounds(start, max(start, _now_ns()), None)
        summary = summarize_shards(
            self._shards(), self.offsets, window, self.cfg.request_rate is not None,
            acceptance=None, counter_delta=None, run_counter_delta=None, client=None,
            sampling=self.cfg.sampling())
        summary.warnings = [self.wire.scrub(w) for w in [
            *self.warnings, "partial summary written on a second interrupt: requests still in "
            "flight have no record; no server counters"]]
        summary.interrupted = True
        return summary


def run_scaled(cfg: RunConfig, prompts: PromptFile, dataset_path: Path | None,
               argv: list[str], use_uvloop: bool = True,
               engine: dict[str, Any] | None = None,
               signals: StopSignals | None = None) -> Summary:
    """``loadgen run --workers N`` / ``--ray ADDRESS``: write the run directory and return the
    summary, like loadgen.client.benchmark.run_benchmark. ``signals``: the command's
    StopSignals (a first signal stops the workers; a second kills local worker processes and
    writes the summary of their shards as they are, docs/RELIABILITY.md)."""
    if cfg.category_windows:
        raise ValueError("--category-windows is not supported with --workers or --ray")
    wire = build_wire(cfg)  # a URL, header, CA bundle or proxy the run cannot use: first
    replay = text_replay(cfg, prompts, make_adapter(  # refused here, before the workers
        cfg.engine, **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {})))
    if not cfg.ray:
        n, note = plan_workers(cfg)
        check_split(cfg, n)  # before anything is written
    try:  # a certificate that does not verify fails every request: say so before writing
        asyncio.run(wire.connector.check_certificate(cfg.probe_timeout_s))
    except CertificateError as exc:
        raise EndpointError(str(exc)) from None
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)
    for old in [out / "requests.jsonl", *out.glob("requests.*.jsonl")]:
        old.unlink(missing_ok=True)  # a run directory holds one run
    manifest = build_manifest(cfg, dataset_path, prompts.header, argv)
    manifest["status"] = "running"
    if engine is not None:
        manifest["engine"] = engine
    monitor: HostMonitor | None = None  # on this host's CPU: worker processes only
    if cfg.ray:
        from loadgen.scale.rayactors import start_ray_workers

        handles, note = start_ray_workers(cfg, prompts, use_uvloop)
        scale = {"backend": "ray", "address": cfg.ray if cfg.ray == "local"
                 else redact_url(cfg.ray) if "://" in cfg.ray else cfg.ray.rsplit("@", 1)[-1]}
    else:
        handles = [LocalWorker(s, prompts, use_uvloop) for s in worker_specs(cfg, n, out)]
        scale = {"backend": "processes"}
        pid = cfg.engine_pid or (engine or {}).get("pid") or pid_listening_on(cfg.endpoint)
        monitor = HostMonitor(int(pid) if pid else None, client_tree=True,
                              client_processes=len(handles))
    if note:
        print(f"loadgen run: {note}", file=sys.stderr)
    scale.update(workers=len(handles), note=note, detail=[h.describe() for h in handles])
    manifest["scale"] = scale
    write_json(out / "manifest.json", manifest)
    coord = Coordinator(cfg, prompts, handles, monitor)
    coord.wire.notices.extend([replay.notice] if replay else [])
    for notice in coord.wire.notices:
        print(f"loadgen: WARNING: {notice}", file=sys.stderr)

    def save_partial() -> str | None:
        """A second signal: the shards as they are (worker processes write them here; a Ray
        run's are on its nodes: nothing to save)."""
        if cfg.ray:
            return None
        for h in handles:  # exiting now: no worker may append after the summary is taken
            if isinstance(h, LocalWorker):
                h.kill()
        write_json(out / "summary.json", coord.partial_summary().to_dict())
        manifest["status"] = "interrupted"
        write_json(out / "manifest.json", manifest)
        return str(out)

    if signals is not None:
        coord.own_signals = False
        signals.attach(coord.request_stop, save_partial)
    try:
        if use_uvloop:
            import uvloop

            uvloop.run(coord.execute())
        else:
            asyncio.run(coord.execute())
    finally:
        if signals is not None:
            signals.detach()
        for h in handles:
            with contextlib.suppress(Exception):
                h.collect_shard()
            h.close()
        if cfg.ray:
            from loadgen.scale.rayactors import shutdown

            shutdown()
    coord.account()
    summary = coord.summary()
    write_json(out / "summary.json", summary.to_dict())
    for d, off, death in zip(scale["detail"], coord.offsets, coord.deaths, strict=True):
        d.update(clock_offset_ns=off.offset_ns, clock_error_ns=off.error_ns,
                 clock=off.method, died=death)
    scale["clock_error_bound_ns"] = max(o.error_ns for o in coord.offsets)
    scale["window"] = {"start_ns": coord.window["start_ns"], "end_ns": coord.window["end_ns"],
                       "clock": "coordinator"}
    # peak resident memory of this coordinator (the summary streamed from the shards included)
    scale["coordinator_max_rss_mb"] = peak_rss_mb()
    manifest["status"] = ("failed" if coord.failure else
                          "interrupted" if coord.interrupted else "complete")
    if coord.failure:
        manifest["error"] = coord.failure
    manifest["server"] = coord.probe
    write_json(out / "manifest.json", manifest)
    if coord.failure:
        raise RunFailed(coord.failure)
    return summary
