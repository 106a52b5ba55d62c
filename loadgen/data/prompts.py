"""The pre-tokenized prompt file: one record per prompt, JSONL or parquet (docs/FORMATS.md).

Every engine under test must receive byte-identical inputs, so prompts travel as token ids that
already include the target model's chat template. A file may start with a header record (JSONL: a
first line holding the key ``loadgen_prompts``; parquet: the schema metadata key
``loadgen_prompts``) that says which tokenizer and template produced the ids.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.data.jsonl import check_unique_ids, iter_jsonl
from loadgen.data.textfmt import TEXT_HEADER_KEY, TextPromptError, read_text_prompts

FORMAT_VERSION = 1
HEADER_KEY = "loadgen_prompts"


MAX_TOKEN_ID = 1 << 32  # no vocabulary comes near; larger ints cannot be sent as JSON int64
_INTERN = list(range(1 << 18))  # shared int objects for the ids of vocabularies up to 262,144


class PromptFileError(ValueError):
    """A prompt file that cannot be used; the message names the file, line and field."""


@dataclass(slots=True)
class PromptRecord:
    """One prompt.

    ``prompt_token_ids`` are sent as they are: no engine adds BOS to a token-id prompt.
    ``turns`` holds the later user turns of a multi-turn conversation, each already tokenized as
    the ids that follow the previous assistant reply (end-of-turn marks, the user turn and the
    generation prompt), so live replay appends: prompt + reply_1 + turns[0] + reply_2 + ...
    ``messages`` is the same conversation as text, for text-only (chat) endpoints.
    """

    id: str
    category: str
    prompt_token_ids: list[int]
    turns: list[list[int]] | None = None
    max_tokens: int | None = None
    messages: list[dict[str, str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    # text records (text records, below): no ids; the later user turns as text
    text_turns: list[str] | None = None
    # trace records (loadgen/data/trace_build.py): seconds from the trace's first request at
    # which this one arrives (``loadgen run --arrival trace`` sends it then)
    arrival_s: float | None = None

    @property
    def input_len(self) -> int:
        return len(self.prompt_token_ids)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "category": self.category,
            "prompt_token_ids": self.prompt_token_ids,
        }
        if self.turns is not None:
            out["turns"] = self.turns
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if self.messages is not None:
            out["messages"] = self.messages
        if self.meta:
            out["meta"] = self.meta
        if self.arrival_s is not None:
            out["arrival_s"] = self.arrival_s
        return out


@dataclass(slots=True)
class PromptFile:
    header: dict[str, Any]
    records: list[PromptRecord]

    @property
    def tokenizer(self) -> str | None:
        return self.header.get("tokenizer")

    def categories(self) -> list[str]:
        return sorted({r.category for r in self.records})


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


def _int_list(value: Any, path: Path, line: int | None, name: str, allow_empty: bool) -> list[int]:
    if not isinstance(value, list):
        raise PromptFileError(f"{_where(path, line)}: field '{name}' must be a list of ints")
    if not value and not allow_empty:
        raise PromptFileError(f"{_where(path, line)}: field '{name}' is empty")
    intern, n_intern = _INTERN, len(_INTERN)
    for i, v in enumerate(value):
        # bool is an int subclass; a token id is never a bool.
        if type(v) is not int or not 0 <= v < MAX_TOKEN_ID:
            raise PromptFileError(
                f"{_where(path, line)}: field '{name}'[{i}] is {v!r}, not a non-negative int "
                f"below 2**32"
            )
        if v < n_intern:  # one shared int object per id: a large file's ids cost 8 bytes each
            value[i] = intern[v]
    return value


def record_from_dict(obj: Any, path: Path, line: int | None = None) -> PromptRecord:
    """Validate one decoded record; errors name the file, the line and the field."""
    where = _where(path, line)
    if not isinstance(obj, dict):
        raise PromptFileError(f"{where}: a record must be a JSON object")
    for key in ("id", "category", "prompt_token_ids"):
        if key not in obj or obj[key] is None:
            raise PromptFileError(f"{where}: missing required field '{key}'")
    rid = obj["id"]
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise PromptFileError(f"{where}: field 'id' must be a string")
    category = obj["category"]
    if not isinstance(category, str) or not category:
        raise PromptFileError(f"{where}: field 'category' must be a non-empty string")
    ids = _int_list(obj["prompt_token_ids"], path, line, "prompt_token_ids", allow_empty=False)
    turns = obj.get("turns")
    if turns is not None:
        if not isinstance(turns, list):
            raise PromptFileError(f"{where}: field 'turns' must be a list of token-id lists")
        turns = [
            _int_list(t, path, line, f"turns[{i}]", allow_empty=False) for i, t in enumerate(turns)
        ]
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise PromptFileError(f"{where}: field 'max_tokens' must be a positive int")
    messages = obj.get("messages")
    if messages is not None:
        ok = isinstance(messages, list) and all(
            isinstance(m, dict) and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok:
            raise PromptFileError(
                f"{where}: field 'messages' must be a list of {{role, content}} string objects"
            )
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise PromptFileError(f"{where}: field 'meta' must be an object")
    arrival = obj.get("arrival_s")
    if arrival is not None and (
            not isinstance(arrival, (int, float)) or isinstance(arrival, bool)
            or not 0 <= arrival < float("inf")):
        raise PromptFileError(f"{where}: field 'arrival_s' must be a number of seconds >= 0")
    return PromptRecord(
        id=str(rid), category=category, prompt_token_ids=ids, turns=turns,
        max_tokens=max_tokens, messages=messages, meta=meta,
        arrival_s=float(arrival) if arrival is not None else None,
    )


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet"


def read_prompts(path: str | Path, text: bool = False) -> PromptFile:
    """Read and validate a prompt file (``.jsonl``, ``.jsonl.gz`` or ``.parquet``). ``text``:
    the engine sends text, so a text prompt file or ``messages`` JSONL is read as text records
    (text records, below); otherwise such a file is refused (tokenize it first). Every
    way it can be unusable is a ``PromptFileError`` of one line naming the file."""
    path = Path(path)
    if not path.exists():
        raise PromptFileError(f"{path}: no such prompt file")
    if path.is_dir():
        raise PromptFileError(f"{path}: is a directory, not a prompt file")
    try:
        return _read_prompts(path, text)
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path}: not UTF-8 text ({exc.reason}): a prompt file is UTF-8 "
                              f"JSONL") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise PromptFileError(f"{path}: not a valid gzip file ({exc})") from None
    except OSError as exc:
        raise PromptFileError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _json_column(row: dict[str, Any], name: str, path: Path, row_no: int) -> None:
    if isinstance(row.get(name), str):
        try:
            row[name] = json.loads(row[name])
        except json.JSONDecodeError as exc:
            raise PromptFileError(f"{path}: row {row_no}: column '{name}' is not valid JSON "
                                  f"({exc.msg})") from None


def _read_prompts(path: Path, text: bool) -> PromptFile:
    header: dict[str, Any] = {}
    records: list[PromptRecord] = []
    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise PromptFileError(f"{path}: not a readable parquet file ({exc})") from None
        raw = (table.schema.metadata or {}).get(HEADER_KEY.encode())
        if raw:
            try:
                header = json.loads(raw)
            except json.JSONDecodeError:
                raise PromptFileError(f"{path}: its header metadata is not valid JSON") from None
        for row_no, row in enumerate(table.to_pylist(), start=1):
            row = {k: v for k, v in row.items() if v is not None}
            _json_column(row, "meta", path, row_no)
            _json_column(row, "messages", path, row_no)
            records.append(record_from_dict(row, path, row_no))
    else:
        for lineno, obj in iter_jsonl(path, PromptFileError):
            if not records and not header and is_text_record(obj):
                if text:
                    return read_text_prompt_file(path)
                raise text_refusal(path, lineno)
            if isinstance(obj, dict) and HEADER_KEY in obj:
                if records or header:
                    raise PromptFileError(f"{path}:{lineno}: header record must be the first line")
                header = obj
                continue
            records.append(record_from_dict(obj, path, lineno))
    if not records:
        raise PromptFileError(f"{path}: holds no prompt records")
    check_unique_ids((r.id for r in records), path, PromptFileError)
    return PromptFile(header=header, records=records)


def make_header(**fields: Any) -> dict[str, Any]:
    """A header record: ``tokenizer``, ``chat_template``, ``built_by`` and anything else useful."""
    return {HEADER_KEY: FORMAT_VERSION, **fields}


def write_prompts(
    path: str | Path, records: Iterable[PromptRecord], header: dict[str, Any] | None = None
) -> Path:
    """Write records as JSONL (optionally ``.gz``) or parquet, chosen by the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = make_header(**(header or {})) if not header or HEADER_KEY not in header else header
    if _is_parquet(path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = []
        for r in records:
            d = r.to_dict()
            rows.append({
                "id": d["id"],
                "category": d["category"],
                "prompt_token_ids": d["prompt_token_ids"],
                "turns": d.get("turns"),
                "max_tokens": d.get("max_tokens"),
                "messages": json.dumps(d["messages"]) if "messages" in d else None,
                "meta": json.dumps(d.get("meta", {}), ensure_ascii=False),
                "arrival_s": d.get("arrival_s"),
            })
        schema = pa.schema([
            ("id", pa.string()),
            ("category", pa.string()),
            ("prompt_token_ids", pa.list_(pa.int32())),
            ("turns", pa.list_(pa.list_(pa.int32()))),
            ("max_tokens", pa.int32()),
            ("messages", pa.string()),
            ("meta", pa.string()),
            ("arrival_s", pa.float64()),
        ], metadata={HEADER_KEY: json.dumps(header)})
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        return path
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps(header, ensure_ascii=False) + "\n")
        for r in records:
            fh.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------ text prompt files
