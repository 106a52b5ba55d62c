"""One run end to end, the same lifecycle for every kind of run: checks, manifest, the
coordinator and its workers (one in this process, N worker processes, or Ray actors), facts,
summary.

Every check happens before anything is written. Then manifest.json says ``running``; the
records stream to requests.jsonl (requests.<k>.jsonl per worker) as requests end; facts.json
keeps what the records do not hold; summary.json is computed from the run directory alone
(``loadgen.analysis.rundir.summarize_run``); manifest.json ends ``complete``, ``interrupted``
or ``failed``. A first SIGINT/SIGTERM stops the run (it then ends as above, ``interrupted``); a
second writes facts, summary and manifest of what was recorded and exits at once
(docs/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

from loadgen.analysis.rundir import summarize_run
from loadgen.client.connect import CertificateError
from loadgen.client.endpoint import EndpointError
from loadgen.client.host import HostMonitor, pid_listening_on
from loadgen.client.limits import ensure_open_files
from loadgen.client.replay import text_replay
from loadgen.client.stop import StopSignals
from loadgen.client.wiring import build_wire
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.engines import adapter_class, adapter_for
from loadgen.results.facts import FACTS_FILE, write_facts
from loadgen.results.files import write_json
from loadgen.results.manifest import build_manifest
from loadgen.results.redact import redact_url
from loadgen.results.summary import Summary
from loadgen.run.coordinator import Coordinator
from loadgen.run.handles import InProcessWorker, LocalWorker, WorkerHandle
from loadgen.run.share import plan_workers
from loadgen.run.worker import check_split, peak_rss_mb, worker_specs


class RunDirError(ValueError):
    """``--out`` cannot take this run (it holds one already, or cannot be written)."""


class RunFailed(Exception):
    """The run started but stopped on its own (a record or the summary could not be written);
    what could be saved was saved."""


RUN_FILES = ("manifest.json", "requests.jsonl", "summary.json", FACTS_FILE)


def check_run_dir(out: Path, overwrite: bool = False) -> None:
    """Refuse an ``--out`` that is a file, or that holds a run unless ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a directory")
    held = [n for n in RUN_FILES if (out / n).exists()]
    if held and not overwrite:
        raise RunDirError(f"--out {out} already holds a run ({', '.join(held)}); give "
                          f"--overwrite to replace it, or another --out")


def _write(path: Path, obj: Any) -> None:
    try:
        write_json(path, obj)
    except OSError as exc:
        raise RunFailed(f"cannot write {path} ({exc.strerror or exc})") from None


def _check(cfg: RunConfig, prompts: PromptFile) -> tuple[int | None, str | None, list[str]]:
    """Every check before anything is written: configuration, endpoint (URL, headers, TLS
    certificate, proxy), open files, workers, prompts the engine can send. Returns (worker
    processes or None for this process, what ``auto`` picked, warnings to keep)."""
    wire = build_wire(cfg)  # EndpointError (a ValueError) for what the run cannot use
    warnings = [w for w in [ensure_open_files(cfg)] if w]
    workers, note = (None, None)
    if cfg.scale.workers is not None:
        workers, note = plan_workers(cfg)
        check_split(cfg, workers)
    engine = cfg.endpoint.engine
    if not adapter_class(engine).accepts_text and any(not r.prompt_token_ids
                                                      for r in prompts.records):
        raise ValueError(f"the {engine} engine sends token ids and the prompt file holds "
                         f"text: tokenize it first (loadgen data tokenize)")
    # multi-turn over a stream without output ids: the replies' text tokenized, or refused
    replay = text_replay(cfg, prompts, adapter_for(cfg))
    if replay is not None:
        warnings.append(replay.notice)
    try:  # a certificate that does not verify fails every request: say so before writing
        asyncio.run(wire.connector.check_certificate(cfg.endpoint.probe_timeout_s))
    except CertificateError as exc:
        raise EndpointError(str(exc)) from None
    return workers, note, warnings


