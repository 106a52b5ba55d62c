"""SIGINT and SIGTERM for the whole life of a command that runs benchmarks.

The first signal asks the current run to stop (``attach``'s ``first``: stop sending, cancel what
is in flight; the run then writes its partial summary itself). A second signal writes what can be
written at once (``attach``'s ``last``: a summary rebuilt from requests.jsonl and a manifest that
says ``interrupted``) and exits immediately. A signal while no run is attached (reading the
dataset, starting an engine) raises ``Interrupted`` where the program is, so it unwinds (an engine
started around the run is stopped) and the command exits with one line. Once the run has stopped
and its files are being written (``hold``), a signal waits until they are complete.

Exit codes: 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    def __init__(self, prog: str = "loadgen") -> None:
        self.prog = prog
        self.count = 0
        self.signum: int | None = None
        self._first: Callable[[], None] | None = None
        self._last: Callable[[], str | None] | None = None
        self._old: dict[int, Any] = {}
        self._held = False  # the run's files are being written: signals wait (``hold``)
        self._pending = False
        self._restoring = False

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)

    def install(self) -> StopSignals:
        """Take over SIGINT/SIGTERM (main thread only; elsewhere this does nothing)."""
        self._restoring = False
        with contextlib.suppress(ValueError):
            for sig in SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        self._restoring = True  # a signal now is the command's last: counted, not acted on
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old.clear()

    def __enter__(self) -> StopSignals:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def attach(self, first: Callable[[], None], last: Callable[[], str | None]) -> None:
        """A run is under way: ``first()`` stops it; ``last()`` saves what it can before the hard
        exit and returns where it was saved (or None)."""
        self._first, self._last = first, last
        if self.count:  # a signal came before the run was attached
            first()

    def detach(self) -> None:
        self._first = self._last = None

    def hold(self) -> None:
        """The run has stopped and its files are being written: a signal now is noted and acted
        on at ``release`` (the files are then complete), never in the middle of them."""
        self._held = True

    def release(self) -> None:
        """Detach; a signal that came while held ends the command now (``Interrupted``)."""
        self.detach()
        self._held = False
        if self._pending:
            self._pending = False
            raise Interrupted(self.signum or signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._restoring:
            return
        if self._held:
            if not self._pending:
                print(f"{self.prog}: writing the run's files, then exiting",
                      file=sys.stderr, flush=True)
            self._pending = True
            return
        if self.count == 1:
            if self._first is not None:
                print(f"{self.prog}: stopping (interrupt again to exit at once)",
                      file=sys.stderr, flush=True)
                self._first()
                return
            raise Interrupted(signum)
        if self._first is None and self.count == 2:
            raise Interrupted(signum)  # still unwinding from the first: let it
        where = None
        if self._last is not None:
            try:
                where = self._last()
            except Exception as exc:  # exiting anyway: say why nothing was saved
                print(f"{self.prog}: could not save the partial result: {exc}",
                      file=sys.stderr, flush=True)
        print(f"{self.prog}: interrupted twice, exiting now"
              + (f"; partial result in {where}" if where else ""), file=sys.stderr, flush=True)
        os._exit(self.exit_code)
