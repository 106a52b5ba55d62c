"""Workers as Ray actors (``loadgen run --ray ADDRESS``), spread over the cluster's nodes.

Ray is the transport between hosts: each actor runs the one ``WorkerCore`` (its own thread,
uvloop, transport), writes its shard on its own node, and hands it back in chunks at the end.
Every stamp in a shard is that worker's own monotonic clock; the coordinator maps the window
edges to it with a clock-offset probe (loadgen.run.merge.probe_clock). An actor is placed on
its node with a hard node-affinity strategy and asks for no CPU from Ray's scheduler (the
workers' CPU is the point of the run, not something to reserve).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.run.handles import WorkerDied
from loadgen.run.worker import FileCounter, Phase, WorkerCore, WorkerSpec, read_counter

CHUNK = 8 << 20  # shard bytes per call when a shard comes back
COUNTER = "issued"  # beside the shard: the conversations the worker started (a FileCounter)
SALVAGE_TIMEOUT_S = 60.0  # per call that fetches a shard chunk or a dead worker's count


def is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "local")


def connect(address: str) -> Any:
    """ray.init for ``address`` ("local": a throwaway cluster in this process, on 127.0.0.1).
    For a loopback address this must run before anything in the process imports ray."""
    if is_loopback(address):
        if "ray" in sys.modules and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0":
            raise ValueError("ray was imported before loadgen could keep it on 127.0.0.1; "
                             "connect to a loopback cluster before importing ray")
        # Ray resolves 127.0.0.1 to the host's routable IP unless its "no cluster" switch is on;
        # with it on, every server binds 127.0.0.1 only.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    try:
        import ray
    except ImportError:
        raise ValueError("--ray needs Ray: pip install 'loadgen[scale]'") from None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
    if address == "local":
        ray.init(num_cpus=os.cpu_count(), object_store_memory=200_000_000, **kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray


def shutdown() -> None:
    """Disconnect (and, for "local", end the throwaway cluster)."""
    import ray

    ray.shutdown()


class RayActor:
    """The actor's body: a WorkerCore whose shard, and the count of conversations it started (a
    FileCounter), live in a temporary directory of its node: both outlive the actor, so a
    killed actor's records can still be fetched from its node (``salvage``)."""

    def __init__(self, spec: WorkerSpec, prompts: PromptFile, use_uvloop: bool) -> None:
        spec.shard = Path(tempfile.mkdtemp(prefix="loadgen-shard-")) / spec.shard.name
        self.counter = FileCounter(spec.shard.parent / COUNTER)
        self.core = WorkerCore(spec, prompts, use_uvloop, self.counter)

    def ready(self) -> dict[str, Any]:
        return {"dir": str(self.core.spec.shard.parent)}

    def clock_ns(self) -> int:
        return time.monotonic_ns()

    def select(self, category: str | None, start: int, warm: int) -> None:
        self.core.select(category, start, warm).result()

    def prepare(self) -> None:
        self.core.prepare().result()

    def run_phase(self, phase: Phase) -> dict[str, Any]:
        return self.core.run_phase(phase).result()

    def window_end(self, first: int) -> int:
        return self.core.window_end(first).result()

    def stop(self) -> None:
        self.core.stop()

    def issued(self) -> int:
        return self.core.issued

    def read_shard(self, offset: int) -> bytes:
        self.core.writer.close()
        return _read_chunk(str(self.core.spec.shard), offset)

    def close(self) -> None:
        self.core.close()
        self.counter.close()
        shutil.rmtree(self.core.spec.shard.parent, ignore_errors=True)


