"""Source adapters: files in JSONL, JSON, CSV, TSV or plain text (optionally gzip), and HF-hub
datasets through ``datasets`` (online only), read into flat dict records.

Every record carries ``_file`` (path relative to the data root), ``_file_stem`` (file name without
its suffixes) and ``_index`` (0-based position in the file); records taken out of a nested JSON
structure (``explode``) also carry the scalar fields of their parents, ``_key`` when the parent
was an object keyed by id, ``_pos``, the record's positions in the lists it sits in ("3/1/0":
article 3, paragraph 1, question 0 of ``data[].paragraphs[].qas[]``), and ``_group``, the same
without the last ("3/1": the paragraph the question belongs to).

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
import re
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


def read_bytes_text(path: Path, encoding: str | None = None,
                    stats: dict[str, Any] | None = None) -> str:
    """The text of a file (gunzipped when it ends in .gz): UTF-8, else cp1252 (noted in
    ``stats['decoded_as']``), or ``encoding``. A directory, a .gz that is not gzip, a binary file
    or an undecodable one is a SourceError naming the file."""
    if path.is_dir():
        raise SourceError(f"{path}: is a directory (name files, or a glob such as {path}/*.jsonl)")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceError(f"{path}: not a valid gzip file ({exc})") from None
    if b"\x00" in raw[:65536]:
        raise SourceError(f"{path}: binary data (NUL bytes), not a text file")
    if encoding:
        try:
            return raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise SourceError(f"{path}: cannot be read as {encoding}: {exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        if stats is not None:
            stats["decoded_as"] = "cp1252"
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError:
            return raw.decode("latin-1")  # every byte maps: nothing is lost


def _format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    return FILE_FORMATS_BY_SUFFIX.get(ext, "lines")


#: Extension -> file format when a source gives no ``format`` (anything else is read as lines).
FILE_FORMATS_BY_SUFFIX = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
                          ".parquet": "parquet", ".txt": "lines", ".text": "lines"}
#: The file formats a source's ``format`` may name (besides the record presets of loadgen.data
#: .formats, whose files are read by suffix).
FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "lines", "text")


def _explode(obj: Any, steps: list[str], parent: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Walk ``a[].b[].c[]``; ``*`` walks the values of an object (key kept as ``_key``)."""
    if not steps:
        pos = parent.get("_pos", ())
        parent = {**parent, "_group": "/".join(map(str, pos[:-1])),
                  "_pos": "/".join(map(str, pos))}
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
        for n, item in enumerate(obj):
            yield from _explode(item, rest, {**here, "_pos": (*parent.get("_pos", ()), n)})
        return
    name = step[:-2] if step.endswith("[]") else step
    val = obj.get(name) if isinstance(obj, dict) else None
    if val is None:
        raise SourceError(f"explode: no field {name!r}")
    yield from _explode(val, (["[]"] if step.endswith("[]") else []) + rest, here)


def file_format(path: Path, spec: dict[str, Any]) -> str:
    """The file format of ``path`` for a source: its ``format`` when that names a file format
    (a record preset such as ``sharegpt`` names none), else from the suffix."""
    fmt = spec.get("format")
    return fmt if fmt in FILE_FORMATS else _format_of(path)


def _parquet_records(path: Path, rel: str) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError(f"{rel}: parquet needs pyarrow: pip install pyarrow") from None
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # ArrowInvalid, OSError...: all mean "not a readable parquet"
        raise SourceError(f"{rel}: not a readable parquet file ({exc})") from None


def _jsonl(text: str, rel: str, spec: dict[str, Any], stats: dict[str, Any] | None):
    for lineno, line in enumerate(text.split("\n"), 1):  # "\n" only: U+2028 / U+000B in strings
        if not line.strip():
            continue
        try:
            yield json.loads(line, strict=False)
        except json.JSONDecodeError as exc:
            if spec.get("skip_bad_lines"):
                if stats is not None:
                    stats["bad_lines"] = stats.get("bad_lines", 0) + 1
                continue
            raise SourceError(f"{rel}:{lineno}: malformed JSON line ({exc.msg}); fix it or set "
                              "skip_bad_lines: true") from None


def read_file_records(path: Path, rel: str, spec: dict[str, Any],
                      stats: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Records of one local file, per the source ``spec`` (format, explode, delimiter...)."""
    fmt = file_format(path, spec)
    base = {"_file": rel, "_file_stem": path.name.split(".")[0]}
    if fmt == "parquet":
        for n, rec in enumerate(_parquet_records(path, rel)):
            yield {**rec, **base, "_index": n}
        return
    text = read_bytes_text(path, spec.get("encoding"), stats)
    if fmt == "jsonl":
        n = 0
        for obj in _jsonl(text, rel, spec, stats):
            if not isinstance(obj, dict):
                raise SourceError(f"{rel}: record {n + 1} is a JSON {type(obj).__name__}, "
                                  "not an object")
            if spec.get("explode"):
                for rec in _explode(obj, spec["explode"].split("."), {}):
                    yield {**rec, **base, "_index": n}
                    n += 1
            else:
                yield {**obj, **base, "_index": n}
                n += 1
    elif fmt == "json":
        try:
            obj = json.loads(text, strict=False)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{rel}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg})"
                              + ("; a JSON Lines file needs format: jsonl" if exc.msg ==
                                 "Extra data" else "")) from None
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
        try:
            for n, row in enumerate(reader):
                yield {**row, **base, "_index": n}
        except csv.Error as exc:
            raise SourceError(f"{rel}: malformed {fmt.upper()} ({exc})") from None
    elif fmt == "lines":  # one prompt a line; blank lines skipped
        n = 0
        for line in text.split("\n"):
            if line.strip():
                yield {**base, "_index": n, "text": line.rstrip("\r")}
                n += 1
    elif fmt == "text":  # the whole file is one record
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

_SUMMARY_QUERY = re.compile(r"^\s*(?:summari[sz]e|sum up|give (?:a|an) (?:summary|overview))"
                            r"|\bsummary of\b", re.I)


def qmsum_queries(path: Path, rel: str, spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """QMSum: one record per query; ``context`` is the transcript span the query is about
    (the whole meeting for general queries; a query whose span is longer than
    ``max_context_chars`` is skipped, not cut), ``asks``
    is ``summary`` for a request to summarize and ``question`` for any other query."""
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
                continue  # half a meeting is not what the query asks about
            asks = "summary" if _SUMMARY_QUERY.search(q["query"]) else "question"
            yield {"_file": rel, "_file_stem": path.name.split(".")[0],
                   "_index": m_idx * 1000 + q_idx, "meeting": m_idx, "query": q["query"],
                   "kind": kind, "asks": asks, "context": ctx}


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
