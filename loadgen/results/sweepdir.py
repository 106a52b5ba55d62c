"""The sweep directory: a grid of ordinary run directories plus ``sweep.json``.

    SWEEP_DIR/
      sweep.json            written after every cell (atomic), so an interrupted sweep resumes
      cells/<cell id>/      an ordinary run directory (manifest.json, requests.jsonl, summary.json)

``sweep.json``::

    {"loadgen_sweep": 1,
     "config": {...the sweep config as given...},
     "cells": [{"id": "ngram-k4__c8__builtin", "sd": "ngram-k4", "sd_config": {...},
                "baseline": false, "dataset": "builtin", "load": {"concurrency": 8},
                "load_level": 8.0, "load_kind": "concurrency", "dir": "cells/ngram-k4__c8__builtin",
                "status": "complete" | "failed" | "interrupted" | "pending",
                "error": null, "repeat": 0}, ...],      repeat: repetition index (--repeats)
     "analysis": {...}}     speedup and capacity (loadgen/analysis/sweeps.py), recomputed on demand

A cell's ``sd`` is the label of its SD configuration; exactly one label is the baseline (SD off)
and speedups compare every other label with it at the same dataset and load level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadgen.results.files import read_json, write_json
from loadgen.results.redact import redact_config
from loadgen.results.summary import Summary

SWEEP_FILE = "sweep.json"
# how repetitions of a sweep's cells are ordered (sweep config `repeat_order`)
REPEAT_ORDERS = ("alternate", "random")
FORMAT_KEY = "loadgen_sweep"


@dataclass(slots=True)
class Cell:
    id: str
    sd: str
    dataset: str
    load: dict[str, float]
    dir: str
    sd_config: dict[str, Any] = field(default_factory=dict)
    baseline: bool = False
    status: str = "pending"
    error: str | None = None
    repeat: int = 0  # repetition index (``--repeats``); 0 in sweeps without repetitions

    @property
    def load_kind(self) -> str:
        return "concurrency" if "concurrency" in self.load else "request_rate"

    @property
    def load_level(self) -> float:
        return float(self.load.get("concurrency", self.load.get("request_rate", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["load_kind"] = self.load_kind
        d["load_level"] = self.load_level
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cell:
        keys = {"id", "sd", "dataset", "load", "dir", "sd_config", "baseline", "status", "error",
                "repeat"}
        return cls(**{k: v for k, v in d.items() if k in keys})


@dataclass(slots=True)
class Sweep:
    root: Path
    config: dict[str, Any]
    cells: list[Cell]
    analysis: dict[str, Any] = field(default_factory=dict)

    def cell_dir(self, cell: Cell) -> Path:
        return self.root / cell.dir

    def summary(self, cell: Cell) -> Summary | None:
        """The cell's summary.json, or None when the cell has none (not run, or failed)."""
        path = self.cell_dir(cell) / "summary.json"
        return Summary.from_dict(read_json(path)) if path.exists() else None

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {FORMAT_KEY: 1, "config": redact_config(self.config),
               "cells": [redact_config(c.to_dict()) for c in self.cells],
               "analysis": self.analysis}
        write_json(self.root / SWEEP_FILE, doc)


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SWEEP_FILE).exists()


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "summary.json").exists()


def load_sweep(root: str | Path) -> Sweep:
    root = Path(root)
    doc = read_json(root / SWEEP_FILE)
    if not isinstance(doc, dict):
        raise ValueError(f"{root / SWEEP_FILE}: not a loadgen sweep file")
    if doc.get(FORMAT_KEY) != 1:
        raise ValueError(f"{root / SWEEP_FILE}: not a loadgen sweep file")
    return Sweep(root=root, config=doc.get("config", {}),
                 cells=[Cell.from_dict(c) for c in doc.get("cells", [])],
                 analysis=doc.get("analysis", {}))