def _read_chunk(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(CHUNK)
    except FileNotFoundError:
        return b""


def _dead_issued(directory: str) -> int:
    return read_counter(Path(directory) / COUNTER)


def _remove(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class RayWorker:
    """The coordinator's handle on one actor. While it measures, its count of started
    conversations is polled (``POLL_S``): the figure used when its node is lost with it."""

    shared_clock = False
    POLL_S = 0.5

    def __init__(self, ray: Any, actor: Any, spec: WorkerSpec, node_id: str) -> None:
        self._ray = ray
        self.actor = actor
        self.index = spec.index
        self.node_id = node_id
        self.node = node_id[:12]
        self.spec = spec
        self._died: str | None = None
        self._issued = 0
        self._remote_dir: str | None = None
        self.shard_note = ""  # what became of its shard, when it died
        self.records_lost = False
        self._measuring = threading.Event()

    def _future(self, ref: Any) -> Future[Any]:
        out: Future[Any] = Future()

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                out.set_result(f.result())
            elif isinstance(exc, self._ray.exceptions.RayActorError):
                self._died = f"worker {self.index} (Ray actor on node {self.node}) died"
                out.set_exception(WorkerDied(self._died))
            else:
                out.set_exception(exc)

        ref.future().add_done_callback(done)
        return out

    def ready(self) -> Future[Any]:
        fut = self._future(self.actor.ready.remote())

        def learn(f: Future[Any]) -> None:
            if f.exception() is None:
                self._remote_dir = f.result()["dir"]

        fut.add_done_callback(learn)
        return fut

    def clock_ns(self) -> int:
        return int(self._ray.get(self.actor.clock_ns.remote()))

    def select(self, category: str | None, start: int, warm: int) -> Future[Any]:
        return self._future(self.actor.select.remote(category, start, warm))

    def prepare(self) -> Future[Any]:
        return self._future(self.actor.prepare.remote())

    def run_phase(self, phase: Phase) -> Future[dict[str, Any]]:
        fut = self._future(self.actor.run_phase.remote(phase))
        if not phase.measured:
            return fut
        self._measuring.set()

        def ended(f: Future[Any]) -> None:
            self._measuring.clear()
            if not f.exception():
                self._issued = f.result()["issued"]

        fut.add_done_callback(ended)
        threading.Thread(target=self._poll, daemon=True,
                         name=f"loadgen-ray-poll-{self.index}").start()
        return fut

    def _poll(self) -> None:
        while self._measuring.is_set() and self._died is None:
            with contextlib.suppress(Exception):
                self._issued = max(self._issued, int(self._ray.get(
                    self.actor.issued.remote(), timeout=5)))
            time.sleep(self.POLL_S)

    def window_end(self, first: int) -> Future[int]:
        return self._future(self.actor.window_end.remote(first))

    def stop(self) -> None:
        self.actor.stop.remote()

    def issued(self) -> int:
        if self._died is None:
            with contextlib.suppress(Exception):
                self._issued = int(self._ray.get(self.actor.issued.remote(), timeout=10))
        return self._issued

    def death(self) -> str | None:
        return self._died

    def _on_node(self, fn: Any) -> Any:
        """``fn`` as a Ray task pinned to this worker's node (to reach what its dead actor
        left there)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        return self._ray.remote(num_cpus=0, max_retries=0)(fn).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=self.node_id,
                                                               soft=False))

    def collect_shard(self) -> None:
        """Copy the actor's shard into the run directory (``spec.shard``), chunk by chunk; for
        a dead actor, from its node (its exact count of started conversations with it). When
        the node is gone too, the shard is lost: the last polled count stands."""
        if self._died is None:
            self._copy(lambda off: self.actor.read_shard.remote(off))
            return
        if self._remote_dir is None:
            self.shard_note = "; it died before it started"
            return
        shard = str(Path(self._remote_dir) / self.spec.shard.name)
        read = self._on_node(_read_chunk)
        try:
            issued = int(self._ray.get(self._on_node(_dead_issued).remote(self._remote_dir),
                                       timeout=SALVAGE_TIMEOUT_S))
            self._copy(lambda off: read.remote(shard, off))
        except Exception as exc:  # the node went with it (or cannot be reached)
            self.spec.shard.unlink(missing_ok=True)
            self.records_lost = True
            self.shard_note = (f"; its node is unreachable ({type(exc).__name__}), its records "
                               f"are lost: every conversation it had started by its last "
                               f"report ({self._issued}) is accounted as an error")
            return
        self._issued = issued
        self.shard_note = "; its records up to its death were fetched from its node"

    def _copy(self, remote_read: Any) -> None:
        offset = 0
        with open(self.spec.shard, "wb") as fh:
            while chunk := self._ray.get(remote_read(offset), timeout=SALVAGE_TIMEOUT_S):
                fh.write(chunk)
                offset += len(chunk)

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "node": self.node, "shard": self.spec.shard.name}

    def close(self) -> None:
        if self._died is None:
            with contextlib.suppress(Exception):
                self._ray.get(self.actor.close.remote(), timeout=60)
        elif self._remote_dir is not None:
            with contextlib.suppress(Exception):
                self._ray.get(self._on_node(_remove).remote(self._remote_dir), timeout=10)
        self._ray.kill(self.actor)


def start_ray_workers(cfg: RunConfig, prompts: PromptFile, use_uvloop: bool,
                      endpoints: list[str] | None = None) -> tuple[list[RayWorker], str]:
    """``--workers-per-node`` actors on every alive node of the cluster at ``cfg.scale.ray``
    (``endpoints`` as in worker.worker_specs)."""
    from loadgen.run.worker import worker_specs

    assert cfg.scale.ray
    ray = connect(cfg.scale.ray)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeID"])
    per = cfg.scale.workers_per_node
    workers = len(nodes) * per
    cls = ray.remote(num_cpus=0, max_concurrency=8)(RayActor)
    handles = []
    for k, spec in enumerate(worker_specs(cfg, workers, cfg.out, endpoints)):
        node = nodes[k % len(nodes)]
        actor = cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id=node["NodeID"], soft=False)).remote(spec, prompts, use_uvloop)
        handles.append(RayWorker(ray, actor, spec, node["NodeID"]))
    return handles, (f"Ray cluster {cfg.scale.ray}: {len(nodes)} node(s) x {per} worker(s) = "
                     f"{workers} workers")
