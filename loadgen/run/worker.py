"""One worker of a run: its own thread, event loop (uvloop), transport and records file. The
same class runs in this process (a single-process run: one worker), in a local worker process
(loadgen/run/handles.py) and in a Ray actor (loadgen/run/rayactors.py); the coordinator
(loadgen/run/coordinator.py) drives it, phase by phase.

A ``Phase`` names a block of request indices (``first`` .. ``first + n - 1``, or until a
deadline); the worker sends its share of them (index % workers == its index) from its items
(``select``: every prompt, or one category's in category windows). Warm-up and measured phases
differ only in what is measured around them: a measured phase runs the lag monitor and the CPU
count, and resolves ``window_end()`` when its last request has been sent (or its ``--duration``
is up). Every call returns a ``concurrent.futures.Future`` so one thread can drive the worker
while requests run; ``status()`` is what the coordinator learns after each phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import resource
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen.client.gcwindow import close_window, open_window
from loadgen.client.lag import LagMonitor, client_stats
from loadgen.client.loops import Driver
from loadgen.client.plan import Item, iter_records, share_count
from loadgen.client.replay import text_replay
from loadgen.client.request import Opening, RequestSender, Turn, Written
from loadgen.client.tally import RecordTally
from loadgen.client.wiring import build_wire
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.engines import adapter_for
from loadgen.results.records import RecordWriter, write_failure

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class WorkerSpec:
    """Worker ``index`` of ``workers``: its share of the run ``cfg`` (loadgen/run/share.py)."""

    cfg: RunConfig
    index: int
    workers: int
    concurrency: int | None  # closed loop: this worker's streams
    max_concurrency: int | None  # open loop: this worker's cap
    shard: Path  # where this worker appends its records


def split(total: int | None, index: int, workers: int) -> int | None:
    """Worker ``index``'s share of ``total`` (streams, a concurrency cap): as even as possible,
    the first workers one more."""
    if total is None:
        return None
    return total // workers + (1 if index < total % workers else 0)


def check_split(cfg: RunConfig, workers: int) -> None:
    """Every worker needs at least one stream: fewer streams (or a lower --max-concurrency)
    than workers would leave a worker's share of the requests unsent (ValueError)."""
    for flag, total in (("--concurrency", cfg.load.concurrency),
                        ("--max-concurrency", cfg.load.max_concurrency)):
        if total is not None and total < workers:
            raise ValueError(f"{flag} {total} is below the {workers} workers: each worker "
                             f"needs at least one stream; use at most {total} workers")


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (Linux), which starts afresh at exec, unlike
    ru_maxrss, which keeps the spawning parent's resident size from before the exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Counter:
    """A count readable from outside (a multiprocessing.Value has the same ``value``)."""

    value = 0


class FileCounter:
    """A count kept in an 8-byte file mapped into memory: it outlives the process that counts
    (a Ray actor killed mid-run leaves it on its node, beside its shard), and counting costs no
    system call. ``read_counter`` reads it back."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(bytes(8))
        self._fh = open(path, "r+b")  # noqa: SIM115 - mapped for the worker's lifetime
        self._map = mmap.mmap(self._fh.fileno(), 8)

    @property
    def value(self) -> int:
        return int.from_bytes(self._map[:8], "little")

    @value.setter
    def value(self, v: int) -> None:
        self._map[:8] = v.to_bytes(8, "little")

    def close(self) -> None:
        self._map.close()
        self._fh.close()


def read_counter(path: Path) -> int:
    """A FileCounter's value, from its file."""
    return int.from_bytes(path.read_bytes()[:8], "little")


class _CountingSender(RequestSender):
    """Counts the conversations it has started, in ``counter`` (a worker that dies is accounted
    for from it: its first ``issued`` items were sent)."""

    counter: Counter

    def begin(self, item: Item, scheduled_ns: int, opening: Opening, written: Written) -> Turn:
        self.counter.value += 1
        return super().begin(item, scheduled_ns, opening, written)

    async def conversation(self, item: Item, scheduled_ns: int,
                           opening: Opening | None = None, begun: Turn | None = None) -> None:
        if begun is None:
            self.counter.value += 1
        await super().conversation(item, scheduled_ns, opening, begun)


@dataclass(slots=True)
class Phase:
    """One phase as every worker runs it: the requests with indices ``first`` .. ``first + n - 1``
    (``n`` None: until ``duration_s`` is up), each worker its share. ``start_ns``: when the
    phase begins on the worker's clock (rate mode: the common schedule's origin); ``salt``: the
    prefix-cache salt to send; ``concurrency``: the streams of the whole run in this phase
    (closed loop; None: the run's)."""

    measured: bool
    first: int
    n: int | None
    duration_s: float | None = None
    start_ns: int | None = None
    salt: str | None = None
    concurrency: int | None = None


