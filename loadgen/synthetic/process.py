"""Start the synthetic engine as a process of its own (tests, benchmarks, demos).

Each engine is ``loadgen serve synthetic --port 0 ARGS`` (that command's parser and code alone)
in a new process forked from a multiprocessing fork server that has already imported the engine
(``PRELOAD``): about 70 ms to a listening engine instead of about 200 ms for a new interpreter,
with the same isolation (its own process, session and event loop; nothing inherited from the
process that asks for it but the arguments).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
import time
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path

#: What the fork server imports once, before it forks engines.
PRELOAD = ["loadgen.cli.serve_synthetic", "loadgen.synthetic.server", "uvloop"]


@lru_cache(maxsize=1)
def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _serve(argv: list[str], out: Connection, err_path: str) -> None:
    """The engine process: its own session (a terminal's Ctrl-C is not its), standard output
    the pipe its address is read from, standard error a file (read when it fails to start)."""
    os.setsid()
    os.dup2(out.fileno(), 1)
    fd = os.open(err_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 2)
    os.close(fd)
    import argparse

    from loadgen.cli import serve_synthetic

    p = argparse.ArgumentParser(prog="loadgen serve")
    serve_synthetic.register(p.add_subparsers(dest="engine", required=True))
    a = p.parse_args(argv)
    sys.exit(a.func(a))


class SyntheticProcess:
    """``with SyntheticProcess(["--protocol", "sglang"]) as eng: eng.url``.

    Reads the address the engine bound from its first line of output; ``stop`` sends SIGTERM
    (the truth log is closed cleanly), then SIGKILL. ``proc`` is the engine's
    ``multiprocessing.Process`` (``proc.pid``)."""

    def __init__(self, args: list[str], host: str = "127.0.0.1", start_timeout: float = 30.0,
                 cpu: int | None = None) -> None:
        self.args = list(args)
        self.host = host
        self.start_timeout = start_timeout
        self.cpu = cpu
        self.proc: mp.process.BaseProcess | None = None
        self.url = ""
        self._out: Connection | None = None
        self._err: Path | None = None

    def start(self) -> SyntheticProcess:
        ctx = _context()
        fd, err = tempfile.mkstemp(prefix="loadgen-synthetic-", suffix=".err")
        os.close(fd)
        self._err = Path(err)
        self._out, child_out = ctx.Pipe(duplex=False)
        argv = ["synthetic", "--host", self.host, "--port", "0", *self.args]
        self.proc = ctx.Process(target=_serve, args=(argv, child_out, err), daemon=True)
        self.proc.start()
        child_out.close()
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, {self.cpu})
        line = self._first_line(time.monotonic() + self.start_timeout)
        if "listening on" not in line:
            tail = self._err.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"synthetic engine did not start: {line.strip()} {tail}")
        self.url = line.strip().rsplit(" ", 1)[-1]
        return self

    def _first_line(self, deadline: float) -> str:
        """The engine's first line of output; what came, if it ends or the deadline passes
        first."""
        assert self._out is not None and self.proc is not None
        got = b""
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                return got.decode(errors="replace") + " (start timed out)"
            if self._out.poll(min(left, 0.5)):
                chunk = os.read(self._out.fileno(), 4096)
                if not chunk:  # the engine ended
                    break
                got += chunk
            elif not self.proc.is_alive():
                break
        return got.decode(errors="replace").split("\n", 1)[0]

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._err is not None:
            self._err.unlink(missing_ok=True)
            self._err = None

    def __enter__(self) -> SyntheticProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_truth(path: Path) -> list[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
