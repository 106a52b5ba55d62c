"""Precise waits (loadgen/client/waker.py, loops.wait_until): a timerfd on the clock of
``time.monotonic_ns`` wakes the loop; never before the time, the stop flag honoured."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from loadgen.client import loops
from loadgen.client.waker import Waker

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")


@linux
def test_waker_never_wakes_before_its_time():
    """Forty waits 0.3-3 ms ahead: each resumes at or after its time (a timer on another clock,
    or a relative time taken for an absolute one, would wake at once), and a wait re-armed
    for an earlier time ends at that one."""

    async def main() -> tuple[list[int], int, int]:
        waker = Waker.create()
        assert waker is not None
        try:
            early = []
            for i in range(40):
                t = time.monotonic_ns() + 300_000 + (i % 10) * 300_000
                await waker.until(t)
                early.append(t - time.monotonic_ns())
            # a waiter cancelled before its time: the timer's later expiry is read and ignored
            task = asyncio.ensure_future(waker.until(time.monotonic_ns() + 2_000_000))
            await asyncio.sleep(0)
            task.cancel()
            t = time.monotonic_ns() + 5_000_000
            await waker.until(t)
            after = time.monotonic_ns() - t
            await waker.until(time.monotonic_ns() - 1)  # a time gone by: returns at once
            return early, after, len(asyncio.all_tasks())
        finally:
            waker.close()

    early, after, tasks = asyncio.run(main())
    assert max(early) <= 0, early
    assert after >= 0 and tasks == 1


def test_wait_until_never_returns_early_and_honours_the_stop_flag():
    """The open loop's wait, with and without the waker: at or after the time; True as soon
    as the stop task is done (here: set 5 ms into a 10 s wait)."""

    async def main() -> tuple[list[int], bool, bool]:
        waker = Waker.create()
        early = []
        try:
            for w in (waker, None):
                for i in range(10):
                    t = time.monotonic_ns() + 500_000 + i * 400_000
                    assert await loops.wait_until(t, w) is False
                    early.append(t - time.monotonic_ns())
            stop = asyncio.Event()
            stopped = asyncio.ensure_future(stop.wait())
            asyncio.get_running_loop().call_later(0.005, stop.set)
            was_stopped = await loops.wait_until(time.monotonic_ns() + 10 * 10**9, waker,
                                                 stopped)
            return early, was_stopped, stopped.done()
        finally:
            if waker is not None:
                waker.close()

    early, was_stopped, done = asyncio.run(main())
    assert max(early) <= 0, early
    assert was_stopped and done
