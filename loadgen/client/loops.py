"""How requests are sent: a closed loop at fixed concurrency, or an open loop on a schedule.

Both loops share one ``Driver``: the stop flag (Ctrl-C), the task set (so every in-flight request
can be cancelled and becomes a cancelled record) and the window-end mark (the moment the last
measured request is sent, or ``--duration`` is up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from loadgen.client.plan import Item
from loadgen.client.request import RequestSender
from loadgen.client.schedule import arrival_offsets, trace_offsets

_now_ns = time.monotonic_ns


class Driver:
    def __init__(self, sender: RequestSender) -> None:
        self.sender = sender
        self.stop = asyncio.Event()
        self.window_end = asyncio.Event()
        self.window_end_ns: int | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.failures: list[BaseException] = []  # exceptions that escaped a task: bugs

    def new_window(self) -> None:
        """Forget the window-end mark (a warm-up phase's, or the previous category window's)."""
        self.window_end = asyncio.Event()
        self.window_end_ns = None

    def mark_window_end(self) -> None:
        if self.window_end_ns is None:
            self.window_end_ns = _now_ns()
            self.window_end.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Wait for ``tasks``; an exception that escaped one is kept (never silently lost)."""
        if not tasks:
            return
        for res in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(res, BaseException) and not isinstance(res, asyncio.CancelledError):
                self.failures.append(res)

    def cancel_all(self) -> None:
        for t in list(self.tasks):
            t.cancel()

    async def closed_loop(self, items: Iterator[Item], n: int | None, deadline_ns: int | None,
                          concurrency: int) -> None:
        """C workers; each sends its next request as soon as its previous one ends."""
        issued = 0

        def next_item() -> Item | None:
            nonlocal issued
            if self.stop.is_set() or (n is not None and issued >= n):
                return None
            if deadline_ns is not None and _now_ns() >= deadline_ns:
                self.mark_window_end()
                return None
            issued += 1
            return next(items)

        async def worker() -> None:
            while (item := next_item()) is not None:
                if n is not None and issued == n and not item.warmup:
                    self.mark_window_end()
                await self.sender.conversation(item, 0)

        await self.wait([self.spawn(worker()) for _ in range(concurrency)])

    async def open_loop(self, items: Iterator[Item], n: int | None, deadline_ns: int | None,
                        rate: float, arrival: str, burstiness: float, seed: int,
                        max_concurrency: int | None, t0_ns: int | None = None,
                        mine: Callable[[int], bool] | None = None) -> None:
        """Send times fixed in advance on an absolute timeline (loadgen/client/schedule.py);
        latency counts from the scheduled time, waiting for a concurrency slot included.

        Several processes share one schedule (loadgen/run): each passes the same start
        ``t0_ns`` and sends only the arrivals j with ``mine(j)``; ``n`` stays the run's.

        ``arrival`` "trace": each item is due at its own ``due_s`` (the trace's arrival,
        loadgen/client/plan.py) divided by the run's ``time_scale``; ``rate`` is unused."""
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        t0 = _now_ns() if t0_ns is None else t0_ns
        trace = arrival == "trace"
        offsets = trace_offsets() if trace else arrival_offsets(rate, arrival, burstiness, seed)
        ns_per_s = 1e9 / self.sender.cfg.time_scale if trace else 1e9
        send = self.sender.conversation

        async def fire(item: Item, due: int) -> None:
            if sem is None:
                await send(item, due)
                return
            async with sem:
                await send(item, due)

        tasks = []
        item: Item | None = None
        for sent, off in enumerate(offsets):
            if self.stop.is_set() or (n is not None and sent >= n):
                break
            if trace:  # the offset is the item's own: only this process's items are read
                if mine is not None and not mine(sent):
                    continue
                item = next(items)
                assert item.due_s is not None, "a trace item without its due time"
                off = item.due_s
            due = t0 + int(off * ns_per_s)
            if deadline_ns is not None and due >= deadline_ns:
                break
            if mine is not None and not mine(sent):
                continue
            delay = (due - _now_ns()) / 1e9
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    break
                # Event-loop timers have millisecond resolution and may fire early: never
                # send before the scheduled time.
                while _now_ns() < due:
                    await asyncio.sleep(0)
            tasks.append(self.spawn(fire(item if trace else next(items), due)))
        self.mark_window_end()
        await self.wait(tasks)
