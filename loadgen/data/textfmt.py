"""Text prompt sets: the model-agnostic JSONL that builders write and ``loadgen data tokenize``
turns into the pre-tokenized format (loadgen.data.prompts).

One JSON object a line (split on ``\\n`` only), optionally ``.gz``; an optional first line is a
header holding the key ``loadgen_text_prompts``. A record::

    {"id": "coding-003", "category": "coding",
     "turns": ["first user turn", "second user turn"],   # or "prompt": "one turn"
     "system": "optional system prompt",
     "max_tokens": 512,                                    # optional
     "meta": {"source": "...", "license": "...", "original_id": "...", "sub_category": "..."}}

Assistant turns are never stored: they are generated live between the user turns.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from loadgen.data.jsonl import check_unique_ids, iter_jsonl, open_text

TEXT_HEADER_KEY = "loadgen_text_prompts"
TEXT_FORMAT_VERSION = 1


def alnum_head(text: str, n: int) -> str:
    """The first ``n`` letters and digits of ``text``, lower-case (a key that ignores spacing,
    punctuation and case; reads no further than it needs)."""
    return "".join(islice(filter(str.isalnum, text.lower()), n))


class TextPromptError(ValueError):
    """A text prompt file that cannot be used; the message names the file, line and field."""


@dataclass(slots=True)
class TextPrompt:
    id: str
    category: str
    turns: list[str]
    system: str | None = None
    max_tokens: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "category": self.category, "turns": self.turns}
        if self.system:
            out["system"] = self.system
        if self.max_tokens is not None:
            out["max_tokens"] = self.max_tokens
        if self.meta:
            out["meta"] = self.meta
        return out

    def messages(self) -> list[dict[str, str]]:
        """System (if any) and the user turns, as chat messages (replies are generated live)."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": t} for t in self.turns]


def prompt_from_dict(obj: Any, where: str) -> TextPrompt:
    if not isinstance(obj, dict):
        raise TextPromptError(f"{where}: a record must be a JSON object")
    for key in ("id", "category"):
        if obj.get(key) in (None, ""):
            raise TextPromptError(f"{where}: missing required field '{key}'")
    turns = obj.get("turns")
    if turns is None and isinstance(obj.get("prompt"), str):
        turns = [obj["prompt"]]
    if not isinstance(turns, list) or not turns or not all(
        isinstance(t, str) and t for t in turns
    ):
        raise TextPromptError(f"{where}: 'turns' must be a non-empty list of non-empty strings")
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise TextPromptError(f"{where}: 'system' must be a string")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise TextPromptError(f"{where}: 'max_tokens' must be a positive int")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise TextPromptError(f"{where}: 'meta' must be an object")
    return TextPrompt(id=str(obj["id"]), category=str(obj["category"]), turns=list(turns),
                      system=system or None, max_tokens=max_tokens, meta=dict(meta))


def read_text_prompts(path: str | Path) -> tuple[dict[str, Any], list[TextPrompt]]:
    """(header, prompts) of a text prompt file; ids must be unique."""
    path = Path(path)
    if not path.exists():
        raise TextPromptError(f"{path}: no such text prompt file")
    if path.is_dir():
        raise TextPromptError(f"{path}: is a directory, not a text prompt file")
    try:
        return _read(path)
    except UnicodeDecodeError as exc:
        raise TextPromptError(f"{path}: not UTF-8 text (byte {exc.start}): a text prompt file is "
                              "UTF-8 JSONL") from None
    except (EOFError, gzip.BadGzipFile) as exc:
        raise TextPromptError(f"{path}: not a valid gzip file ({exc})") from None


def _read(path: Path) -> tuple[dict[str, Any], list[TextPrompt]]:
    header: dict[str, Any] = {}
    prompts: list[TextPrompt] = []
    for lineno, obj in iter_jsonl(path, TextPromptError):
        if isinstance(obj, dict) and TEXT_HEADER_KEY in obj:
            if prompts or header:
                raise TextPromptError(f"{path}:{lineno}: header must be the first line")
            header = obj
            continue
        if isinstance(obj, dict) and "loadgen_prompts" in obj:
            raise TextPromptError(
                f"{path}:{lineno}: this is already a pre-tokenized prompt file"
            )
        prompts.append(prompt_from_dict(obj, f"{path}:{lineno}"))
    if not prompts:
        raise TextPromptError(f"{path}: holds no prompts")
    check_unique_ids((p.id for p in prompts), path, TextPromptError)
    return header, prompts


def write_text_prompts(
    path: str | Path, prompts: Iterable[TextPrompt], header: dict[str, Any] | None = None
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = {TEXT_HEADER_KEY: TEXT_FORMAT_VERSION, **(header or {})}
    with open_text(path, "w") as fh:
        fh.write(json.dumps(head, ensure_ascii=False) + "\n")
        for p in prompts:
            fh.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
    return path
