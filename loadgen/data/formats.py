"""Record presets: the common shapes of prompt pools, so a recipe needs no templates for them.

A source's ``format`` names either a file format (loadgen.data.sources.FILE_FORMATS, read by
suffix when not given) or one of the presets below, whose files are read by suffix (.jsonl, .json,
.parquet, .csv). A preset turns each record into ``_turns`` (the user turns, in order) and
``_system``; the source then needs no ``turns``. docs/DATASETS.md has an example recipe for each.

* ``sharegpt``: ``conversations`` (or ``conversation``/``messages``) of ``{from, value}`` or
  ``{role, content}`` items; only the user's turns are kept, the assistant's are dropped (they are
  generated live), consecutive user messages are joined;
* ``messages``: OpenAI chat JSONL, ``messages: [{role, content}]`` (content may be a list of parts);
* ``alpaca``: ``instruction`` + optional ``input`` (``output`` dropped);
* ``dolly``: ``instruction`` + optional ``context`` (``response`` dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

USER_ROLES = frozenset({"user", "human", "prompter", "customer"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "chatgpt", "bing", "bard", "model", "bot",
                             "claude", "ai"})
SYSTEM_ROLES = frozenset({"system", "developer"})
DROPPED_ROLES = frozenset({"tool", "function", "ipython", "observation", "function_call"})
CONVERSATION_FIELDS = ("conversations", "conversation", "messages", "items", "dialog")


class PresetError(ValueError):
    """A record that does not have the preset's shape; the message says what is missing."""


def _content(msg: dict[str, Any], where: str) -> str:
    val = msg.get("value", msg.get("content", msg.get("text")))
    if isinstance(val, list):  # OpenAI content parts
        val = "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in val)
    if val is None:
        raise PresetError(f"{where}: message without 'value'/'content'")
    if not isinstance(val, str):
        raise PresetError(f"{where}: message content is a {type(val).__name__}, not text")
    return val


def conversation_turns(msgs: Any, field: str) -> tuple[list[str], str | None, int]:
    """(user turns, system prompt, assistant messages dropped) of a chat message list."""
    if not isinstance(msgs, list) or not msgs:
        raise PresetError(f"'{field}' is not a non-empty list of messages")
    turns: list[str] = []
    system: str | None = None
    dropped = 0
    last_user = False
    for n, msg in enumerate(msgs):
        where = f"'{field}'[{n}]"
        if not isinstance(msg, dict):
            raise PresetError(f"{where} is a {type(msg).__name__}, not a message object")
        role = str(msg.get("from", msg.get("role", ""))).strip().casefold()
        if role in USER_ROLES:
            text = _content(msg, where)
            if last_user and turns:
                turns[-1] = turns[-1] + "\n\n" + text
            else:
                turns.append(text)
            last_user = True
        elif role in ASSISTANT_ROLES or role in DROPPED_ROLES:
            dropped += 1
            last_user = False
        elif role in SYSTEM_ROLES:
            system = _content(msg, where) if system is None and not turns else system
        else:
            raise PresetError(f"{where}: unknown role {role or '(none)'!r}; user roles are "
                              f"{sorted(USER_ROLES)}, assistant roles {sorted(ASSISTANT_ROLES)}")
    if not turns:
        raise PresetError(f"'{field}' holds no user message")
    return turns, system, dropped


def _chat(rec: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    field = next((f for f in fields if f in rec), None)
    if field is None:
        raise PresetError(f"no {' / '.join(repr(f) for f in fields)} field")
    turns, system, dropped = conversation_turns(rec[field], field)
    return {**rec, "_turns": turns, "_system": system, "_dropped_turns": dropped}


def _instruction(rec: dict[str, Any], extra: str) -> dict[str, Any]:
    ins = rec.get("instruction")
    if not isinstance(ins, str) or not ins.strip():
        raise PresetError("no 'instruction' text")
    more = rec.get(extra)
    text = f"{ins.strip()}\n\n{more.strip()}" if isinstance(more, str) and more.strip() else ins
    return {**rec, "_turns": [text], "_system": None, "_dropped_turns": 0}


PRESETS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "sharegpt": lambda r: _chat(r, CONVERSATION_FIELDS),
    "messages": lambda r: _chat(r, ("messages",)),
    "alpaca": lambda r: _instruction(r, "input"),
    "dolly": lambda r: _instruction(r, "context"),
}

#: Template defaults a source gets from its format when it gives no ``turns``/``turns_from``.
FORMAT_DEFAULTS: dict[str, dict[str, Any]] = {
    **{name: {"turns_from": "_turns"} for name in PRESETS},
    "lines": {"turns": ["{text}"]},
    "text": {"turns": ["{text}"]},
}
