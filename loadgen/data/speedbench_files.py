"""SPEED-Bench as people hold it on disk, read and validated for ``data import speed-bench``.

* the Hugging Face dataset's parquet (one config's ``test-*.parquet``, or Model-Optimizer's
  ``data/speed/<config>/test.parquet``): ``question_id``, ``category``, ``sub_category``,
  ``turns`` (list of user-turn strings), ``source``, ``src_id``, ``difficulty``, ``multiturn``;
* a config folder, or the snapshot root holding every config (only ``--config``'s files are read);
* the JSONL that NeMo-Skills' preparation writes and ``vllm bench serve`` / AIPerf read
  (``messages: [{role, content}]`` in place of ``turns``; assistant messages are dropped).

Every problem is reported as ``file:row N: column 'c': what is wrong``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loadgen.data.formats import PresetError, conversation_turns
from loadgen.data.recipe import CATEGORIES
from loadgen.data.sources import SourceError, read_bytes_text

CONFIGS = ("qualitative", "throughput_1k", "throughput_2k", "throughput_8k", "throughput_16k",
           "throughput_32k")
THROUGHPUT_CATEGORIES = ("low_entropy", "mixed", "high_entropy")
SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
MAX_LISTED = 10


class SpeedBenchError(RuntimeError):
    """An import that cannot go on; the message has one line per problem."""


def _is_data(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUFFIXES)


def _config_of(path: Path, root: Path) -> str | None:
    """The config a file under ``root`` belongs to: a folder named after it, or a file name
    ``<config>.jsonl`` / ``<config>-*.parquet`` / ``<config>_test.parquet``."""
    for part in path.relative_to(root).parts[:-1]:
        if part in CONFIGS:
            return part
    stem = path.name.split(".")[0]
    for cfg in CONFIGS:
        if stem == cfg or stem.startswith((cfg + "-", cfg + ".")) or stem in (
                f"{cfg}_test", f"test_{cfg}"):
            return cfg
    return None


def files_for(config: str, path: Path) -> list[Path]:
    """The data files of ``config`` in a file, a config folder or a snapshot root."""
    if not path.exists():
        raise SpeedBenchError(f"{path}: no such file or directory")
    if path.is_file():
        if not path.name.endswith(SUFFIXES):
            raise SpeedBenchError(f"{path}: not a SPEED-Bench file (expected .parquet, .jsonl "
                                  "or .jsonl.gz)")
        return [path]
    files = sorted(p for p in path.rglob("*") if _is_data(p))
    if not files:
        raise SpeedBenchError(f"{path}: holds no .parquet or .jsonl file")
    tagged = {p: _config_of(p, path) for p in files}
    mine = [p for p, c in tagged.items() if c == config]
    if mine:
        return mine
    others = sorted({c for c in tagged.values() if c})
    if others:
        raise SpeedBenchError(f"{path}: no files of config {config!r}; it holds "
                              f"{', '.join(others)}")
    return files  # a folder of one config with neutral names (test.parquet): checked by category


def _raw_rows(path: Path) -> list[dict[str, Any]]:
    if path.name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SpeedBenchError("reading parquet needs pyarrow: pip install pyarrow") from None
        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # ArrowInvalid, OSError: not a parquet file
            raise SpeedBenchError(f"{path}: not a readable parquet file ({exc}); the JSONL "
                                  "form must end in .jsonl") from None
    try:
        text = read_bytes_text(path)
    except SourceError as exc:
        raise SpeedBenchError(str(exc)) from None
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, strict=False)
        except json.JSONDecodeError as exc:
            raise SpeedBenchError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise SpeedBenchError(f"{path}:{n}: a row must be a JSON object")
        rows.append(obj)
    return rows


def _turns(row: dict[str, Any]) -> tuple[str, list[str] | str]:
    """(column, user turns or what is wrong with them)."""
    if "turns" in row and row["turns"] is not None:
        t = row["turns"]
        if isinstance(t, str):
            return "turns", "is a string, not a list of user turns"
        if not isinstance(t, list) or not t:
            return "turns", "must be a non-empty list of strings"
        if not all(isinstance(x, str) and x.strip() for x in t):
            return "turns", "holds an empty or non-string turn"
        return "turns", list(t)
    if "messages" in row and row["messages"] is not None:
        try:
            turns, _, _ = conversation_turns(row["messages"], "messages")
        except PresetError as exc:
            return "messages", str(exc).replace("'messages'", "").strip() or "invalid"
        return "messages", turns
    return "turns", "missing (neither 'turns' nor 'messages')"


def validate(config: str, rows: list[tuple[str, dict[str, Any]]],
             where: str | Path) -> list[dict[str, Any]]:
    """Rows (each with the place it came from) checked column by column; ``turns`` becomes the
    list of user turns. Raises SpeedBenchError listing every problem (file, row, column)."""
    problems: list[str] = []
    out: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for at, row in rows:
        bad = False
        for col in ("question_id", "category"):
            v = row.get(col)
            if v is None or (isinstance(v, str) and not v.strip()):
                problems.append(f"{at}: column {col!r}: missing")
                bad = True
            elif not isinstance(v, (str, int)):
                problems.append(f"{at}: column {col!r}: is a {type(v).__name__}, not a string")
                bad = True
        col, turns = _turns(row)
        if isinstance(turns, str):
            problems.append(f"{at}: column {col!r}: {turns}")
            bad = True
        if bad:
            continue
        qid = str(row["question_id"])
        if qid in seen:
            problems.append(f"{at}: column 'question_id': {qid!r} repeats {seen[qid]}")
            continue
        seen[qid] = at
        out.append({**row, "question_id": qid, "category": str(row["category"]), "turns": turns})
    if problems:
        more = len(problems) - MAX_LISTED
        raise SpeedBenchError("\n".join(problems[:MAX_LISTED] + (
            [f"... and {more} more problems"] if more > 0 else [])))
    if not out:
        raise SpeedBenchError(f"{where}: holds no rows")
    check_config(config, out, where)
    return out


def read_rows(config: str, path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Validated rows of ``config`` under ``path`` (a file, a config folder or the snapshot
    root), and the files read."""
    path = Path(path)
    files = files_for(config, path)
    rows = [(f"{f}:row {n}", row) for f in files for n, row in enumerate(_raw_rows(f), 1)]
    return validate(config, rows, path), [str(f) for f in files]


def check_config(config: str, rows: list[dict[str, Any]], where: str | Path) -> None:
    """``--config`` must match the categories found (a throughput file is not qualitative)."""
    found = sorted({r["category"] for r in rows})
    allowed = CATEGORIES if config == "qualitative" else THROUGHPUT_CATEGORIES
    wrong = [c for c in found if c not in allowed]
    if wrong:
        guess = ("a throughput config" if set(found) <= set(THROUGHPUT_CATEGORIES) else
                 "the qualitative config" if set(found) <= set(CATEGORIES) else "not SPEED-Bench")
        raise SpeedBenchError(f"{where}: --config {config} expects categories "
                              f"{', '.join(allowed)}, but the rows have {', '.join(found)} "
                              f"({guess})")
