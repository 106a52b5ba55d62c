"""Text prompts to the pre-tokenized prompt format (``loadgen data tokenize``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loadgen.data.lengthguard import TooLongError, apply_limit, tokenizer_max_length
from loadgen.data.prompts import PromptFile, PromptRecord, make_header, write_prompts
from loadgen.data.textfmt import TextPrompt, read_text_prompts
from loadgen.data.tokenizer import ChatTokenizer, load_tokenizer


def _record(p: TextPrompt, ids: list[int], turns: list[list[int]] | None,
            warnings: list[str] | None) -> PromptRecord:
    meta = dict(p.meta)
    meta["isl"] = len(ids)
    if turns:
        meta["turn_lens"] = [len(t) for t in turns]
    if warnings:
        meta["template_warnings"] = sorted(set(warnings))
    return PromptRecord(id=p.id, category=p.category, prompt_token_ids=ids, turns=turns or None,
                        max_tokens=p.max_tokens, messages=p.messages(), meta=meta)


def tokenize_prompts(
    prompts: list[TextPrompt], tok: ChatTokenizer, raw: bool = False,
    header: dict[str, Any] | None = None, batch_size: int = 256,
) -> PromptFile:
    """Chat template with the generation prompt (or none with ``raw``), ids, input lengths.

    Single-turn prompts are rendered, then encoded in batches (the tokenizer's Rust backend uses
    every core); multi-turn prompts go through ChatTokenizer.conversation so each later turn holds
    the ids that follow the previous reply.
    """
    records: list[PromptRecord | None] = [None] * len(prompts)
    single: list[int] = []
    for i, p in enumerate(prompts):
        if len(p.turns) > 1 and not raw:
            first, later, warns = tok.conversation(p.turns, system=p.system)
            records[i] = _record(p, first, later, warns)
        else:
            single.append(i)
    for start in range(0, len(single), batch_size):
        idx = single[start:start + batch_size]
        if raw:
            texts = [(prompts[i].system + "\n\n" if prompts[i].system else "") + prompts[i].turns[0]
                     for i in idx]
            ids_list = [tok._strip_double_bos(ids)
                        for ids in tok.encode_batch(texts, add_special_tokens=True)]
        else:
            texts = [tok.render(prompts[i].messages()[: (2 if prompts[i].system else 1)], True)
                     for i in idx]
            ids_list = [tok._strip_double_bos(ids) for ids in tok.encode_batch(texts)]
        for i, ids in zip(idx, ids_list, strict=True):
            later = None
            if raw and len(prompts[i].turns) > 1:
                later = tok.encode_batch(["\n\n" + t for t in prompts[i].turns[1:]])
            records[i] = _record(prompts[i], ids, later, None)
    hdr = make_header(
        **tok.header_fields(),
        built_by="loadgen data tokenize",
        config={"raw": raw, **(header or {}).get("config", {})},
        **{k: v for k, v in (header or {}).items() if k != "config"},
    )
    return PromptFile(header=hdr, records=[r for r in records if r is not None])


def tokenize_file(src: str | Path, out: str | Path, tokenizer: str | ChatTokenizer,
                  raw: bool = False, max_input_tokens: int | None = None,
                  on_long: str = "drop") -> tuple[PromptFile, dict[str, Any]]:
    """Read a text prompt file, tokenize it and write the pre-tokenized file.

    Prompts longer than ``max_input_tokens`` (None: the tokenizer's model max length; 0: no
    limit) are dropped and counted in ``header["length_guard"]``, or refused
    (``on_long='refuse'``, loadgen.data.lengthguard)."""
    t0 = time.perf_counter()
    text_header, prompts = read_text_prompts(src)  # a bad file fails before the tokenizer loads
    t1 = time.perf_counter()
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    t2 = time.perf_counter()
    src_info = {k: v for k, v in text_header.items() if k != "loadgen_text_prompts"}
    pf = tokenize_prompts(prompts, tok, raw=raw,
                          header={"source_file": str(src), "source_header": src_info,
                                  "seed": text_header.get("seed")})
    limit = tokenizer_max_length(tok) if max_input_tokens is None else (max_input_tokens or None)
    pf.records, guard = apply_limit(pf.records, limit, on_long)
    pf.header["length_guard"] = {**guard, "limit_from": "tokenizer model_max_length"
                                 if max_input_tokens is None else "--max-input-tokens"}
    if not pf.records:
        raise TooLongError(f"every prompt of {src} is longer than {limit} ids")
    t3 = time.perf_counter()
    write_prompts(out, pf.records, pf.header)
    t4 = time.perf_counter()
    return pf, {"read_s": t1 - t0, "load_tokenizer_s": t2 - t1, "tokenize_s": t3 - t2,
                "write_s": t4 - t3, "total_s": t4 - t0,
                "tokens": float(sum(r.input_len for r in pf.records)), "length_guard": guard}
