"""Text prompt files read for engines that send text (``--engine openai``): a loadgen text
prompt file (loadgen/data/textfmt.py: ``loadgen data build qualitative``, a SPEED-Bench import)
or a plain OpenAI-style ``messages`` JSONL (``{"messages": [...]}`` a line, optional ``id``,
``category``, ``max_tokens``).

Each becomes a ``PromptRecord`` with no token ids: ``messages`` holds the first request's
conversation (the system prompt and the first user turn; for a ``messages`` line, the whole
list as given) and ``text_turns`` the later user turns of a text prompt, sent live after each
generated reply (docs/FORMATS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadgen.data.jsonl import iter_jsonl
from loadgen.data.prompts import PromptFile, PromptFileError, PromptRecord
from loadgen.data.textfmt import TEXT_HEADER_KEY, TextPromptError, read_text_prompts

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
