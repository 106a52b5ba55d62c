"""One worker of a scaled-out run: its own thread, event loop (uvloop), transport and records
shard. The same class runs in a local worker process (loadgen/scale/local.py) and in a Ray actor
(loadgen/scale/rayactors.py); the coordinator (loadgen/scale/coordinator.py) drives it.

Phases: ``warmup()`` sends this worker's share of the warm-up requests and returns when they
ended; ``measure(start_ns)`` sends its share of the measured requests from ``start_ns`` (on this
worker's monotonic clock, which every stamp of its shard uses); ``window_end()`` resolves when
this worker has sent its last measured request (or ``--duration`` is up). Each returns a
``concurrent.futures.Future`` so one thread can drive it while requests run.
"""

from __future__ import annotations

import asyncio
import mmap
import resource
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadgen.client.gcwindow import close_window, open_window
from loadgen.client.lag import LagMonitor, client_stats
from loadgen.client.loops import Driver
from loadgen.client.plan import Item, iter_items, share_count
from loadgen.client.replay import text_replay
from loadgen.client.request import RequestSender
from loadgen.client.tally import RecordTally
from loadgen.client.wiring import build_wire
from loadgen.data.prompts import PromptFile
from loadgen.engines import make_adapter
from loadgen.results.config import RunConfig
from loadgen.results.records import RecordWriter, write_failure

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class WorkerSpec:
    """Worker ``index`` of ``workers``: its share of the run ``cfg`` (loadgen/scale/share.py)."""

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
    for flag, total in (("--concurrency", cfg.concurrency),
                        ("--max-concurrency", cfg.max_concurrency)):
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

    async def conversation(self, item: Item, scheduled_ns: int) -> None:
        self.counter.value += 1
        await super().conversation(item, scheduled_ns)


class WorkerCore:
    def __init__(self, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool = True,
                 issued: Any = None) -> None:
        cfg = spec.cfg
        self.spec = spec
        self.prompts = prompts
        # the endpoint parsed once: headers, TLS, proxy, secrets (EndpointError is a ValueError)
        self.wire = build_wire(cfg)
        self.adapter = make_adapter(
            cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
            **({"mode": cfg.openai_mode} if cfg.engine == "openai" else {}))
        spec.shard.parent.mkdir(parents=True, exist_ok=True)
        self.writer = RecordWriter(spec.shard)
        self.tally = RecordTally()
        self.failure: str | None = None  # a record could not be written: the run must stop
        self._issued = issued if issued is not None else Counter()
        self._window_end: Future[int] = Future()
        self._items = iter_items(prompts, cfg.seed, cfg.effective_warmup(), cfg.shuffle,
                                 spec.index, spec.workers)
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
        if self.failure is not None:
            return
        try:
            self.writer.write(d)
        except OSError as exc:  # a full disk: this worker stops, and the coordinator the run
            self.failure = f"worker {self.spec.index}: {write_failure(self.spec.shard, exc)}"
            self.driver.stop.set()
            self.driver.cancel_all()

    @property
    def issued(self) -> int:
        return int(self._issued.value)

    def warmup(self, salt: str | None = None) -> Future[dict[str, Any]]:
        """The warm-up share; ``salt``: the run's prefix-cache salt (the coordinator's
        policy, docs/METRICS.md "Prefix cache"), None to send none."""
        return self._call(self._warmup(salt))

    async def _warmup(self, salt: str | None) -> dict[str, Any]:
        cfg, spec = self.spec.cfg, self.spec
        self.adapter.cache_salt = salt
        n = share_count(cfg.effective_warmup(), spec.index, spec.workers)
        if n:
            conc = cfg.concurrency or cfg.max_concurrency or cfg.effective_warmup()
            conc = max(1, min(split(conc, spec.index, spec.workers) or 1, n))
            await self.driver.closed_loop(self._items, n, None, conc)
        return {"warmup_end_ns": _now_ns(), "warmup_requests": n}

    def measure(self, start_ns: int, salt: str | None = None) -> Future[dict[str, Any]]:
        """The measured share from ``start_ns`` (this worker's clock); ``salt``: the window's
        prefix-cache salt (a new one: the warm-up's prefill is not reused)."""
        return self._call(self._measure(start_ns, salt))

    def window_end(self) -> Future[int]:
        return self._window_end

    def stop(self) -> None:
        """Stop sending, cancel what is in flight (each becomes a cancelled record)."""
        def _stop() -> None:
            self.driver.stop.set()
            self.driver.cancel_all()
        self.loop.call_soon_threadsafe(_stop)

    async def _measure(self, start_ns: int, salt: str | None) -> dict[str, Any]:
        cfg, spec, drv = self.spec.cfg, self.spec, self.driver
        self.adapter.cache_salt = salt
        delay = (start_ns - _now_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        while _now_ns() < start_ns:
            await asyncio.sleep(0)
        lag = LagMonitor()
        cpu0 = time.process_time()
        lag.start()
        gc_was = open_window()  # no full-heap collector pause, memory bounded
        deadline = start_ns + int(cfg.duration_s * 1e9) if cfg.duration_s else None
        try:
            if cfg.concurrency is not None:
                warm = cfg.effective_warmup()
                n = (share_count(cfg.num_requests, spec.index, spec.workers, warm)
                     if cfg.num_requests is not None else None)
                conc = spec.concurrency or 0
                if conc and n != 0:
                    measured = drv.spawn(drv.closed_loop(self._items, n, deadline, conc))
                else:
                    measured = drv.spawn(asyncio.sleep(0))
            else:
                assert cfg.request_rate is not None
                first, k, workers = cfg.effective_warmup(), spec.index, spec.workers
                measured = drv.spawn(drv.open_loop(
                    self._items, cfg.num_requests, deadline, cfg.request_rate, cfg.arrival,
                    cfg.burstiness, cfg.seed, spec.max_concurrency, t0_ns=start_ns,
                    mine=lambda j: (first + j) % workers == k))

            def ended(_: object) -> None:
                drv.mark_window_end()
                if not self._window_end.done():
                    self._window_end.set_result(drv.window_end_ns or _now_ns())

            measured.add_done_callback(ended)
            await drv.wait([measured])
            ended(None)
        finally:
            cpu1 = time.process_time()
            lag.stop()
            close_window(gc_was)
        stats = client_stats(cpu1 - cpu0, lag.lags_ms, self.tally.events, self.tally.measured,
                             cfg.lag_threshold_ms)
        return {"index": spec.index, "window_end_ns": drv.window_end_ns,
                "last_end_ns": self.tally.last_end_ns, "measured": self.tally.measured,
                "events": self.tally.events, "issued": self.issued,
                "client": asdict(stats), "lags_ms": lag.lags_ms,
                "failures": [self.wire.scrub(f"{type(e).__name__}: {e}")
                             for e in drv.failures],
                "max_rss_mb": peak_rss_mb(),
                "failure": self.failure,
                "interrupted": drv.stop.is_set() and self.failure is None}

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
