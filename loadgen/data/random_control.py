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
from loadgen.data.tokenizer import REPLY_SENTINEL, ChatTokenizer

METHODS = ("speed-bench", "uniform")


def _normal_ids(tok: ChatTokenizer) -> list[int]:
    special = set(tok.hf.all_special_ids or [])
    added = set(getattr(tok.hf, "added_tokens_decoder", {}) or {})
    return [i for i in range(len(tok.hf)) if i not in special and i not in added]


USER_SENTINEL = "LOADGENUSERSENTINEL"


def later_turn_parts(tok: ChatTokenizer) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the user content of a later turn's ids: what follows a reply
    (end of turn, the user header) and the generation prompt. Empty when the template's parts
    do not concatenate on ids (the whole turn is then random)."""
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": REPLY_SENTINEL},
            {"role": "user", "content": USER_SENTINEL}]
    text = tok.render(msgs, True)
    tail = text[text.rfind(REPLY_SENTINEL) + len(REPLY_SENTINEL):]
    i = tail.find(USER_SENTINEL)
    if i < 0:
        return [], []
    before, after = tok.encode(tail[:i]), tok.encode(tail[i + len(USER_SENTINEL):])
    if before + tok.encode(USER_SENTINEL) + after != tok.encode(tail):
        return [], []
    return before, after


def _body(tok: ChatTokenizer, normal: list[int], method: str, n: int,
          rng: random.Random) -> list[int]:
    vocab = len(normal)
    if method == "uniform":
        return [normal[rng.randrange(vocab)] for _ in range(n)]
    body: list[int] = []
    start = rng.randrange(vocab)
    while len(body) < n:
        span = [normal[(start + j) % vocab] for j in range(n - len(body) + 16)]
        start = (start + len(span)) % vocab
        body.extend(tok.encode(tok.decode(span)))
    return body[:n]


def _framed(tok: ChatTokenizer, normal: list[int], method: str, length: int,
            parts: tuple[list[int], list[int]], rng: random.Random) -> list[int]:
    """``length`` ids: the template ``parts`` around random content (all random when the
    parts do not fit)."""
    before, after = parts
    budget = length - len(before) - len(after)
    if budget < 1:
        return _body(tok, normal, method, length, rng)
    return before + _body(tok, normal, method, budget, rng) + after


def random_like(like: PromptFile, tok: ChatTokenizer, method: str = "speed-bench", seed: int = 0,
                messages: bool = True) -> PromptFile:
    """Random-token records with the input length of every record of ``like`` and of every later
    turn of its multi-turn records (same number of requests, same ids in total)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    first_parts = tok.template_parts()
    later_parts = later_turn_parts(tok) if any(r.turns for r in like.records) else ([], [])
    normal = _normal_ids(tok)
    records: list[PromptRecord] = []
    for n, rec in enumerate(like.records):
        rng = random.Random(f"{seed}:{method}:{n}")
        ids = _framed(tok, normal, method, rec.input_len, first_parts, rng)
        turns = [_framed(tok, normal, method, len(t), later_parts, rng)
                 for t in rec.turns] if rec.turns else None
        assert len(ids) == rec.input_len
        meta: dict[str, Any] = {"method": method, "like_id": rec.id, "isl": rec.input_len,
                                "sub_category": rec.meta.get("sub_category"),
                                "source": "random", "license": "none (generated)"}
        if turns:
            meta["turn_lens"] = [len(t) for t in turns]
        records.append(PromptRecord(id=f"random-{rec.id}", category=rec.category,
                                    prompt_token_ids=ids, turns=turns, max_tokens=rec.max_tokens,
                                    meta=meta))
    if messages:
        def content(ids: list[int], parts: tuple[list[int], list[int]]) -> list[int]:
            before, after = parts
            if len(ids) < len(before) + len(after) + 1:
                return ids
            return ids[len(before): len(ids) - len(after)]

        for r in records:
            texts = tok.hf.batch_decode(
                [content(r.prompt_token_ids, first_parts)]
                + [content(t, later_parts) for t in r.turns or []],
                skip_special_tokens=False, clean_up_tokenization_spaces=False)
            r.messages = [{"role": "user", "content": t} for t in texts]
    header = make_header(**tok.header_fields(), built_by="loadgen data build random",
                         config={"method": method, "like": like.header.get("dataset"),
                                 "like_tokenizer": like.header.get("tokenizer_identity")},
                         seed=seed, dataset="random-control")
    return PromptFile(header=header, records=records)