# Text prompt files read for engines that send text (``--engine openai``): a loadgen text
# prompt file (loadgen/data/textfmt.py: ``loadgen data build qualitative``, a SPEED-Bench
# import) or a plain OpenAI-style ``messages`` JSONL (``{"messages": [...]}`` a line, optional
# ``id``, ``category``, ``max_tokens``). Each becomes a ``PromptRecord`` with no token ids:
# ``messages`` holds the first request's conversation (the system prompt and the first user
# turn; for a ``messages`` line, the whole list as given) and ``text_turns`` the later user
# turns of a text prompt, sent live after each generated reply (docs/FORMATS.md).

DEFAULT_CATEGORY = "default"


def is_text_record(obj: Any) -> bool:
    """A JSON line that is a text prompt (or a text file's header), not token ids."""
    if not isinstance(obj, dict):
        return False
    if TEXT_HEADER_KEY in obj:
        return True
    return "prompt_token_ids" not in obj and any(k in obj for k in ("messages", "turns",
                                                                      "prompt"))


def _messages_record(obj: Any, where: str, lineno: int) -> PromptRecord:
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    ok = isinstance(msgs, list) and bool(msgs) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str)
        and isinstance(m.get("content"), str) for m in msgs)
    if not ok:
        raise PromptFileError(f"{where}: field 'messages' must be a non-empty list of "
                              f"{{role, content}} string objects")
    category = obj.get("category", DEFAULT_CATEGORY)
    if not isinstance(category, str) or not category:
        raise PromptFileError(f"{where}: field 'category' must be a non-empty string")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int)
                                   or isinstance(max_tokens, bool) or max_tokens < 1):
        raise PromptFileError(f"{where}: field 'max_tokens' must be a positive int")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise PromptFileError(f"{where}: field 'meta' must be an object")
    return PromptRecord(id=str(obj.get("id", f"line-{lineno}")), category=category,
                        prompt_token_ids=[], max_tokens=max_tokens,
                        messages=[{"role": m["role"], "content": m["content"]} for m in msgs],
                        meta=meta)