class WorkerCore:
    def __init__(self, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool = True,
                 issued: Any = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        cfg = spec.cfg
        self.spec = spec
        self.prompts = prompts
        # the endpoint parsed once: headers, TLS, proxy, secrets (EndpointError is a ValueError)
        self.wire = build_wire(cfg)
        self.adapter = adapter_for(cfg)
        spec.shard.parent.mkdir(parents=True, exist_ok=True)
        self.writer = RecordWriter(spec.shard)
        self._write_lock = threading.Lock()  # seal() against a record being appended
        self._sealed = False
        self.tally = RecordTally()
        self.failure: str | None = None  # a record could not be written: the run must stop
        self.on_record = on_record  # a live progress display (this process only)
        self._issued = issued if issued is not None else Counter()
        self._window_ends: dict[int, Future[int]] = {}  # a measured phase's by its first index
        self._lags: list[float] = []
        self._cpu_s = 0.0
        self._gc_was: bool | None = None  # the collector's state before the window's freeze
        self._items = iter_records(prompts.records, cfg.load.seed, cfg.load.effective_warmup(),
                                   cfg.load.shuffle, 0, spec.index, spec.workers)
        if use_uvloop:
            import uvloop

            self.loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name=f"loadgen-worker-{spec.index}")
        self._thread.start()
        self._call(self._setup()).result()

    def _call(self, coro: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def _setup(self) -> None:
        self.client = self.wire.stream_client()
        self.sender = _CountingSender(self.spec.cfg, self.adapter, self.client, self._on_record)
        replay = text_replay(self.spec.cfg, self.prompts, self.adapter)
        self.sender.reply_ids = replay.encode if replay else None
        self.sender.counter = self._issued
        self.driver = Driver(self.sender)

    def _on_record(self, d: dict[str, Any]) -> None:
        if d["error"]:  # a server may echo a key or URL back in its error text
            d["error"] = self.wire.scrub(d["error"])
        self.tally.add(d)  # kept even when the file cannot take it
        if self.on_record is not None:
            self.on_record(d)
        if self.failure is not None:
            return
        try:
            with self._write_lock:
                if self._sealed:
                    return
                self.writer.write(d)
        except OSError as exc:  # a full disk: this worker stops, and the coordinator the run
            self.failure = write_failure(self.spec.shard, exc)
            if self.spec.workers > 1:
                self.failure = f"worker {self.spec.index}: {self.failure}"
            self.driver.stop.set()
            self.driver.cancel_all()

    @property
    def issued(self) -> int:
        return int(self._issued.value)

    def select(self, category: str | None, start: int, warm: int) -> Future[None]:
        """The items the next phases send: every prompt (``category`` None) or one category's,
        numbered from ``start``, the first ``warm`` of them warm-up requests."""
        cfg, spec = self.spec.cfg, self.spec
        records = (self.prompts.records if category is None
                   else [r for r in self.prompts.records if r.category == category])
        self._items = iter_records(records, cfg.load.seed, warm, cfg.load.shuffle, start,
                                   spec.index, spec.workers)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def prepare(self) -> Future[None]:
        """Before a measured phase's start is fixed: the full collection and freeze of the
        heap (client/gcwindow.py), which can take a few hundred ms under load, so that it is
        not paid after the start."""
        async def _prepare() -> None:
            if self._gc_was is None:
                self._gc_was = open_window()
        return self._call(_prepare())

    def run_phase(self, phase: Phase) -> Future[dict[str, Any]]:
        """Send this worker's share of ``phase``; resolves with ``status()`` when every one of
        its requests has ended."""
        return self._call(self._run(phase))

    def window_end(self, first: int) -> Future[int]:
        """When the measured phase starting at index ``first`` sent its last request (this
        worker's clock); asked for before or after the phase starts."""
        return self._window_ends.setdefault(first, Future())

    def stop(self) -> None:
        """Stop sending, cancel what is in flight (each becomes a cancelled record)."""
        def _stop() -> None:
            self.driver.stop.set()
            self.driver.cancel_all()
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(_stop)

    async def _run(self, phase: Phase) -> dict[str, Any]:
        cfg, spec, drv = self.spec.cfg, self.spec, self.driver
        self.adapter.cache_salt = phase.salt
        start_ns = phase.start_ns
        # an open loop waits for its schedule's origin itself, opening the connections of its
        # first sends meanwhile (client/loops.py); a closed loop starts at the origin
        if start_ns is not None and not drv.stop.is_set() and cfg.load.request_rate is None:
            await drv.wait_until(start_ns)
        drv.new_window()
        lag = LagMonitor()
        cpu0 = time.process_time()
        if phase.measured:
            lag.start()
            if self._gc_was is None:  # no full-heap collector pause, memory bounded
                self._gc_was = open_window()
        begin = start_ns if start_ns is not None else _now_ns()
        deadline = begin + int(phase.duration_s * 1e9) if phase.duration_s else None
        k, workers = spec.index, spec.workers
        try:
            if drv.stop.is_set():
                measured = drv.spawn(asyncio.sleep(0))
            elif cfg.load.request_rate is None:
                n = (share_count(phase.n, k, workers, phase.first)
                     if phase.n is not None else None)
                # at least one stream for a worker with a share (one-at-a-time phases)
                conc = max(1, split(phase.concurrency or cfg.load.concurrency, k, workers) or 0)
                if n is not None:
                    conc = min(conc, n)
                measured = drv.spawn(drv.closed_loop(self._items, n, deadline, conc)
                                     if conc else asyncio.sleep(0))
            else:
                first = phase.first
                measured = drv.spawn(drv.open_loop(
                    self._items, phase.n, deadline, cfg.load.request_rate, cfg.load.arrival,
                    cfg.load.burstiness, cfg.load.seed, spec.max_concurrency, t0_ns=begin,
                    mine=None if workers == 1 else (lambda j: (first + j) % workers == k)))

            def ended(_: object) -> None:
                drv.mark_window_end()
                if phase.measured and not (fut := self.window_end(phase.first)).done():
                    fut.set_result(drv.window_end_ns or _now_ns())

            measured.add_done_callback(ended)
            await drv.wait([measured])
            ended(None)
        finally:
            if phase.measured:
                fut = self.window_end(phase.first)  # resolved whatever happened
                if not fut.done():
                    fut.set_result(drv.window_end_ns or _now_ns())
                self._cpu_s += time.process_time() - cpu0
                lag.stop()
                self._lags.extend(lag.lags_ms)
                close_window(bool(self._gc_was))
                self._gc_was = None
        return self.status(drv.window_end_ns if phase.measured else None)

    def status(self, window_end_ns: int | None = None) -> dict[str, Any]:
        """What the coordinator learns after a phase (plain data: it crosses processes)."""
        cfg, t = self.spec.cfg, self.tally
        stats = client_stats(self._cpu_s, self._lags, t.events, t.measured,
                             cfg.measurement.lag_threshold_ms)
        first = t.first_ok
        return {"index": self.spec.index, "window_end_ns": window_end_ns,
                "last_end_ns": t.last_end_ns, "last_end_by_cat": dict(t.last_end_by_cat),
                "max_index": t.max_index, "measured": t.measured, "events": t.events,
                "issued": self.issued, "client": asdict(stats), "lags_ms": list(self._lags),
                "first_ok_has_sd": (None if first is None
                                    else first.get("acceptance_length") is not None),
                "token_count_source": self.adapter.token_count_source,
                "failures": [self.wire.scrub(f"{type(e).__name__}: {e}")
                             for e in self.driver.failures],
                "max_rss_mb": peak_rss_mb(), "failure": self.failure,
                "interrupted": self.driver.stop.is_set() and self.failure is None}

    def seal(self, wait_s: float = 1.0) -> None:
        """A second interrupt, from another thread: cancel what is in flight, let those
        requests write their (cancelled) records for up to ``wait_s``, then append nothing
        more, so the partial summary read from the file counts every record in it."""
        async def _cancel() -> None:
            self.driver.stop.set()
            self.driver.cancel_all()
            await self.driver.wait(list(self.driver.tasks))

        with contextlib.suppress(Exception):  # exiting anyway: what is written is written
            self._call(_cancel()).result(timeout=wait_s)
        with self._write_lock:
            self._sealed = True

    def close(self) -> None:
        async def _close() -> None:
            self.driver.cancel_all()
            await self.driver.wait(list(self.driver.tasks))
            self.client.close()

        try:
            self._call(_close()).result(timeout=30)
        finally:
            self.writer.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():  # its epoll, eventfd and pipes: six descriptors
                self.loop.close()


def shard_name(k: int, workers: int, in_process: bool) -> str:
    """requests.jsonl for a single-process run, requests.<k>.jsonl for each worker otherwise."""
    return "requests.jsonl" if in_process else f"requests.{k}.jsonl"


def worker_specs(cfg: RunConfig, workers: int, out: Path,
                 endpoints: list[str] | None = None,
                 in_process: bool = False) -> list[WorkerSpec]:
    """Each worker's share of the run. ``endpoints``: worker k sends to endpoints[k % len]
    (scripts/bench_scale.py spreads its load over several engine processes this way)."""
    check_split(cfg, workers)
    return [WorkerSpec(cfg=cfg.replace(endpoint=endpoints[k % len(endpoints)])
                       if endpoints else cfg, index=k, workers=workers,
                       concurrency=split(cfg.load.concurrency, k, workers),
                       max_concurrency=split(cfg.load.max_concurrency, k, workers),
                       shard=out / shard_name(k, workers, in_process)) for k in range(workers)]
