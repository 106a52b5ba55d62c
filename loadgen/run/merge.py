"""Putting the workers' results together: clock offsets, the records of a worker that died, the
client statistics."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadgen.analysis.metrics import stats
from loadgen.client.plan import iter_items
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.results.records import ERROR, RecordWriter, RequestRecord, iter_records
from loadgen.results.summary import (
    ClientStats,
    WorkerClient,
)

if TYPE_CHECKING:
    from loadgen.run.handles import WorkerHandle

_now_ns = time.monotonic_ns


@dataclass(slots=True)
class ClockOffset:
    """worker clock = coordinator clock + offset_ns, within +- error_ns."""

    offset_ns: int = 0
    error_ns: int = 0
    method: str = "shared"  # shared (same host, same monotonic clock) | probe


def probe_clock(clock_ns: Any, rounds: int = 16) -> ClockOffset:
    """Cristian's algorithm: ask the worker's clock ``rounds`` times and keep the reply with the
    shortest round trip; the worker read its clock somewhere inside that round trip, so the
    midpoint's error is at most half of it."""
    best: tuple[int, int] | None = None
    for _ in range(rounds):
        t0 = _now_ns()
        w = clock_ns()
        t1 = _now_ns()
        rtt = t1 - t0
        if best is None or rtt < best[0]:
            best = (rtt, w - (t0 + t1) // 2)
    assert best is not None
    return ClockOffset(offset_ns=best[1], error_ns=best[0] // 2 + 1, method="probe")


def account_dead(shard: Path, cfg: RunConfig, prompts: PromptFile, index: int, workers: int,
                 issued: int, reason: str, error: str | None = None) -> int:
    """A worker died: every conversation it had started (its first ``issued`` items) that has no
    final record in its shard becomes an error record there (``error``: its text, by default
    "<reason> while this request was in flight"). A torn last line is cut first.
    Returns the number of records added."""
    _cut_torn_tail(shard)
    last_of: dict[int, tuple[int, str]] = {}  # index -> (its last turn recorded, that status)
    if shard.exists():
        for r in iter_records(shard):
            prev = last_of.get(r["index"])
            if prev is None or r["turn"] > prev[0]:
                last_of[r["index"]] = (r["turn"], r["status"])
    items = iter_items(prompts, cfg.load.seed, cfg.load.effective_warmup(), cfg.load.shuffle, index,
                       workers)
    writer = RecordWriter(shard)
    added = 0
    try:
        for _ in range(issued):
            item = next(items)
            last = last_of.get(item.index)
            turns = len(item.prompt.turns or []) if cfg.load.multi_turn else 0
            if last is not None and (last[0] >= turns or last[1] != "ok"):
                continue  # the conversation ended
            turn = last[0] + 1 if last is not None else 0
            rec = RequestRecord(
                index=item.index, prompt_id=item.prompt.id, category=item.prompt.category,
                turn=turn, warmup=item.warmup,
                input_tokens=len(item.prompt.prompt_token_ids) if turn == 0 else 0,
                expected_tokens=cfg.load.output_len or item.prompt.max_tokens or 256,
                scheduled_ns=0, status=ERROR,
                error=error or f"{reason} while this request was in flight")
            writer.write(rec.to_dict())
            added += 1
    finally:
        writer.close()
    return added


def account_deaths(cfg: RunConfig, prompts: PromptFile, handles: list[WorkerHandle],
                   deaths: list[str | None]) -> list[str]:
    """Each dead worker's unfinished conversations as error records in its file
    (``account_dead``); a warning each."""
    warnings = []
    for k, reason in enumerate(deaths):
        if reason is None:
            continue
        h = handles[k]
        error = (f"worker {k} died with its node: this request was started, its record "
                 f"was lost" if h.records_lost else None)
        added = account_dead(cfg.out / h.describe()["shard"], cfg, prompts, k, len(handles),
                             h.issued(), f"worker {k} died", error)
        what = "started" if h.records_lost else "in flight"
        warnings.append(f"{reason}: {added} request(s) {what} accounted as errors; the other "
                        f"workers went on{h.shard_note}")
    return warnings


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a process killed while appending it)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        size = fh.seek(0, os.SEEK_END)
        pos = size
        while pos > 0:
            step = min(65536, pos)
            fh.seek(pos - step)
            chunk = fh.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                fh.truncate(pos - step + nl + 1)
                return
            pos -= step
        fh.truncate(0)


def merge_client(results: list[dict[str, Any] | None], nodes: list[str],
                 deaths: list[str | None], threshold_ms: float) -> ClientStats:
    """The client's cost over all workers (CPU per event = total CPU / total events), lag over
    every worker's samples; overloaded when any worker is; each worker's own figures."""
    per: list[WorkerClient] = []
    cpu = 0.0
    events = measured = 0
    lags: list[float] = []
    for k, res in enumerate(results):
        if res is None:
            per.append(WorkerClient(index=k, node=nodes[k], status="died", error=deaths[k]))
            continue
        c = res["client"]
        cpu += c["cpu_s"]
        events += res["events"]
        measured += res["measured"]
        lags.extend(res["lags_ms"])
        per.append(WorkerClient(index=k, node=nodes[k], requests=res["measured"],
                                events=res["events"], cpu_s=c["cpu_s"],
                                cpu_us_per_event=c["cpu_us_per_event"],
                                loop_lag_ms=stats(res["lags_ms"]), overloaded=c["overloaded"],
                                max_rss_mb=res.get("max_rss_mb")))
    return ClientStats(
        cpu_s=cpu, cpu_us_per_event=cpu * 1e6 / events if events else None,
        cpu_ms_per_request=cpu * 1e3 / measured if measured else None,
        loop_lag_ms=stats(lags), lag_threshold_ms=threshold_ms,
        overloaded=any(w.overloaded for w in per), workers=per)
