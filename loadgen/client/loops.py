"""How requests are sent: a closed loop at fixed concurrency, or an open loop on a schedule.

Both loops share one ``Driver``: the stop flag (Ctrl-C), the task set (so every in-flight request
can be cancelled and becomes a cancelled record) and the window-end mark (the moment the last
measured request is sent, or ``--duration`` is up).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from loadgen.client import gcwindow
from loadgen.client.plan import Item
from loadgen.client.request import Opening, RequestSender, Turn, Written
from loadgen.client.schedule import arrival_offsets, trace_offsets
from loadgen.client.waker import Waker

_now_ns = time.monotonic_ns
# a connection is opened this long before each scheduled send (HttpClient.preopen): far
# longer than a connect, far shorter than any server's idle keep-alive timeout (5 s and up)
PREOPEN_LEAD_NS = 200_000_000
# The loop's timer (millisecond ticks: up to ~1.4 ms late on a busy loop) wakes a wait this
# long before its time, the waker's timerfd (client/waker.py) WAKER_EARLY_NS before it, and the
# loop turns the rest, its reads going on (never returning before the time).
TIMER_SLACK_NS = 2_000_000
WAKER_EARLY_NS = 200_000
# later sends are prepared (encoded: ~0.15 ms for 14k ids) only while the next send is at least
# this far off
PREPARE_GUARD_NS = 2_000_000


async def sleep_until(t_ns: int, stopped: asyncio.Future[Any] | None = None) -> bool:
    """Wait until about ``t_ns`` (monotonic; the loop's timer, millisecond ticks) or until
    ``stopped`` is done (True then). The timer wakes this coroutine in the loop turn it fires
    (``asyncio.wait``), where ``wait_for`` would first cancel its inner task and resume a turn
    or two later."""
    delay = (t_ns - _now_ns()) / 1e9
    if delay > 0:
        if stopped is None:
            await asyncio.sleep(delay)
        else:
            await asyncio.wait((stopped,), timeout=delay)
    return stopped is not None and stopped.done()


async def wait_until(t_ns: int, waker: Waker | None,
                     stopped: asyncio.Future[Any] | None = None) -> bool:
    """Wait until ``t_ns`` (monotonic) exactly, never returning before it, or until
    ``stopped`` is done (True then): the loop's timer TIMER_SLACK_NS early (``sleep_until``),
    the ``waker`` (None: not used) WAKER_EARLY_NS early, loop turns to the time."""
    if await sleep_until(t_ns - TIMER_SLACK_NS, stopped):
        return True
    if waker is not None and t_ns - WAKER_EARLY_NS > _now_ns():
        await waker.until(t_ns - WAKER_EARLY_NS)
    while _now_ns() < t_ns:
        if stopped is not None and stopped.done():
            return True
        await asyncio.sleep(0)
    return False


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

    async def wait_until(self, t_ns: int) -> bool:
        """``wait_until`` (module) for a caller without a stop task (a closed loop's
        start); True when stopped."""
        stopped = asyncio.get_running_loop().create_task(self.stop.wait())
        try:
            return await wait_until(t_ns, None, stopped) or self.stop.is_set()
        finally:
            stopped.cancel()

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
        ns_per_s = 1e9 / self.sender.cfg.load.time_scale if trace else 1e9
        sender = self.sender

        def planned() -> Iterator[tuple[Item, int]]:
            """This process's sends in order: (item, due time)."""
            for sent, off in enumerate(offsets):
                if n is not None and sent >= n:
                    return
                if mine is not None and not mine(sent):
                    continue
                item = next(items)
                if trace:
                    assert item.due_s is not None, "a trace item without its due time"
                    off = item.due_s
                due = t0 + int(off * ns_per_s)
                if deadline_ns is not None and due >= deadline_ns:
                    return
                yield item, due

        async def fire(item: Item, due: int, opening: Opening, begun: Turn | None) -> None:
            if sem is None:
                await sender.conversation(item, due, opening, begun)
                return
            async with sem:
                await sender.conversation(item, due, opening)

        # Each send is prepared ahead (its body encoded, a connection opened for it and for
        # every other send due within PREOPEN_LEAD_NS of it), so at its time it only writes.
        plan = planned()
        ahead: deque[tuple[Item, int, Opening]] = deque()
        tasks = []
        stopped = asyncio.get_running_loop().create_task(self.stop.wait())
        collector = gcwindow.hold()  # collections run in the gaps between sends (_schedule)
        waker = Waker.create()  # None (not Linux): the loop turns through TIMER_SLACK_NS
        try:
            await self._schedule(plan, ahead, tasks, fire, stopped, waker, direct=sem is None)
        finally:
            if waker is not None:
                waker.close()
            gcwindow.release(collector)
            stopped.cancel()
        self.mark_window_end()
        await self.wait(tasks)

    async def _schedule(self, plan: Iterator[tuple[Item, int]],
                        ahead: deque[tuple[Item, int, Opening]], tasks: list[asyncio.Task[Any]],
                        fire: Callable[[Item, int, Opening, Turn | None],
                                       Coroutine[Any, Any, None]],
                        stopped: asyncio.Task[Any], waker: Waker | None, direct: bool) -> None:
        """Send each planned item at its due time (open_loop). ``direct`` (no concurrency
        cap): the request is written here, in the turn of the loop its time came
        (``RequestSender.write``, its bytes built ahead), and a task carries it on."""
        sender = self.sender
        while not self.stop.is_set():
            if not ahead:
                nxt = next(plan, None)
                if nxt is None:
                    break
                ahead.append((*nxt, sender.opening(nxt[0], wire=direct)))
            item, due, opening = ahead[0]
            if due - _now_ns() > 0:
                if await sleep_until(due - PREOPEN_LEAD_NS, stopped) or self.stop.is_set():
                    break
                # the sends due within the lead, prepared while this one's time allows (a
                # burst of long prompts takes milliseconds to encode; the rest waits a gap)
                while ahead[-1][1] <= due + PREOPEN_LEAD_NS and \
                        due - _now_ns() > PREPARE_GUARD_NS and \
                        (nxt := next(plan, None)) is not None:
                    ahead.append((*nxt, sender.opening(nxt[0], wire=direct)))
                sender.client.preopen(sum(1 for a in ahead if a[1] <= due + PREOPEN_LEAD_NS))
                if due - _now_ns() > gcwindow.GAP_NS:
                    gcwindow.collect_due()
                if await wait_until(due, waker, stopped):
                    break
            # Every send due by now is written first, one after another (a trace's burst:
            # many at one instant); their records and tasks are made after the last write.
            burst: list[tuple[Item, int, Opening, Written | None]] = []
            while ahead and ahead[0][1] <= _now_ns():
                item, due, opening = ahead.popleft()
                burst.append((item, due, opening, sender.write(opening) if direct else None))
            for item, due, opening, written in burst:
                begun = None if written is None else sender.begin(item, due, opening, written)
                task = self.spawn(fire(item, due, opening, begun))
                if begun is not None:  # cancelled before it ran: still a record
                    task.add_done_callback(
                        lambda t, b=begun: t.cancelled() and sender.abandon(b))
                tasks.append(task)
            if not direct:  # the tasks write their requests before anything else here
                await asyncio.sleep(0)
            gcwindow.collect_due(overdue_only=True)  # no gap for long: memory stays bounded
