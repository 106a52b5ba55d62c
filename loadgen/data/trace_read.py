"""Production request traces: rows of (arrival, input length, output length[, prefix blocks]).

Three forms are read (docs/DATASETS.md, "Traces"):

* ``azure``: Azure's LLM inference traces (CSV ``TIMESTAMP,ContextTokens,GeneratedTokens``;
  the timestamp a date-time with up to 9 fractional digits);
* ``mooncake``: Mooncake's FAST'25 traces (JSONL ``timestamp`` in ms, ``input_length``,
  ``output_length``, ``hash_ids``: one id per 512-token prefix block);
* ``generic``: any CSV or JSONL with a column mapping
  (``arrival=COL,input=COL,output=COL[,hash_ids=COL][,category=COL]``) and the arrival's unit.

Every row becomes a ``TraceRow``; arrivals are seconds from the first row kept.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

TRACE_FORMATS = ("auto", "azure", "mooncake", "generic")
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
MOONCAKE_BLOCK = 512  # tokens per hash id in Mooncake's traces
MAPPING_KEYS = ("arrival", "input", "output", "hash_ids", "category")
REQUIRED_KEYS = ("arrival", "input", "output")
# the longest input or output length a row may give: beyond any model's context (a larger
# number is a corrupt row, and its prompt ids alone would take gigabytes)
MAX_LENGTH = 1 << 24


class TraceError(ValueError):
    """A trace that cannot be used; the message names the file, the row and the field."""


@dataclass(slots=True)
class TraceRow:
    row: int  # 0-based row of the trace file (data rows, header excluded)
    arrival_s: float  # seconds from the first row kept
    input_len: int
    output_len: int
    hash_ids: list[int] | None = None
    category: str | None = None


@dataclass(slots=True)
class TraceSpec:
    """How to read one trace file."""

    path: Path
    fmt: str = "auto"
    mapping: dict[str, str] | None = None  # generic: MAPPING_KEYS -> column
    time_unit: str = "s"  # generic: the arrival's unit when it is a number
    block_size: int = MOONCAKE_BLOCK


def parse_mapping(text: str) -> dict[str, str]:
    """``arrival=ts,input=in,output=out`` -> {"arrival": "ts", ...} (keys of MAPPING_KEYS)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, col = part.partition("=")
        if not sep or not col.strip() or key.strip() not in MAPPING_KEYS:
            raise TraceError(f"--columns: {part!r} is not KEY=COLUMN with KEY one of "
                             f"{', '.join(MAPPING_KEYS)}")
        if key.strip() in out:
            raise TraceError(f"--columns: {key.strip()} is given twice")
        out[key.strip()] = col.strip()
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise TraceError(f"--columns: no column for {', '.join(missing)}")
    return out


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smh]?)\s*", text)
    if not m:
        raise TraceError(f"--window: {text!r} is not a time such as 90, 90s, 10m or 1h")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if not math.isfinite(seconds):
        raise TraceError(f"--window: {text[:40]!r} is too large a time")
    return seconds


def parse_window(text: str) -> tuple[float, float]:
    """``10m:20m`` -> (600.0, 1200.0); either side may be empty (from the start / to the end)."""
    start, sep, end = text.partition(":")
    if not sep:
        raise TraceError(f"--window: {text!r} is not START:END (e.g. 10m:20m)")
    lo = parse_duration(start) if start.strip() else 0.0
    hi = parse_duration(end) if end.strip() else float("inf")
    if hi <= lo:
        raise TraceError(f"--window: the end {end!r} is not after the start {start!r}")
    return lo, hi


def _datetime_s(text: str) -> float:
    """Azure's ``2023-11-16 18:15:46.6805900`` (fraction of up to 9 digits) -> POSIX seconds."""
    head, _, frac = text.strip().partition(".")
    base = datetime.fromisoformat(head).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def _encoding(path: Path) -> str:
    """The file's text encoding: UTF-16 when it starts with a UTF-16 byte-order mark (a
    spreadsheet's "Unicode text"), else UTF-8 (a UTF-8 byte-order mark is skipped)."""
    with open(path, "rb") as fh:
        bom = fh.read(2)
    return "utf-16" if bom in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"


def _lines(path: Path):
    """(line number, text) of every line of a text file, decoded (``_encoding``); a byte that
    is not of the encoding is a ``TraceError`` naming the line."""
    enc = _encoding(path)
    try:
        with open(path, encoding=enc, newline="") as fh:
            yield from enumerate(fh, 1)
    except UnicodeDecodeError:
        raw = path.read_bytes()
        try:
            raw.decode(enc)
            bad, line = 0, 0
        except UnicodeDecodeError as exc:
            bad = exc.start
            line = raw[:bad].decode(enc, "replace").count("\n") + 1
        name = "UTF-16" if enc == "utf-16" else "UTF-8"
        raise TraceError(f"{path}: line {line} is not {name} text (byte 0x{raw[bad:bad + 1].hex()} "
                         f"at offset {bad}); convert the file to UTF-8 (e.g. iconv -f latin1 "
                         f"-t utf-8)") from None


def _detect(path: Path) -> str:
    head = next((line[:65536].encode() for _, line in _lines(path)), b"")
    if head.lstrip().startswith(b"{"):
        try:
            obj = orjson.loads(head)
        except orjson.JSONDecodeError:
            return "generic"
        return "mooncake" if isinstance(obj, dict) and "input_length" in obj else "generic"
    cols = [c.strip() for c in head.decode().split(",")]
    return "azure" if cols[:3] == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"] \
        else "generic"


