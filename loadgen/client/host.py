"""Host monitor: who used the machine's CPU during a run's window (docs/METRICS.md, "Host").

A background thread (never the event loop) samples every ``interval_s`` with psutil:

- the host's CPU times (``psutil.cpu_times``): busy = everything but idle, iowait and steal;
  steal (time the hypervisor gave to other guests) is kept apart;
- the client: this process, all its threads (``psutil.Process().cpu_times``, user + system);
  with ``client_tree`` (``--workers N``) its descendant processes too, the engine's excepted;
- the engine, when loadgen launched it (its PID) and every descendant process of it; an engine
  behind a local reverse proxy is followed through it (client/listener.py), and the proxy's
  processes are counted apart (``proxy_cores``);
- others = host busy − client − engine − proxy (floored at 0): every other process on the
  machine;
- the 1-minute load average and memory (host available, engine resident set).

Figures are in cores: CPU-seconds per wall second over the window (1.0 = one core busy for
the whole window). ``HostMonitor.stop()`` returns a typed ``HostStats`` for summary.json.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import psutil

from loadgen.client.listener import followed, pid_listening_on
from loadgen.results.summary import HostStats

__all__ = ["HostMonitor", "pid_listening_on"]

DEFAULT_INTERVAL_S = 0.5


def _busy_and_steal(t: Any) -> tuple[float, float]:
    d = t._asdict()
    steal = d.get("steal", 0.0)
    # guest time is already counted in user on Linux
    total = sum(v for k, v in d.items() if k not in ("guest", "guest_nice"))
    idle = d.get("idle", 0.0) + d.get("iowait", 0.0)
    return total - idle - steal, steal


def _proc_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


@dataclass(slots=True)
class _Sample:
    wall: float
    busy: float
    steal: float
    client: float
    engine: float
    proxy: float = 0.0


class _Tree:
    """Cumulative CPU-seconds of a process and its descendants since the first sample
    (children that appear later count from their own start; children that exit keep what they
    had), minus the trees of ``exclude`` (an engine launched by this process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.procs: dict[int, psutil.Process] = {}
        self.last: dict[int, float] = {}
        self.total = 0.0
        self.lost = False
        self.sampled = False

    def sample(self, exclude: Collection[int] = ()) -> tuple[float, float]:
        """(cumulative CPU-seconds, resident MiB now)."""
        try:
            root = self.procs.get(self.pid) or psutil.Process(self.pid)
            procs = [root, *(c for c in root.children(recursive=True) if c.pid not in exclude)]
        except psutil.Error:
            self.lost = True
            return self.total, 0.0
        rss = 0.0
        for p in procs:
            try:
                cpu = _proc_cpu(p)
                rss += p.memory_info().rss
            except psutil.Error:
                continue
            prev = self.last.get(p.pid)
            if prev is None and self.sampled:
                prev = 0.0  # born inside the window: all its time is the window's
            if prev is not None:
                self.total += max(0.0, cpu - prev)
            self.last[p.pid] = cpu
            self.procs[p.pid] = p
        self.sampled = True
        return self.total, rss / 2**20

    def pids(self) -> set[int]:
        return set(self.procs)


class HostMonitor:
    """Start at the window's opening, stop at its close; ``stop()`` gives the window's figures.
    ``client_tree``: the client is this process and its descendants (worker processes of a
    scaled-out run), an engine among them excepted."""

    def __init__(self, engine_pid: int | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S, client_tree: bool = False,
                 client_processes: int = 1) -> None:
        self.engine_pid = engine_pid
        self.interval_s = interval_s
        self._me = psutil.Process(os.getpid())
        self._client_tree = _Tree(os.getpid()) if client_tree else None
        self.client_processes = client_processes  # the workers that share the client's CPU
        self._engine_tree: _Tree | None = None
        self._proxy_tree: _Tree | None = None
        self._samples: list[_Sample] = []
        self._load: list[float] = []
        self._mem_avail: list[float] = []
        self._engine_rss: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def _engine_lost(self) -> bool:
        return self._engine_tree is not None and self._engine_tree.lost

    # -- sampling -------------------------------------------------------------------------------
    def _engine_cpu(self) -> float:
        """Cumulative CPU-seconds of the engine's process tree since start."""
        if self.engine_pid is None:
            return 0.0
        if self._engine_tree is None or self._engine_tree.pid != self.engine_pid:
            self._engine_tree = _Tree(self.engine_pid)
        cpu, rss = self._engine_tree.sample()
        if not self._engine_tree.lost:
            self._engine_rss.append(rss)
        return cpu

    def _proxy_cpu(self) -> float:
        """Cumulative CPU-seconds of the local proxy in front of the engine, if one was
        followed (client/listener.py)."""
        via = followed(self.engine_pid)
        if via is None:
            return 0.0
        if self._proxy_tree is None or self._proxy_tree.pid != via.proxy_pid:
            self._proxy_tree = _Tree(via.proxy_pid)
        return self._proxy_tree.sample()[0]

    def _client_cpu(self) -> float:
        if self._client_tree is None:
            try:
                return _proc_cpu(self._me)
            except psutil.Error:
                return 0.0
        engine = self._engine_tree.pids() if self._engine_tree is not None else set()
        return self._client_tree.sample(engine)[0]

    def _sample(self) -> None:
        busy, steal = _busy_and_steal(psutil.cpu_times())
        engine = self._engine_cpu()
        proxy = self._proxy_cpu()
        client = self._client_cpu()
        with self._lock:
            self._samples.append(_Sample(time.monotonic(), busy, steal, client, engine, proxy))
            self._load.append(os.getloadavg()[0])
            self._mem_avail.append(psutil.virtual_memory().available / 2**20)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    @property
    def started(self) -> bool:
        return bool(self._samples)

    def start(self) -> None:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="loadgen-host", daemon=True)
        self._thread.start()

    def stop(self) -> HostStats | None:
        if self._thread is None:
            return None
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()
        return self.stats()

    # -- the window's figures -------------------------------------------------------------------
    def stats(self) -> HostStats | None:
        s = self._samples
        if len(s) < 2 or s[-1].wall <= s[0].wall:
            return None
        wall = s[-1].wall - s[0].wall

        def cores(a: float, b: float) -> float:
            return max(0.0, b - a) / wall

        busy = cores(s[0].busy, s[-1].busy)
        client = cores(s[0].client, s[-1].client)
        engine = cores(s[0].engine, s[-1].engine) if self.engine_pid is not None else None
        via = followed(self.engine_pid)
        proxy = cores(s[0].proxy, s[-1].proxy) if via is not None else None
        others = max(0.0, busy - client - (engine or 0.0) - (proxy or 0.0))
        # the busiest interval of the others (a burst can hide in a long window's mean)
        peak = 0.0
        for a, b in itertools.pairwise(s):
            dt = b.wall - a.wall
            if dt > 0:
                o = ((b.busy - a.busy) - (b.client - a.client) - (b.engine - a.engine)
                     - (b.proxy - a.proxy)) / dt
                peak = max(peak, o)
        cpus = psutil.cpu_count() or 1
        return HostStats(
            cpus=cpus,
            duration_s=wall,
            samples=len(s),
            busy_cores=busy,
            client_cores=client,
            client_processes=self.client_processes,
            engine_cores=engine,
            engine_pid=self.engine_pid,
            engine_lost=self._engine_lost,
            others_cores=others,
            # sampling jitter can push one short interval's figure past the machine's size
            others_cores_peak=min(float(cpus), max(peak, others)),
            steal_cores=cores(s[0].steal, s[-1].steal),
            load_avg_1m_max=max(self._load) if self._load else None,
            mem_available_mb_min=min(self._mem_avail) if self._mem_avail else None,
            engine_rss_mb_max=max(self._engine_rss) if self._engine_rss else None,
            proxy_pid=via.proxy_pid if via else None,
            proxy_cores=proxy,
            engine_found=via.note if via else None,
        )
