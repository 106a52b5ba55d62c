"""Start the synthetic engine as a process of its own (tests, benchmarks, demos).

Each engine is ``loadgen serve synthetic --port 0 ARGS`` (that command's parser and code alone),
in its own process, session and event loop. Where it can (``_forkable``), the process is forked
from a multiprocessing fork server that has already imported the engine (``PRELOAD``): about
70 ms to a listening engine instead of about 200 ms for a new interpreter. The fork server
prepares each child by importing the asking process's main script by path, so under a script
(``python bench.py``, ``python -``) each engine is a new interpreter instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import select
import subprocess
import sys
import tempfile
import time
from functools import lru_cache
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

#: What the fork server imports once, before it forks engines.
PRELOAD = ["loadgen.cli.serve_synthetic", "loadgen.synthetic.server", "uvloop"]
_SERVE = "import sys\nfrom loadgen.synthetic.process import serve\nserve(sys.argv[1:])\n"


@lru_cache(maxsize=1)
def _context():
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _forkable() -> bool:
    """Whether a fork-server child needs no main script of this process: under ``python -m``
    (pytest: ``pytest.__main__`` is skipped) or ``python -c``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None:
        return spec.name == "__main__" or spec.name.endswith(".__main__")
    return getattr(main, "__file__", None) is None


def serve(argv: list[str]) -> None:
    """``loadgen serve ARGV`` with the synthetic command's parser alone."""
    import argparse

    from loadgen.cli import serve_synthetic

    p = argparse.ArgumentParser(prog="loadgen serve")
    serve_synthetic.register(p.add_subparsers(dest="engine", required=True))
    a = p.parse_args(argv)
    sys.exit(a.func(a))


def _forked(argv: list[str], out: Connection, err_path: str) -> None:
    """The fork server's child: its own session (a terminal's Ctrl-C is not its), standard
    output the pipe its address is read from, standard error the file read when it fails."""
    os.setsid()
    os.dup2(out.fileno(), 1)
    fd = os.open(err_path, os.O_WRONLY | os.O_TRUNC)
    os.dup2(fd, 2)
    os.close(fd)
    serve(argv)


def _alive(proc: Any) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def _join(proc: Any, timeout: float) -> None:
    if isinstance(proc, subprocess.Popen):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    else:
        proc.join(timeout)


class SyntheticProcess:
    """``with SyntheticProcess(["--protocol", "sglang"]) as eng: eng.url``.

    Reads the address the engine bound from its first line of output; ``stop`` sends SIGTERM
    (the truth log is closed cleanly), then SIGKILL. ``proc`` is the engine's process
    (``proc.pid``)."""

    def __init__(self, args: list[str], host: str = "127.0.0.1", start_timeout: float = 30.0,
                 cpu: int | None = None) -> None:
        self.args = list(args)
        self.host = host
        self.start_timeout = start_timeout
        self.cpu = cpu
        self.proc: Any = None  # a multiprocessing.Process, or a subprocess.Popen
        self.url = ""
        self._out: Any = None  # what the first line is read from (a Connection or a pipe)
        self._err: Path | None = None

    def start(self) -> SyntheticProcess:
        fd, err = tempfile.mkstemp(prefix="loadgen-synthetic-", suffix=".err")
        os.close(fd)
        self._err = Path(err)
        argv = ["synthetic", "--host", self.host, "--port", "0", *self.args]
        if _forkable():
            ctx = _context()
            self._out, child_out = ctx.Pipe(duplex=False)
            self.proc = ctx.Process(target=_forked, args=(argv, child_out, err), daemon=True)
            self.proc.start()
            child_out.close()
        else:
            with open(err, "w") as errf:
                self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, *argv],
                                             stdout=subprocess.PIPE, stderr=errf,
                                             start_new_session=True)
            self._out = self.proc.stdout
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
        fd = self._out.fileno()
        poller = select.poll()  # not select(): a process holding over 1024 descriptors
        poller.register(fd, select.POLLIN)
        got = b""
        while b"\n" not in got:
            left = deadline - time.monotonic()
            if left <= 0:
                return got.decode(errors="replace") + " (start timed out)"
            if poller.poll(min(left, 0.5) * 1000):
                chunk = os.read(fd, 4096)
                if not chunk:  # the engine ended
                    break
                got += chunk
            elif not _alive(self.proc):
                break
        return got.decode(errors="replace").split("\n", 1)[0]

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and _alive(proc):
            proc.terminate()
            _join(proc, 10)
            if _alive(proc):
                proc.kill()
                _join(proc, 10)
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
