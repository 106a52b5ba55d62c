"""Prompts that cannot fit a model's context: dropped at tokenize time, warned about at run time.

* ``data tokenize --max-input-tokens N`` (default: the tokenizer's model max length) drops, and
  counts, prompts whose input is longer (or refuses them with ``--on-long refuse``);
* ``loadgen run`` reads the server's max model length from its probe (``parse_max_model_len``:
  vLLM/SGLang ``/v1/models``, llama.cpp ``/props``) and warns before sending
  (``length_warnings``; loadgen/run/coordinator.py).

A multi-turn prompt's input is its first prompt plus every later user turn: the context of its
last turn holds at least that many ids (and the replies too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: tokenizers without a known limit report a huge sentinel (int(1e30)); above this it is unknown
UNKNOWN_LIMIT = 10_000_000
ON_LONG = ("drop", "refuse")


class TooLongError(ValueError):
    """Prompts longer than the limit with ``--on-long refuse``."""


def tokenizer_max_length(tok: Any) -> int | None:
    """The tokenizer's model max length, or None when it does not know one."""
    n = getattr(getattr(tok, "hf", tok), "model_max_length", None)
    return int(n) if isinstance(n, int) and 0 < n < UNKNOWN_LIMIT else None


def total_input_len(rec: Any) -> int:
    """First prompt plus every later user turn, in ids."""
    return rec.input_len + sum(len(t) for t in (rec.turns or []))


def apply_limit(records: list[Any], limit: int | None, on_long: str = "drop"
                ) -> tuple[list[Any], dict[str, Any]]:
    """(records that fit, report). ``on_long='refuse'`` raises TooLongError naming the longest."""
    if on_long not in ON_LONG:
        raise ValueError(f"on_long must be one of {ON_LONG}")
    if limit is None:
        return records, {"max_input_tokens": None, "too_long": 0}
    long = [r for r in records if total_input_len(r) > limit]
    report: dict[str, Any] = {"max_input_tokens": limit, "too_long": len(long)}
    if not long:
        return records, report
    worst = max(long, key=total_input_len)
    report["longest"] = {"id": worst.id, "ids": total_input_len(worst)}
    if on_long == "refuse":
        raise TooLongError(f"{len(long)} of {len(records)} prompts are longer than "
                           f"--max-input-tokens {limit} (longest: {worst.id}, "
                           f"{total_input_len(worst)} ids); raise the limit or use --on-long drop")
    report["dropped_ids"] = [r.id for r in long]
    return [r for r in records if total_input_len(r) <= limit], report


def parse_max_model_len(models: Any = None, props: Any = None) -> int | None:
    """The max model length a server reports: ``max_model_len`` of a model in ``/v1/models``
    (vLLM, SGLang), or ``n_ctx`` in llama.cpp's ``/props`` (the slot context it serves)."""
    if isinstance(props, dict):
        gen = props.get("default_generation_settings") or {}
        n = gen.get("n_ctx") or props.get("n_ctx")
        if isinstance(n, int) and n > 0:
            return n
    if isinstance(models, dict):
        for m in models.get("data") or []:
            n = m.get("max_model_len") if isinstance(m, dict) else None
            if isinstance(n, int) and n > 0:
                return n
    return None


def length_warnings(records: Iterable[Any], max_model_len: int | None,
                    max_tokens: int | None = None) -> list[str]:
    """Lines to print before a run: prompts whose input cannot fit ``max_model_len``, and
    prompts whose input plus ``max_tokens`` (a record's own max_tokens wins) exceeds it."""
    if not max_model_len:
        return []
    recs = list(records)
    cannot = [r for r in recs if total_input_len(r) >= max_model_len]
    tight = [r for r in recs if r not in cannot and total_input_len(r)
             + ((r.max_tokens or max_tokens or 0) * (1 + len(r.turns or []))) > max_model_len]
    out = []
    if cannot:
        worst = max(cannot, key=total_input_len)
        out.append(f"warning: {len(cannot)} of {len(recs)} prompts cannot fit the server's max "
                   f"model length {max_model_len} (longest: {worst.id}, "
                   f"{total_input_len(worst)} ids); the server will refuse them. Drop them with "
                   f"'loadgen data tokenize --max-input-tokens {max_model_len}'")
    if tight:
        out.append(f"warning: {len(tight)} of {len(recs)} prompts plus max_tokens exceed the "
                   f"server's max model length {max_model_len}; their replies may be cut or "
                   "refused")
    return out
