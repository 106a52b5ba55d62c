"""Start the synthetic engine as a child process (tests, benchmarks, demos)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# ``loadgen serve synthetic ARGS`` with only that command's parser: the same options and code,
# without importing every other command's modules (half the start-up of ``python -m loadgen``).
_SERVE = ("import argparse, sys\n"
          "from loadgen.cli import serve_synthetic\n"
          "p = argparse.ArgumentParser(prog='loadgen serve')\n"
          "serve_synthetic.register(p.add_subparsers(dest='engine', required=True))\n"
          "a = p.parse_args(sys.argv[1:])\n"
          "sys.exit(a.func(a))\n")


class SyntheticProcess:
    """``with SyntheticProcess(["--protocol", "sglang"]) as eng: eng.url``.

    Runs ``loadgen serve synthetic --port 0 ARGS`` (its parser alone, ``_SERVE``) and reads the
    port it bound from its first line of output; on exit sends SIGTERM (the truth log is closed
    cleanly), then SIGKILL.
    """

    def __init__(self, args: list[str], host: str = "127.0.0.1", start_timeout: float = 30.0,
                 cpu: int | None = None) -> None:
        self.args = list(args)
        self.host = host
        self.start_timeout = start_timeout
        self.cpu = cpu
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> SyntheticProcess:
        cmd = [sys.executable, "-c", _SERVE, "synthetic", "--host", self.host, "--port", "0",
               *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env, start_new_session=True)
        if self.cpu is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.proc.pid, {self.cpu})
        deadline = time.monotonic() + self.start_timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"synthetic engine did not start: {line.strip()} {err[-2000:]}")
        if time.monotonic() > deadline:
            self.stop()
            raise RuntimeError("synthetic engine start timed out")
        self.url = line.strip().rsplit(" ", 1)[-1]
        return self

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> SyntheticProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_truth(path: Path) -> list[dict]:
    import json

    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
