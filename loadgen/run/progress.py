"""Live progress while a run goes (rich): done / in flight / errors, output tokens/s over the last
5 s, AL so far, time left. Drawn from rich's refresh thread twice a second; the event loop only
appends finished records, so the display costs the hot path nothing but that."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

WINDOW_S = 5.0


class LiveProgress:
    def __init__(self, cfg: Any, label: str = "run",
                 in_flight: Callable[[], int] | None = None) -> None:
        self.in_flight = in_flight
        self.label = label
        load = cfg.load
        self.total = (load.num_requests + load.effective_warmup() if load.num_requests
                      else None)
        self.duration = load.duration_s
        self.done = self.errors = self.cancelled = 0
        self.tokens = 0
        self._al_tokens = self._al_steps = 0.0
        self._recent: deque[tuple[int, int]] = deque()  # (arrival ns, tokens) of recent events
        self.t0 = time.monotonic()
        self._live: Live | None = None

    def on_record(self, r: dict[str, Any]) -> None:
        self.done += 1
        self.errors += r["status"] == "error"
        self.cancelled += r["status"] == "cancelled"
        self.tokens += r["output_tokens"]
        al = r.get("acceptance_length")
        if al:
            self._al_tokens += r["output_tokens"]
            self._al_steps += r["output_tokens"] / al
        horizon = time.monotonic_ns() - int(WINDOW_S * 1e9)
        arr, ntok = r["arrivals_ns"], r["event_tokens"]
        i = len(arr) - 1
        while i >= 0 and arr[i] >= horizon:  # only the tail can be recent
            self._recent.append((arr[i], ntok[i]))
            i -= 1

    def _rate(self) -> float:
        horizon = time.monotonic_ns() - int(WINDOW_S * 1e9)
        self._recent = deque(x for x in self._recent if x[0] >= horizon)
        return sum(n for _, n in self._recent) / WINDOW_S

    def __rich__(self) -> Table:
        elapsed = time.monotonic() - self.t0
        t = Table.grid(padding=(0, 2))
        done = f"{self.done}" + (f"/{self.total}" if self.total else "")
        left = "-"
        if self.total and self.done:
            left = f"{elapsed / self.done * (self.total - self.done):.0f} s"
        elif self.duration:
            left = f"{max(0.0, self.duration - elapsed):.0f} s"
        al = f"{self._al_tokens / self._al_steps:.2f}" if self._al_steps else "-"
        t.add_row(f"[bold]{self.label}[/bold]", f"done {done}",
                  f"in flight {self.in_flight() if self.in_flight else '-'}",
                  f"errors {self.errors}" + (f" cancelled {self.cancelled}"
                                             if self.cancelled else ""),
                  f"{self._rate():.0f} tok/s (last {WINDOW_S:g} s)", f"AL {al}",
                  f"left ~{left}")
        return t

    def __enter__(self) -> LiveProgress:
        self._live = Live(self, console=Console(stderr=True), refresh_per_second=2,
                          transient=True)
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