def _records(path: Path, jsonl: bool):
    """(row, dict) of a CSV (header line) or JSONL file."""
    if jsonl:
        row = 0
        for lineno, line in _lines(path):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise TraceError(f"{path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise TraceError(f"{path}:{lineno}: a row must be a JSON object")
            yield row, obj
            row += 1
        return
    text = "".join(line for _, line in _lines(path))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        yield from enumerate(reader)
    except csv.Error as exc:
        raise TraceError(f"{path}: malformed CSV ({exc})") from None


def _int(value: Any, where: str, name: str, low: int, high: int | None = None) -> int:
    try:
        n = int(value)
        if isinstance(value, float) and n != value:
            raise ValueError
    except (TypeError, ValueError):
        raise TraceError(f"{where}: {name} {value!r} is not a whole number") from None
    if n < low:
        raise TraceError(f"{where}: {name} is {n}, below {low}")
    if high is not None and n > high:
        raise TraceError(f"{where}: {name} is {n}, above {high} (no model reads or writes "
                         f"that many tokens)")
    return n


def _arrival(value: Any, where: str, unit: float) -> float:
    """The arrival in seconds (any origin); a finite number, or a ``TraceError``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value) * unit
    else:
        text = str(value).strip()
        try:
            seconds = float(text) * unit
        except ValueError:
            try:
                seconds = _datetime_s(text)
            except ValueError:
                raise TraceError(f"{where}: arrival {value!r} is neither a number nor a "
                                 f"date-time") from None
    if not math.isfinite(seconds):
        raise TraceError(f"{where}: arrival {value!r} is not a finite time")
    return seconds


def read_trace(spec: TraceSpec) -> tuple[str, list[TraceRow]]:
    """(the format read, every row in file order); arrivals are seconds from the first row."""
    path = spec.path
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file")
    fmt = _detect(path) if spec.fmt == "auto" else spec.fmt
    if fmt == "azure":
        mapping, unit, jsonl = ({"arrival": "TIMESTAMP", "input": "ContextTokens",
                                 "output": "GeneratedTokens"}, 1.0, False)
    elif fmt == "mooncake":
        mapping, unit, jsonl = ({"arrival": "timestamp", "input": "input_length",
                                 "output": "output_length", "hash_ids": "hash_ids"},
                                TIME_UNITS["ms"], True)
    else:
        if not spec.mapping:
            raise TraceError(f"{path}: not an Azure or Mooncake trace: give --columns "
                             f"arrival=COL,input=COL,output=COL (docs/DATASETS.md, 'Traces')")
        mapping, unit = spec.mapping, TIME_UNITS[spec.time_unit]
        jsonl = next((line.lstrip().startswith("{") for _, line in _lines(path)
                      if line.strip()), False)
    rows: list[TraceRow] = []
    for row, rec in _records(path, jsonl):
        where = f"{path}: row {row + 1}"
        for key in REQUIRED_KEYS:
            if mapping[key] not in rec or rec[mapping[key]] in (None, ""):
                raise TraceError(f"{where}: no {key} column {mapping[key]!r}")
        hashes = None
        if "hash_ids" in mapping and rec.get(mapping["hash_ids"]) not in (None, ""):
            raw = rec[mapping["hash_ids"]]
            if isinstance(raw, str):
                try:
                    raw = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise TraceError(f"{where}: hash_ids {raw[:40]!r} is not a JSON list") \
                        from None
            if not isinstance(raw, list):
                raise TraceError(f"{where}: hash_ids must be a list of ints")
            hashes = [_int(h, where, "hash id", 0) for h in raw]
        cat = rec.get(mapping["category"]) if "category" in mapping else None
        rows.append(TraceRow(row=row, arrival_s=_arrival(rec[mapping["arrival"]], where, unit),
                             input_len=_int(rec[mapping["input"]], where, "input length", 1,
                                            MAX_LENGTH),
                             output_len=_int(rec[mapping["output"]], where, "output length", 1,
                                             MAX_LENGTH),
                             hash_ids=hashes, category=str(cat) if cat else None))
    if not rows:
        raise TraceError(f"{path}: holds no rows")
    for r in rows:
        if r.hash_ids is not None and len(r.hash_ids) < -(-r.input_len // spec.block_size):
            raise TraceError(f"{path}: row {r.row + 1}: {len(r.hash_ids)} hash ids cover fewer "
                             f"than its {r.input_len} input tokens (blocks of "
                             f"{spec.block_size})")
    return fmt, rows


def select(rows: list[TraceRow], window: tuple[float, float] | None,
           limit: int | None) -> list[TraceRow]:
    """The rows in arrival order (stable: trace order among equal times) whose offset from the
    trace's first arrival lies in ``window`` [start, end), at most ``limit`` of them; arrivals
    re-based to the first row kept."""
    t0 = min(r.arrival_s for r in rows)
    ordered = sorted(rows, key=lambda r: r.arrival_s)
    if window is not None:
        lo, hi = window
        ordered = [r for r in ordered if lo <= r.arrival_s - t0 < hi]
    if limit is not None:
        ordered = ordered[:limit]
    if not ordered:
        raise TraceError("no trace row in the --window / --limit selection")
    base = ordered[0].arrival_s
    for r in ordered:
        r.arrival_s = round(r.arrival_s - base, 6)
    return ordered
