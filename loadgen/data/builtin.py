"""The built-in prompt set that ``loadgen run`` uses with no arguments, and that ``--dataset
builtin`` names wherever a prompt file is taken (``read_dataset``).

``loadgen/resources/builtin_prompts.jsonl`` (package data) holds 44 short text prompts (4 for each
of the 11 categories) written for this project, in the text prompt format (loadgen.data.textfmt).
They are tokenized for the target tokenizer on first use and the result is cached under
``cache_dir("prompts")``, keyed by the content hash of the prompt file and of the tokenizer's
files, so later calls load in milliseconds without importing transformers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from loadgen.cache import cache_dir, publish_file
from loadgen.data.prompts import PromptFile, read_prompts, write_prompts
from loadgen.resources import resource_path

BUILTIN_PATH = resource_path("builtin_prompts.jsonl")
BUILTIN = "builtin"  # the dataset name that stands for the built-in set
BUILTIN_TOKENIZER = "smollm2"  # the tokenizer of the built-in set's token ids


def builtin_prompts_path() -> Path:
    if not BUILTIN_PATH.exists():
        raise FileNotFoundError(
            f"{BUILTIN_PATH}: the built-in prompt set is missing from this loadgen install "
            "(it ships as package data: loadgen/resources/builtin_prompts.jsonl)"
        )
    return BUILTIN_PATH


def _tokenizer_key(tokenizer: str) -> str:
    """A content key for a tokenizer spec, computed without loading it."""
    from loadgen.data.tokenizer import SMOLLM2_ALIASES, _sha256_file

    if tokenizer.lower() in SMOLLM2_ALIASES:
        from loadgen.models.smollm2 import smollm2_gguf_path

        return "gguf:" + _sha256_file(smollm2_gguf_path())
    path = Path(tokenizer).expanduser()
    if path.is_file():
        return "file:" + _sha256_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                     "tokenizer.model", "special_tokens_map.json"):
            f = path / name
            if f.exists():
                h.update(name.encode() + b"\0" + _sha256_file(f).encode())
        return "dir:" + h.hexdigest()
    return "hub:" + tokenizer


def builtin_prompts(tokenizer: str = "smollm2", path: str | Path | None = None) -> PromptFile:
    """The built-in prompts, pre-tokenized for ``tokenizer`` (cached by content hash)."""
    src = Path(path) if path else builtin_prompts_path()
    content = hashlib.sha256(src.read_bytes()).hexdigest()
    key = hashlib.sha256(f"{content}|{_tokenizer_key(tokenizer)}|v1".encode()).hexdigest()[:24]
    cached = cache_dir("prompts") / f"builtin-{key}.jsonl"
    if cached.exists():
        return read_prompts(cached)
    from loadgen.data.textfmt import read_text_prompts
    from loadgen.data.tokenize import tokenize_prompts
    from loadgen.data.tokenizer import load_tokenizer

    text_header, prompts = read_text_prompts(src)
    tok = load_tokenizer(tokenizer)
    pf = tokenize_prompts(prompts, tok, header={
        "source_file": str(src), "source_sha256": content,
        "source_header": {k: v for k, v in text_header.items() if k != "loadgen_text_prompts"},
        "dataset": "builtin"})
    publish_file(cached, lambda tmp: write_prompts(tmp, pf.records, pf.header))
    return read_prompts(cached)


def read_dataset(spec: str | Path, text: bool = False, chat: bool = False,
                 tokenizer: str = BUILTIN_TOKENIZER) -> tuple[PromptFile, Path]:
    """A ``--dataset`` value as prompts and the file they came from: ``builtin`` is the built-in
    set, as text records when the engine sends chat ``messages`` (``chat``) and as ``tokenizer``'s
    token ids otherwise; anything else is a prompt file (``read_prompts``; ``text``: the engine
    accepts text records too)."""
    if str(spec) != BUILTIN:
        return read_prompts(spec, text=text), Path(spec)
    if chat:
        from loadgen.data.prompts import read_text_prompt_file

        src = builtin_prompts_path()
        pf = read_text_prompt_file(src)
        pf.header.setdefault("dataset", BUILTIN)
        return pf, src
    pf = builtin_prompts(tokenizer)
    return pf, Path(pf.header.get("source_file") or builtin_prompts_path())