def _read_messages_jsonl(path: Path) -> PromptFile:
    records = [_messages_record(obj, f"{path}:{lineno}", lineno)
               for lineno, obj in iter_jsonl(path, PromptFileError)]
    return PromptFile(header={"format": "messages_jsonl"}, records=records)


def read_text_prompt_file(path: Path) -> PromptFile:
    """Read a text prompt file or a ``messages`` JSONL as text records (no token ids)."""
    first = next((obj for _, obj in iter_jsonl(path, PromptFileError)), None)
    if isinstance(first, dict) and "messages" in first and TEXT_HEADER_KEY not in first:
        pf = _read_messages_jsonl(path)
    else:
        try:
            header, prompts = read_text_prompts(path)
        except TextPromptError as exc:
            raise PromptFileError(str(exc)) from None
        records = []
        for p in prompts:
            msgs = p.messages()
            n_sys = 1 if p.system else 0
            records.append(PromptRecord(
                id=p.id, category=p.category, prompt_token_ids=[], max_tokens=p.max_tokens,
                messages=msgs[:n_sys + 1], text_turns=p.turns[1:] or None, meta=p.meta))
        pf = PromptFile(header=header, records=records)
    seen: set[str] = set()
    for r in pf.records:
        if r.id in seen:
            raise PromptFileError(f"{path}: duplicate id {r.id!r}")
        seen.add(r.id)
    return pf


def text_refusal(path: Path, lineno: int) -> PromptFileError:
    """The refusal for an engine that sends token ids."""
    return PromptFileError(
        f"{path}:{lineno}: this is a text prompt file, not token ids: tokenize it for the "
        f"target model first (loadgen data tokenize {path} --tokenizer T --out FILE), or send "
        f"text with --engine openai")
