"""Source adapters: files in JSONL, JSON, CSV, TSV or plain text (optionally gzip), and HF-hub
datasets through ``datasets`` (online only), read into flat dict records.

Every record carries ``_file`` (path relative to the data root), ``_file_stem`` (file name without
its suffixes) and ``_index`` (0-based position in the file); records taken out of a nested JSON
structure (``explode``) also carry the scalar fields of their parents and ``_key`` when the parent
was an object keyed by id.

Format quirks handled here (see the data kit's MANIFEST): JSONL is split on ``\\n`` only and read
with ``strict=False``; malformed JSONL lines can be skipped (``skip_bad_lines``) and are counted;
CSV files that are not UTF-8 fall back to cp1252; TSV files may have no header (``columns``).
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class SourceError(RuntimeError):
    """A source that cannot be read; the message names the file and what is wrong."""


def default_data_root() -> Path | None:
    """``$LOADGEN_DATA_ROOT``, else ``../shared/data`` next to the checkout, if it exists."""
    env = os.environ.get("LOADGEN_DATA_ROOT")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for cand in (repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if (cand / "prompts").is_dir() or (cand / "long").is_dir():
            return cand
    return None


def read_bytes_text(path: Path, encoding: str | None = None) -> str:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if encoding:
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252")


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    return {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}.get(ext, "text")


def _explode(obj: Any, steps: list[str], parent: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Walk ``a[].b[].c[]``; ``*`` walks the values of an object (key kept as ``_key``)."""
    if not steps:
        if isinstance(obj, dict):
            rec = dict(parent)
            rec.update(obj)
            yield rec
        else:
            yield {**parent, "_value": obj}
        return
    step, rest = steps[0], steps[1:]
    scalars = {k: v for k, v in obj.items() if not isinstance(v, (list, dict))} if isinstance(
        obj, dict) else {}
    here = {**parent, **scalars}
    if step == "*":
        if not isinstance(obj, dict):
            raise SourceError("explode '*' needs an object")
        for key, val in obj.items():
            yield from _explode(val, rest, {**here, "_key": key})
        return
    if step == "[]":
        if not isinstance(obj, list):
            raise SourceError("explode '[]' needs a list")
        for item in obj:
            yield from _explode(item, rest, here)
        return
    name = step[:-2] if step.endswith("[]") else step
    val = obj.get(name) if isinstance(obj, dict) else None
    if val is None:
        raise SourceError(f"explode: no field {name!r}")
    yield from _explode(val, (["[]"] if step.endswith("[]") else []) + rest, here)


def read_file_records(path: Path, rel: str, spec: dict[str, Any],
                      stats: dict[str, int] | None = None) -> Iterator[dict[str, Any]]:
    """Records of one local file, per the source ``spec`` (format, explode, delimiter...)."""
    fmt = spec.get("format") or _format_of(path)
    base = {"_file": rel, "_file_stem": path.name.split(".")[0]}
    text = read_bytes_text(path, spec.get("encoding"))
    if fmt == "jsonl":
        n = 0
        for line in text.split("\n"):  # "\n" only: strings may hold U+2028 / U+000B
            if not line.strip():
                continue
            try:
                obj = json.loads(line, strict=False)
            except json.JSONDecodeError:
                if spec.get("skip_bad_lines"):
                    if stats is not None:
                        stats["bad_lines"] = stats.get("bad_lines", 0) + 1
                    continue
                raise SourceError(f"{rel}: malformed JSON line (set skip_bad_lines)") from None
            if spec.get("explode"):
                for rec in _explode(obj, spec["explode"].split("."), {}):
                    yield {**rec, **base, "_index": n}
                    n += 1
            else:
                yield {**obj, **base, "_index": n}
                n += 1
    elif fmt == "json":
        obj = json.loads(text, strict=False)
        steps = spec.get("explode", "[]" if isinstance(obj, list) else "*")
        for n, rec in enumerate(_explode(obj, steps.split("."), {})):
            yield {**rec, **base, "_index": n}
    elif fmt in ("csv", "tsv"):
        delim = spec.get("delimiter", "\t" if fmt == "tsv" else "auto")
        if delim == "auto":  # mmlu_redux: ';' in most files, ',' in one
            head = text.split("\n", 1)[0]
            delim = ";" if head.count(";") > head.count(",") else ","
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
        cols = spec.get("columns")
        reader: Any
        if cols:
            reader = ({c: v for c, v in zip(cols, row, strict=False)}
                      for row in csv.reader(io.StringIO(text), delimiter=delim, quoting=quoting))
        else:
            reader = csv.DictReader(io.StringIO(text), delimiter=delim, quoting=quoting)
        for n, row in enumerate(reader):
            yield {**row, **base, "_index": n}
    elif fmt == "text":
        yield {**base, "_index": 0, "text": text}
    else:
        raise SourceError(f"{rel}: unknown format {fmt!r}")


