"""``loadgen data build random --like FILE``: a random-token control set with the same input
lengths as a real prompt file, so a run can show how much random inputs inflate SD throughput.

Two methods (docs/DATASETS.md, "Random control"):

* ``speed-bench`` (SPEED-Bench's): consecutive vocabulary ids from a random start are decoded to
  text, the text is re-encoded and cut to the length;
* ``uniform``: ids drawn uniformly from the vocabulary without special tokens.

Either way the random ids are the user content of the same chat template, so every record has
exactly the input length of its counterpart in ``--like``.
"""

from __future__ import annotations

import random
from typing import Any

from loadgen.data.prompts import PromptFile, PromptRecord, make_header
from loadgen.data.tokenizer import ChatTokenizer

METHODS = ("speed-bench", "uniform")


def _normal_ids(tok: ChatTokenizer) -> list[int]:
    special = set(tok.hf.all_special_ids or [])
    added = set(getattr(tok.hf, "added_tokens_decoder", {}) or {})
    return [i for i in range(len(tok.hf)) if i not in special and i not in added]


def random_like(like: PromptFile, tok: ChatTokenizer, method: str = "speed-bench", seed: int = 0,
                messages: bool = True) -> PromptFile:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    prefix, suffix = tok.template_parts()
    normal = _normal_ids(tok)
    vocab = len(normal)
    records: list[PromptRecord] = []
    for n, rec in enumerate(like.records):
        rng = random.Random(f"{seed}:{method}:{n}")
        isl = rec.input_len
        budget = isl - len(prefix) - len(suffix)
        wrap = budget >= 1
        if not wrap:
            budget = isl
        if method == "uniform":
            body = [normal[rng.randrange(vocab)] for _ in range(budget)]
        else:
            body = []
            start = rng.randrange(vocab)
            while len(body) < budget:
                span = [normal[(start + j) % vocab] for j in range(budget - len(body) + 16)]
                start = (start + len(span)) % vocab
                body.extend(tok.encode(tok.decode(span)))
            body = body[:budget]
        ids = prefix + body + suffix if wrap else body
        assert len(ids) == isl
        meta: dict[str, Any] = {"method": method, "like_id": rec.id, "isl": isl,
                                "sub_category": rec.meta.get("sub_category"),
                                "source": "random", "license": "none (generated)"}
        records.append(PromptRecord(id=f"random-{rec.id}", category=rec.category,
                                    prompt_token_ids=ids, max_tokens=rec.max_tokens, meta=meta))
    if messages:
        texts = tok.hf.batch_decode([r.prompt_token_ids[len(prefix): r.input_len - len(suffix)]
                                     for r in records], skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
        for r, t in zip(records, texts, strict=True):
            r.messages = [{"role": "user", "content": t}]
    header = make_header(**tok.header_fields(), built_by="loadgen data build random",
                         config={"method": method, "like": like.header.get("dataset"),
                                 "like_tokenizer": like.header.get("tokenizer_identity")},
                         seed=seed, dataset="random-control")
    return PromptFile(header=header, records=records)
