"""Waking an event loop at a precise time without spinning for it.

libuv's timers (uvloop), like asyncio's, fire on millisecond ticks: on a loop busy with streams
a timer set 1 ms before a send's time fired up to 1.4 ms late (measured at 200 requests/s), so
the open loop would have to wake ~2 ms early and turn the loop until the time: a core busy for
2 ms of every scheduled send (+50% client CPU at 200 requests/s with short outputs).

``Waker`` arms a Linux timerfd (the kernel's high-resolution timer on CLOCK_MONOTONIC, the clock
of ``time.monotonic_ns``) at the time and lets the loop's poll watch it, so the loop wakes within
~0.1 ms of the time without any thread: a thread would need the GIL to wake the loop, and the
loop's own thread takes it back between callbacks before a waiting thread can (the waits came
~4.5 ms late, the interpreter's switch interval). ``os.timerfd_create`` where Python has it
(3.13+), else libc's through ctypes; ``Waker.create`` returns None where neither exists (not
Linux): the open loop then turns the loop through its whole slack instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from typing import Any

_now_ns = time.monotonic_ns
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _LibcTimerFd:
    """timerfd_create / timerfd_settime from libc (Python before 3.13)."""

    def __init__(self, libc: Any) -> None:
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec),
                                  ctypes.c_void_p]
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self.fd = fd
        self._spec = _Itimerspec()

    def arm(self, t_ns: int) -> None:
        self._spec.it_value.tv_sec, self._spec.it_value.tv_nsec = divmod(max(t_ns, 1), 10**9)
        if self._settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")


class _OsTimerFd:
    """os.timerfd_create / timerfd_settime_ns (Python 3.13+)."""

    def __init__(self) -> None:
        self.fd = os.timerfd_create(time.CLOCK_MONOTONIC,  # type: ignore[attr-defined]
                                    flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)  # type: ignore[attr-defined]

    def arm(self, t_ns: int) -> None:
        os.timerfd_settime_ns(self.fd, flags=os.TFD_TIMER_ABSTIME,  # type: ignore[attr-defined]
                              initial=max(t_ns, 1))


def _timerfd() -> _LibcTimerFd | _OsTimerFd | None:
    if hasattr(os, "timerfd_create"):
        return _OsTimerFd()
    libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols: libc's among them
    if not hasattr(libc, "timerfd_create"):
        return None
    return _LibcTimerFd(libc)


class Waker:
    """``await waker.until(t_ns)``: resumes within ~0.1 ms after ``t_ns`` (monotonic), never
    before; one waiter at a time (the open loop's schedule). ``close()`` when done."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timer: _LibcTimerFd | _OsTimerFd) -> None:
        self._loop = loop
        self._timer = timer
        self._waiter: asyncio.Future[None] | None = None
        loop.add_reader(timer.fd, self._fired)

    @classmethod
    def create(cls) -> Waker | None:
        """A waker on the running loop, or None where the platform has no timerfd."""
        try:
            timer = _timerfd()
        except (OSError, AttributeError, TypeError):  # no timerfd, or no libc to load (Windows)
            return None
        return None if timer is None else cls(asyncio.get_running_loop(), timer)

    async def until(self, t_ns: int) -> None:
        if t_ns <= _now_ns():
            return
        fut = self._waiter = self._loop.create_future()
        self._timer.arm(t_ns)
        try:
            await fut
        finally:
            if self._waiter is fut:  # not a later waiter's
                self._waiter = None

    def _fired(self) -> None:
        try:
            os.read(self._timer.fd, 8)  # the expiry count, consumed
        except BlockingIOError:
            return
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        self._loop.remove_reader(self._timer.fd)
        os.close(self._timer.fd)