_HUB_STATE: dict[str, str | None] = {}


def hub_offline_reason() -> str | None:
    """Why the HF hub cannot be used now (None when it looks reachable); checked once.

    ``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` say so outright; otherwise the hub host must
    resolve and accept a TCP connection within 3 s (so an offline build does not sit through the
    hub client's retries for every source).
    """
    if "reason" in _HUB_STATE:
        return _HUB_STATE["reason"]
    reason: str | None = None
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        reason = "HF_HUB_OFFLINE=1"
    else:
        import socket
        from urllib.parse import urlparse

        host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
        try:
            with socket.create_connection((host or "huggingface.co", 443), timeout=3):
                pass
        except OSError as exc:
            reason = f"hub host {host} unreachable ({exc})"
    _HUB_STATE["reason"] = reason
    return reason


def read_hub_records(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Records of a HF-hub dataset through ``datasets`` (raises SourceError when offline)."""
    hub = spec["hub"]
    offline = hub_offline_reason()
    if offline:
        raise SourceError(f"hub dataset {hub['path']}: offline: {offline}")
    try:
        from datasets import load_dataset
    except ImportError:
        raise SourceError("hub sources need the 'datasets' package: pip install 'loadgen[data]'")\
            from None
    try:
        ds = load_dataset(hub["path"], hub.get("name"), split=hub.get("split", "test"),
                          revision=hub.get("revision"))
    except Exception as exc:  # network and hub errors come in many types
        raise SourceError(f"hub dataset {hub['path']}: {type(exc).__name__}: {exc}") from None
    base = {"_file": f"hub:{hub['path']}", "_file_stem": hub.get("name") or hub["path"]}
    for n, row in enumerate(ds):
        yield {**row, **base, "_index": n}


# ----- named adapters for structures a template cannot express ---------------------------------

def qmsum_queries(path: Path, rel: str, spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """QMSum: one record per query; ``context`` is the transcript span the query is about
    (the whole meeting for general queries, cut to ``max_context_chars``)."""
    limit = int(spec.get("max_context_chars", 12000))
    for m_idx, rec in enumerate(read_file_records(path, rel, {"format": "jsonl"})):
        turns = rec["meeting_transcripts"]

        def span_text(spans: list[list[str]], turns: list[dict[str, str]] = turns) -> str:
            lines = []
            for a, b in spans:
                for t in turns[int(a): int(b) + 1]:
                    lines.append(f"{t['speaker']}: {t['content']}")
            return "\n".join(lines)

        q_all = [(q, "general") for q in rec.get("general_query_list", [])]
        q_all += [(q, "specific") for q in rec.get("specific_query_list", [])]
        for q_idx, (q, kind) in enumerate(q_all):
            spans = q.get("relevant_text_span") or [["0", str(len(turns) - 1)]]
            ctx = span_text(spans)
            if len(ctx) > limit:
                ctx = ctx[:limit].rsplit("\n", 1)[0]
            yield {"_file": rel, "_file_stem": path.name.split(".")[0],
                   "_index": m_idx * 1000 + q_idx,
                   "meeting": m_idx, "query": q["query"], "kind": kind, "context": ctx}


ADAPTERS = {"qmsum_queries": qmsum_queries}


def parse_field(value: Any, how: str) -> Any:
    """``pylist``/``pyliteral``: a Python literal in a string; ``json``: JSON in a string."""
    if not isinstance(value, str):
        return value
    if how in ("pylist", "pyliteral"):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if how == "json":
        return json.loads(value)
    raise SourceError(f"unknown parse mode {how!r}")
