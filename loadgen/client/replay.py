"""Multi-turn replay when the stream may carry no output token ids.

A token-id conversation's next turn is the previous prompt, the reply's ids and the next user
turn's ids (client/request.py). OpenAI-compatible endpoints (``--engine openai``: llama-server's
``/v1/completions``, hosted APIs) stream text; only some (vLLM, with ``return_token_ids``) add the
ids. Where a reply arrives without every id, its text is tokenized with the tokenizer the prompt
file's header names (the one that made the prompt's ids), and the next turn is built from those
ids; each such request records how many of its prompt ids came that way
(``prompt_ids_from_text``, docs/FORMATS.md). Where no tokenizer is known the run is refused before
anything is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.engines.base import EngineAdapter


@dataclass(frozen=True, slots=True)
class TextReplay:
    """How a run builds later turns from a reply's text: the tokenizer and its encoder."""

    tokenizer: str
    encode: Callable[[str], list[int]]

    @property
    def notice(self) -> str:
        return (f"the stream may carry no output token ids: a later turn is built from the "
                f"reply's text tokenized with {self.tokenizer} (the prompt file's tokenizer); "
                f"such requests record prompt_ids_from_text, and those ids can differ from the "
                f"ones the model generated where a text has more than one tokenization")


def needs_text_replay(cfg: RunConfig, prompts: PromptFile, adapter: EngineAdapter) -> bool:
    """Multi-turn token-id records, sent as ids (not as a chat endpoint's messages) to an
    engine whose stream may lack the output ids."""
    return (cfg.load.multi_turn and adapter.output_ids != "always"
            and any(r.turns and r.prompt_token_ids
                    and not (adapter.sends_messages and r.messages) for r in prompts.records))


def tokenizer_spec(header: dict[str, Any]) -> str | None:
    """What ``load_tokenizer`` takes for the tokenizer a prompt file's header names: the
    ``smollm2`` shortcut, else the file or folder it was loaded from where it still exists,
    else its name (a hub name)."""
    from loadgen.data.tokenizer import SMOLLM2_ALIASES

    name = header.get("tokenizer")
    if not isinstance(name, str) or not name:
        return None
    if name.lower() in SMOLLM2_ALIASES:
        return name
    ident = header.get("tokenizer_identity") or {}
    source = ident.get("source") if isinstance(ident, dict) else None
    if isinstance(source, str) and source and not source.startswith("hub:") \
            and Path(source).exists():
        return source
    return name


def _tokenizer_json(spec: str) -> Path | None:
    """The ``tokenizer.json`` a spec resolves to without transformers, where there is one: a
    tokenizer folder's own, or the converted copy loadgen keeps of a GGUF's (data/tokenizer.py)."""
    from loadgen.data.tokenizer import (
        SMOLLM2_ALIASES,
        _is_gguf,
        _sha256_file,
        gguf_tokenizer_folder,
    )

    if spec.lower() in SMOLLM2_ALIASES:
        from loadgen.models.smollm2 import smollm2_gguf_path

        path = smollm2_gguf_path()
    else:
        path = Path(spec).expanduser()
    if path.is_dir():
        tj = path / "tokenizer.json"
    elif path.is_file() and _is_gguf(path):
        tj = gguf_tokenizer_folder(_sha256_file(path)) / "tokenizer.json"
    else:
        return None
    return tj if tj.is_file() else None


@lru_cache(maxsize=4)
def _encoder(spec: str) -> Callable[[str], list[int]]:
    """``ChatTokenizer.encode`` (no special tokens added), loaded once per process: from the
    ``tokenizer.json`` by the tokenizers library where it is at hand (what transformers' fast
    tokenizer runs, without its seconds of import), else through transformers."""
    tj = _tokenizer_json(spec)
    if tj is not None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tj))
        return lambda text: tok.encode(text, add_special_tokens=False).ids
    from loadgen.data.tokenizer import load_tokenizer

    return load_tokenizer(spec).encode


def text_replay(cfg: RunConfig, prompts: PromptFile,
                adapter: EngineAdapter) -> TextReplay | None:
    """The run's text replay, None when it needs none; ``ValueError`` (one line, before
    anything is sent) when it needs one and no tokenizer can be had."""
    if not needs_text_replay(cfg, prompts, adapter):
        return None
    from loadgen.data.tokenizer import TokenizerError

    spec = tokenizer_spec(prompts.header)
    why = (f"the prompt file holds multi-turn records and the {adapter.name} stream may carry "
           f"no output token ids, so each reply's text must be tokenized for the next turn")
    if spec is None:
        raise ValueError(f"{why}, but the file's header names no tokenizer: use a file made by "
                         f"loadgen data tokenize, a text prompt file with --openai-mode chat, "
                         f"or --no-multi-turn")
    try:
        encode = _encoder(spec)
    except TokenizerError as exc:
        raise ValueError(f"{why}, with {spec} (the file's tokenizer): {exc}") from None
    except Exception as exc:  # transformers raises many types for a tokenizer it cannot read
        raise ValueError(f"{why}, with {spec} (the file's tokenizer), which could not be "
                         f"loaded: {type(exc).__name__}: {exc}") from None
    return TextReplay(tokenizer=str(prompts.header.get("tokenizer")), encode=encode)


def chat_turns(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[str]]:
    """A token-id record's ``messages`` (its system prompt and every user turn, as prompt files
    made by ``loadgen data tokenize`` keep them) as a chat endpoint replays them: (the first
    request's messages, the later user turns' text, each sent after the live reply). Messages
    that hold anything but system and user turns are sent as they are, in one request."""
    head = [m for m in messages if m["role"] == "system"]
    users = [m for m in messages if m["role"] == "user"]
    if not users or len(head) + len(users) != len(messages) or messages[:len(head)] != head:
        return list(messages), []
    return [*head, users[0]], [m["content"] for m in users[1:]]
