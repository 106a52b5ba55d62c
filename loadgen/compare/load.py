"""Reading a run directory for ``loadgen compare``: its records, manifest and summary, and the
per-request arrays every statistic is computed from (docs/COMPARE.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.analysis.metrics import e2e_ms, per_user_tokens_per_s, tpot_ms, ttft_ms
from loadgen.results.files import ResultFileError
from loadgen.results.records import read_run_records, record_files


class CompareError(ValueError):
    """A run directory that cannot be read."""


@dataclass
class RunData:
    path: Path
    label: str
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None
    records: list[dict[str, Any]]
    measured: list[dict[str, Any]] = field(default_factory=list)
    ok: list[dict[str, Any]] = field(default_factory=list)
    # Per ok request (aligned with ``ok``); NaN where a request has no value.
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tpot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    e2e: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_user: np.ndarray = field(default_factory=lambda: np.zeros(0))
    al: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    category: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    # Pooled per-token ITL at event granularity: value g/n, weight n, owning request.
    itl_val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    itl_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    itl_req: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def config(self) -> dict[str, Any]:
        return (self.manifest or {}).get("config") or {}

    @property
    def engine(self) -> str | None:
        return self.config.get("engine")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: not valid JSON ({exc})") from exc


def load_run(path: Path | str, label: str | None = None) -> RunData:
    """Read a run directory (or a sweep cell's directory, which is one)."""
    path = Path(path)
    if path.is_file() and path.name in ("summary.json", "manifest.json", "requests.jsonl"):
        path = path.parent
    if not path.is_dir() or not record_files(path):
        raise CompareError(f"{path}: not a run directory (no requests.jsonl or shards)")
    try:
        # every shard; a torn last line skipped, any other bad line an error
        records = read_run_records(path)
    except ResultFileError as exc:
        raise CompareError(str(exc)) from None
    run = RunData(path=path, label=label or path.name or str(path),
                  manifest=_read_json(path / "manifest.json"),
                  summary=_read_json(path / "summary.json"), records=records)
    run.measured = [r for r in records if not r.get("warmup")]
    run.ok = [r for r in run.measured if r.get("status") == "ok"]
    _extract(run)
    return run


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _extract(run: RunData) -> None:
    ok = run.ok
    run.ttft = np.array([ttft_ms(r) for r in ok], dtype=float)
    run.e2e = np.array([e2e_ms(r) for r in ok], dtype=float)
    run.tpot = np.array([_nan(tpot_ms(r)) for r in ok], dtype=float)
    run.per_user = np.array([_nan(per_user_tokens_per_s(r)) for r in ok], dtype=float)
    run.al = np.array([_nan(r.get("acceptance_length") or None) for r in ok], dtype=float)
    run.tokens = np.array([r["output_tokens"] for r in ok], dtype=float)
    run.category = np.array([r["category"] for r in ok], dtype=object)
    # ITL (docs/METRICS.md): an event bringing n tokens after a gap g adds n values g/n.
    lens = np.array([len(r["arrivals_ns"]) for r in ok], dtype=np.int64)
    if lens.sum() == 0:
        return
    arr = np.concatenate([np.asarray(r["arrivals_ns"], dtype=np.int64) for r in ok])
    ntok = np.concatenate([np.asarray(r["event_tokens"], dtype=np.int64) for r in ok])
    req = np.repeat(np.arange(len(ok)), lens)
    gap = np.diff(arr, prepend=arr[0]) / 1e6
    keep = np.ones(arr.size, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    keep[starts[lens > 0]] = False  # a request's first event has no gap
    keep &= ntok > 0
    run.itl_val = gap[keep] / ntok[keep]
    run.itl_w = ntok[keep]
    run.itl_req = req[keep]
