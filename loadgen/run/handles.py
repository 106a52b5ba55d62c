"""How the coordinator talks to a worker, wherever it runs: a ``WorkerHandle`` whose every call
returns a ``concurrent.futures.Future``. ``InProcessWorker`` runs in this process (a
single-process run is a run of one such worker); ``LocalWorker`` is a process on this host
(spawn context, a multiprocessing Pipe); ``loadgen.run.rayactors.RayWorker`` a Ray actor. All
three run the one ``WorkerCore``. A worker that dies fails its pending futures with
``WorkerDied``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from multiprocessing.connection import Connection
from typing import Any, Protocol

from loadgen.data.prompts import PromptFile
from loadgen.run.worker import Phase, WorkerCore, WorkerSpec

_now_ns = time.monotonic_ns


class WorkerDied(RuntimeError):
    """The worker's process (or actor) is gone."""


class WorkerHandle(Protocol):
    index: int
    node: str
    shared_clock: bool  # its monotonic clock is this process's (same host): offset exactly 0
    shard_note: str  # what became of its shard when it died ("" when nothing to add)
    records_lost: bool  # it died and its shard could not be fetched

    def ready(self) -> Future[Any]: ...
    def clock_ns(self) -> int: ...
    def select(self, category: str | None, start: int, warm: int) -> Future[Any]: ...
    def prepare(self) -> Future[Any]: ...
    def run_phase(self, phase: Phase) -> Future[dict[str, Any]]: ...
    def window_end(self, first: int) -> Future[int]: ...
    def stop(self) -> None: ...
    def issued(self) -> int: ...
    def death(self) -> str | None: ...
    def collect_shard(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _worker_main(conn: Connection, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool,
                 issued: Any) -> None:
    """A local worker process: commands from the coordinator's pipe, replies by request id."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us
    lock = threading.Lock()

    def send(msg: tuple[str, int, Any]) -> None:
        with lock, contextlib.suppress(OSError):
            conn.send(msg)

    def reply(rid: int, fut: Future[Any]) -> None:
        try:
            send(("ok", rid, fut.result()))
        except BaseException as exc:  # the coordinator reports it
            send(("error", rid, f"{type(exc).__name__}: {exc}"))

    try:
        core = WorkerCore(spec, prompts, use_uvloop, issued)
    except Exception as exc:
        send(("error", 0, f"{type(exc).__name__}: {exc}"))
        return
    send(("ok", 0, True))
    while True:
        try:
            rid, op, arg = conn.recv()
        except (EOFError, OSError):  # the coordinator is gone: stop what runs
            core.stop()
            break
        if op == "clock":
            send(("ok", rid, _now_ns()))
        elif op == "select":
            core.select(*arg).add_done_callback(partial(reply, rid))
        elif op == "prepare":
            core.prepare().add_done_callback(partial(reply, rid))
        elif op == "phase":
            core.run_phase(arg).add_done_callback(partial(reply, rid))
        elif op == "window_end":
            core.window_end(arg).add_done_callback(partial(reply, rid))
        elif op == "stop":
            core.stop()
            send(("ok", rid, None))
        elif op == "close":
            core.close()
            send(("ok", rid, None))
            break


def _done(value: Any) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_result(value)
    return fut


class InProcessWorker:
    """The worker of a single-process run: its ``WorkerCore`` (own thread and event loop) in
    this process, writing requests.jsonl; ``on_record`` sees every record (live progress)."""

    shared_clock = True
    shard_note = ""
    records_lost = False

    def __init__(self, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool = True,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.index = spec.index
        self.node = "local"
        self.spec = spec
        self.core = WorkerCore(spec, prompts, use_uvloop, on_record=on_record)

    def ready(self) -> Future[Any]:
        return _done(True)

    def clock_ns(self) -> int:
        return _now_ns()

    def select(self, category: str | None, start: int, warm: int) -> Future[Any]:
        return self.core.select(category, start, warm)

    def prepare(self) -> Future[Any]:
        return self.core.prepare()

    def run_phase(self, phase: Phase) -> Future[dict[str, Any]]:
        return self.core.run_phase(phase)

    def window_end(self, first: int) -> Future[int]:
        return self.core.window_end(first)

    def stop(self) -> None:
        self.core.stop()

    def issued(self) -> int:
        return self.core.issued

    def death(self) -> str | None:
        return None

    def collect_shard(self) -> None:
        """Written in the run directory as it ran."""

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "pid": None,
                "shard": self.spec.shard.name}

    def close(self) -> None:
        self.core.close()


class LocalWorker:
    """A worker process on this host."""

    shared_clock = True
    shard_note = ""  # its shard is written in the run directory: it survives its death
    records_lost = False

    def __init__(self, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool = True) -> None:
        ctx = mp.get_context("spawn")
        self.index = spec.index
        self.node = "local"
        self.spec = spec
        self._conn, child = ctx.Pipe()
        self._issued = ctx.Value("q", 0, lock=False)
        self.proc = ctx.Process(target=_worker_main, name=f"loadgen-worker-{spec.index}",
                                args=(child, spec, prompts, use_uvloop, self._issued),
                                daemon=True)
        self.proc.start()
        child.close()
        self._lock = threading.Lock()
        self._ready: Future[Any] = Future()
        self._pending: dict[int, Future[Any]] = {0: self._ready}
        self._next = 1
        self._died: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"loadgen-worker-{spec.index}-reader")
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                status, rid, value = self._conn.recv()
            except (EOFError, OSError):
                break
            with self._lock:
                fut = self._pending.pop(rid, None)
            if fut is None:
                continue
            if status == "ok":
                fut.set_result(value)
            else:
                fut.set_exception(RuntimeError(value))
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        with self._lock:
            self._died = (f"worker {self.index} (pid {self.proc.pid}) died (exit code {code})"
                          if code is not None else f"worker {self.index} stopped answering")
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            fut.set_exception(WorkerDied(self._died))

    def _request(self, op: str, arg: Any = None) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            if self._died is not None:
                fut.set_exception(WorkerDied(self._died))
                return fut
            rid = self._next
            self._next += 1
            self._pending[rid] = fut
        try:
            self._conn.send((rid, op, arg))
        except OSError as exc:
            with self._lock:
                self._pending.pop(rid, None)
            fut.set_exception(WorkerDied(f"worker {self.index}: {exc}"))
        return fut

    def ready(self) -> Future[Any]:
        return self._ready

    def clock_ns(self) -> int:
        return int(self._request("clock").result(timeout=30))

    def select(self, category: str | None, start: int, warm: int) -> Future[Any]:
        return self._request("select", (category, start, warm))

    def prepare(self) -> Future[Any]:
        return self._request("prepare")

    def run_phase(self, phase: Phase) -> Future[dict[str, Any]]:
        return self._request("phase", phase)

    def window_end(self, first: int) -> Future[int]:
        return self._request("window_end", first)

    def stop(self) -> None:
        self._request("stop")

    def issued(self) -> int:
        return int(self._issued.value)

    def death(self) -> str | None:
        return self._died

    def collect_shard(self) -> None:
        """The shard is already in the run directory."""

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "pid": self.proc.pid,
                "shard": self.spec.shard.name}

    def kill(self) -> None:
        """At once (a second interrupt): its shard stays as it is."""
        self.proc.kill()
        self.proc.join(timeout=5)

    def close(self) -> None:
        if self._died is None:
            with contextlib.suppress(Exception):
                self._request("close").result(timeout=60)
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        with contextlib.suppress(OSError):
            self._conn.close()