def run_benchmark(cfg: RunConfig, prompts: PromptFile, dataset_path: Path | None = None,
                  argv: list[str] | None = None, use_uvloop: bool = True,
                  progress: bool = False, engine: dict[str, Any] | None = None,
                  overwrite: bool = False, signals: StopSignals | None = None,
                  endpoints: list[str] | None = None) -> Summary:
    """Execute one run and write its run directory (cfg.out); return its summary.
    ``progress``: a live line on a terminal (single-process runs; never when stderr is not a
    TTY); ``engine``: what a launched engine says about itself (kept in the manifest);
    ``signals``: the command's StopSignals (else one is installed for this call);
    ``endpoints``: worker k sends to endpoints[k % len] (scripts/bench_scale.py).

    An ``--out`` holding a run is refused unless ``overwrite``; even then nothing of it is
    removed before the new run has passed every check. Raises ``RunDirError`` /
    ``ValueError`` before anything is written, ``RunFailed`` when the run stopped on its
    own."""
    check_run_dir(cfg.out, overwrite)
    workers, note, warnings = _check(cfg, prompts)
    out = cfg.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for old in [*out.glob("requests*.jsonl"), out / "summary.json", out / FACTS_FILE]:
            old.unlink(missing_ok=True)  # a run directory holds one run
        manifest = build_manifest(cfg, dataset_path, prompts.header, argv or sys.argv)
        manifest["status"] = "running"
        manifest["config"]["warmup_requests_effective"] = cfg.load.effective_warmup()
        if engine is not None:
            manifest["engine"] = engine
        write_json(out / "manifest.json", manifest)
    except OSError as exc:
        raise RunDirError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    in_process = workers is None and not cfg.scale.ray
    live = None
    if progress and in_process and sys.stderr.isatty():
        from loadgen.run.progress import LiveProgress

        live = LiveProgress(cfg, label=out.name)
    handles, scale = _start_workers(cfg, prompts, workers, note, use_uvloop, endpoints, live)
    if scale is not None:  # who the workers are (their pids, nodes), while they run
        manifest["scale"] = scale
        write_json(out / "manifest.json", manifest)
    # the engine's PID: --engine-pid, launched by loadgen, else whoever listens on a loopback
    # endpoint (followed through a local proxy: client/listener.py)
    engine_pid = (cfg.measurement.engine_pid or (engine or {}).get("pid")
                  or pid_listening_on(cfg.endpoint.url))
    monitor = None if cfg.scale.ray else HostMonitor(
        int(engine_pid) if engine_pid else None, client_tree=not in_process,
        client_processes=len(handles))
    coord = Coordinator(cfg, prompts, handles, monitor, in_process=in_process)
    coord.notify = lambda text: print(f"loadgen: warning: {text}", file=sys.stderr)
    for text in warnings:  # said once, before the load starts, and kept in the summary
        coord.warn_now(text)
    for notice in coord.wire.notices:
        print(f"loadgen: WARNING: {notice}", file=sys.stderr)
    if note:
        print(f"loadgen run: {note}", file=sys.stderr)
    if live is not None:
        live.in_flight = lambda: handles[0].core.sender.in_flight  # type: ignore[attr-defined]

    def save_partial() -> str | None:
        """A second signal: facts, summary and manifest of the records as they are (a Ray
        run's records are on its nodes: nothing to save)."""
        if cfg.scale.ray:
            return None
        for h in handles:  # exiting now: no worker may append after this
            if isinstance(h, LocalWorker):
                h.kill()
            elif isinstance(h, InProcessWorker):
                h.core.seal()
        write_facts(out, coord.facts(partial=True))
        write_json(out / "summary.json", summarize_run(out).to_dict())
        manifest["status"] = "interrupted"
        write_json(out / "manifest.json", manifest)
        return str(out)

    own_signals = signals is None
    stop = StopSignals().install() if signals is None else signals
    coord.own_signals = False
    stop.attach(coord.request_stop, save_partial)
    try:
        try:
            with live if live is not None else contextlib.nullcontext():
                if use_uvloop:
                    import uvloop

                    uvloop.run(coord.execute())
                else:
                    asyncio.run(coord.execute())
        finally:
            stop.hold()  # the workers stop, the files are written: a signal now waits for them
            for h in handles:
                with contextlib.suppress(Exception):
                    h.collect_shard()
                h.close()
            if cfg.scale.ray:
                from loadgen.run.rayactors import shutdown

                shutdown()
        coord.account()
        return _finish(coord, manifest, scale)
    finally:
        try:
            stop.release()
        finally:
            if own_signals:
                stop.restore()


def _start_workers(cfg: RunConfig, prompts: PromptFile, workers: int | None, note: str | None,
                   use_uvloop: bool, endpoints: list[str] | None, live: Any
                   ) -> tuple[list[WorkerHandle], dict[str, Any] | None]:
    """The run's workers: one in this process, N local processes, or Ray actors; and what the
    manifest says of them (None for a single-process run)."""
    if cfg.scale.ray:
        from loadgen.run.rayactors import start_ray_workers

        ray_handles, note = start_ray_workers(cfg, prompts, use_uvloop, endpoints)
        ray = cfg.scale.ray
        address = (ray if ray == "local" else redact_url(ray) if "://" in ray
                   else ray.rsplit("@", 1)[-1])
        handles: list[WorkerHandle] = list(ray_handles)
        scale: dict[str, Any] | None = {"backend": "ray", "address": address}
    elif workers is None:
        spec = worker_specs(cfg, 1, cfg.out, endpoints, in_process=True)[0]
        return [InProcessWorker(spec, prompts, use_uvloop,
                                on_record=live.on_record if live is not None else None)], None
    else:
        handles = [LocalWorker(s, prompts, use_uvloop)
                   for s in worker_specs(cfg, workers, cfg.out, endpoints)]
        scale = {"backend": "processes"}
    scale.update(workers=len(handles), note=note, detail=[h.describe() for h in handles])
    return handles, scale


def _finish(coord: Coordinator, manifest: dict[str, Any],
            scale: dict[str, Any] | None) -> Summary:
    """facts.json, summary.json (from the run directory alone), the manifest's final word."""
    out = coord.cfg.out
    facts = coord.facts()
    try:
        write_facts(out, facts)
    except OSError as exc:
        raise RunFailed(f"cannot write {out / FACTS_FILE} ({exc.strerror or exc})") from None
    summary = summarize_run(out)
    _write(out / "summary.json", summary.to_dict())
    if scale is not None:
        for d, off, death in zip(scale["detail"], coord.offsets, coord.deaths, strict=True):
            d.update(clock_offset_ns=off.offset_ns, clock_error_ns=off.error_ns,
                     clock=off.method, died=death)
        scale["clock_error_bound_ns"] = max(o.error_ns for o in coord.offsets)
        w = facts.windows[0] if facts.windows else None
        scale["window"] = {"start_ns": w.start_ns if w else 0, "end_ns": w.end_ns if w else 0,
                           "clock": "coordinator"}
        # peak resident memory of this coordinator (the summary streamed from the files too)
        scale["coordinator_max_rss_mb"] = peak_rss_mb()
    manifest["status"] = ("failed" if coord.failure else
                          "interrupted" if facts.interrupted else "complete")
    if coord.failure:
        manifest["error"] = coord.failure
    manifest["server"] = coord.probe
    manifest["config"]["category_windows_effective"] = coord.category_windows
    _write(out / "manifest.json", manifest)
    if coord.failure:
        raise RunFailed(coord.failure)
    return summary
