"""``loadgen data build throughput``: long-context prompts of EXACTLY the target input length in
the target tokenizer, after the chat template (docs/DATASETS.md, "Length fitting").

Each prompt is assembled on token ids, never decoded and re-encoded:

    template prefix | lead-in | context (the remaining budget) | instruction | template suffix

The template prefix/suffix come from rendering the chat template around a sentinel user message
(ChatTokenizer.template_parts). The instruction sits at the end and is never truncated: only the
context is cut to fit. Contexts are windows of pre-tokenized documents, starting at a line start.

Three entropy tiers, two kinds each (as in SPEED-Bench):

* low_entropy: ``code`` (rewrite/annotate source code) and ``sorting`` (sort lines of text);
* mixed: ``needle`` (a needle sentence hidden at a seeded depth of a long text) and ``fewshot``
  (exam questions with answers, then one unanswered question);
* high_entropy: ``creative`` (continue a literary text) and ``dialogue_summary`` (summarize meeting
  transcripts).

Deterministic for a seed: each prompt draws from ``random.Random(f"{seed}:{isl}:{kind}:{i}")``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadgen.data.prompts import PromptFile, PromptRecord, make_header
from loadgen.data.sources import default_data_root, read_bytes_text, read_file_records
from loadgen.data.throughput_spec import (
    CORPORA,
    INSTRUCTIONS,
    KIND_CORPUS,
    LEAD_IN,
    TIERS,
    tier_counts,
)
from loadgen.data.tokenizer import ChatTokenizer

__all__ = ["INSTRUCTIONS", "TIERS", "ThroughputBuilder", "build_throughput", "parse_isl",
           "tier_counts"]

def parse_isl(text: str) -> tuple[str, int]:
    """``1k`` -> ("1k", 1000) as in SPEED-Bench's configs; plain integers are taken as they are."""
    t = text.strip().lower()
    m = re.fullmatch(r"(\d+)k", t)
    if m:
        return t, int(m.group(1)) * 1000
    if t.isdigit():
        return t, int(t)
    raise ValueError(f"bad ISL {text!r}: use e.g. 1k, 2k, 32k or a number of tokens")


@dataclass
class Corpus:
    """A token stream made of whole documents, with the positions where a line starts."""

    name: str
    ids: list[int]
    line_starts: list[int]
    docs: list[tuple[int, str]]  # (offset, doc id)
    licenses: dict[str, str]


def _doc_texts(root: Path, spec: str) -> list[tuple[str, str]]:
    """(doc id, text) for one corpus spec ``glob`` or ``file.jsonl:field``."""
    import glob

    path_part, _, field = spec.partition(":")
    out: list[tuple[str, str]] = []
    files = sorted(glob.glob(str(root / path_part)))
    if not files:
        raise FileNotFoundError(f"{root / path_part}: missing (data root {root})")
    for f in files:
        p = Path(f)
        rel = str(p.relative_to(root))
        if not field:
            out.append((rel, read_bytes_text(p)))
            continue
        for rec in read_file_records(p, rel, {"skip_bad_lines": True}):
            if field == "transcript":
                text = "\n".join(f"{t['speaker']}: {t['content']}"
                                  for t in rec["meeting_transcripts"])
            else:
                text = rec.get(field) or ""
            if text:
                out.append((f"{rel}#{rec['_index']}", text))
    return out


class DocumentStore:
    """Pre-tokenized corpora for one tokenizer, cached on disk by tokenizer and file content."""

    def __init__(self, tok: ChatTokenizer, root: Path):
        self.tok = tok
        self.root = root
        self._corpora: dict[str, Corpus] = {}
        self._shots: list[tuple[str, list[int]]] | None = None
        self._lines: tuple[list[list[int]], dict[str, str]] | None = None
        vocab_ids = range(len(tok.hf))
        pieces = tok.hf.convert_ids_to_tokens(list(vocab_ids))
        nl = set()
        for i, piece in enumerate(pieces):
            if piece is None:
                continue
            if "\n" in piece or "Ċ" in piece or "<0x0A>" in piece:
                nl.add(i)
        self.newline_ids = nl

    def corpus(self, name: str) -> Corpus:
        if name in self._corpora:
            return self._corpora[name]
        from loadgen.cache import cache_dir, publish_text

        docs: list[tuple[str, str]] = []
        licenses: dict[str, str] = {}
        for spec, lic, origin in CORPORA[name]:
            got = _doc_texts(self.root, spec)
            docs.extend(got)
            licenses[origin] = lic
        h = hashlib.sha256(self.tok.identity()["vocab_sha256"].encode())
        for did, text in docs:
            h.update(did.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
        cache = cache_dir("throughput-docs") / f"{name}-{h.hexdigest()[:24]}.json"
        if cache.exists():
            enc = json.loads(cache.read_text())
        else:
            enc = self.tok.encode_batch([t for _, t in docs])
            publish_text(cache, json.dumps(enc))
        sep = self.tok.encode("\n\n")
        ids: list[int] = []
        offsets: list[tuple[int, str]] = []
        for (did, _), e in zip(docs, enc, strict=True):
            offsets.append((len(ids), did))
            ids.extend(e)
            ids.extend(sep)
        nl = self.newline_ids
        starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t in nl]
        c = Corpus(name=name, ids=ids, line_starts=starts, docs=offsets, licenses=licenses)
        self._corpora[name] = c
        return c

    def shots(self) -> list[tuple[str, list[int]]]:
        """(shot id, ids) of every exam item (``_shots``), tokenized once per store."""
        if self._shots is None:
            shots = _shots(self.root)
            enc = self.tok.encode_batch([t for _, t in shots])
            self._shots = list(zip([s for s, _ in shots], enc, strict=True))
        return self._shots

    def lines(self) -> tuple[list[list[int]], dict[str, str]]:
        """The ids of each line of the sorting corpus (longer than 8 characters), and its
        licenses; tokenized once per store."""
        if self._lines is None:
            c = self.corpus("lines")
            text = read_bytes_text(self.root / "long/tinyshakespeare.txt")
            kept = [ln for ln in text.split("\n") if len(ln.strip()) > 8]
            self._lines = (self.tok.encode_batch([ln + "\n" for ln in kept]), c.licenses)
        return self._lines

    def window(self, c: Corpus, n: int, rng: random.Random) -> tuple[list[int], int]:
        """n ids of the corpus from a random line start (wrapping around if needed)."""
        import bisect

        limit = len(c.ids) - n
        cands_end = bisect.bisect_right(c.line_starts, limit) if limit > 0 else 1
        start = c.line_starts[rng.randrange(max(1, cands_end))]
        if start + n <= len(c.ids):
            return c.ids[start:start + n], start
        out = c.ids[start:]
        while len(out) < n:
            out = out + c.ids[: n - len(out)]
        return out[:n], start

    def doc_at(self, c: Corpus, offset: int) -> str:
        import bisect

        i = bisect.bisect_right([o for o, _ in c.docs], offset) - 1
        return c.docs[max(0, i)][1]


def _shots(root: Path) -> list[tuple[str, str]]:
    """(shot id, "Question ... Answer: X\\n\\n") exam items: MMLU-Redux and GSM8K."""
    import ast
    import glob

    out: list[tuple[str, str]] = []
    for f in sorted(glob.glob(str(root / "prompts/mmlu_redux/*.csv"))):
        p = Path(f)
        for rec in read_file_records(p, str(p.relative_to(root)), {}):
            try:
                choices = ast.literal_eval(rec["choices"])
                ans = "ABCDEFGHIJ"[int(rec["answer"])]
            except (ValueError, SyntaxError, KeyError, IndexError):
                continue
            opts = "\n".join(f"{'ABCDEFGHIJ'[i]}. {c}" for i, c in enumerate(choices))
            out.append((f"{p.stem}-{rec['_index']}",
                        f"Question: {rec['question']}\n{opts}\nAnswer: {ans}\n\n"))
    p = root / "prompts/gsm8k_test.jsonl"
    if p.exists():
        for rec in read_file_records(p, "prompts/gsm8k_test.jsonl", {}):
            final = rec["answer"].split("####")[-1].strip()
            out.append((f"gsm8k-{rec['_index']}",
                        f"Question: {rec['question']}\nAnswer: {final}\n\n"))
    return out


class ThroughputBuilder:
    def __init__(self, tok: ChatTokenizer, data_root: str | Path | None = None, seed: int = 0,
                 system: str | None = None, store: DocumentStore | None = None):
        """``store``: the tokenized documents of another builder with the same tokenizer and
        data root (they do not depend on the seed or system prompt)."""
        root = Path(data_root) if data_root else default_data_root()
        if root is None or not root.exists():
            raise FileNotFoundError(
                "the throughput builder needs the long-document kit: pass --data-root or set "
                "LOADGEN_DATA_ROOT (../shared/data beside the checkout is used when present)")
        self.tok, self.root, self.seed = tok, root, seed
        if store is not None and (store.tok is not tok or store.root != root):
            raise ValueError("a shared document store needs the same tokenizer and data root")
        self.store = store or DocumentStore(tok, root)
        self.prefix, self.suffix = tok.template_parts(system)
        self.system = system
        self._lead = {k: tok.encode(v) for k, v in LEAD_IN.items()}
        self._instr = {k: [tok.encode("\n\n" + s) for s in v] for k, v in INSTRUCTIONS.items()}

    # ----- context makers: return (ids, provenance) of exactly n ids ---------------------------
    def _ctx_window(self, kind: str, n: int, rng: random.Random):
        c = self.store.corpus(KIND_CORPUS[kind])
        ids, start = self.store.window(c, n, rng)
        return ids, {"corpus": c.name, "doc": self.store.doc_at(c, start), "offset": start,
                     "licenses": c.licenses}

    def _ctx_sorting(self, n: int, rng: random.Random):
        lines, licenses = self.store.lines()
        out: list[int] = []
        while len(out) < n:
            out.extend(lines[rng.randrange(len(lines))])
        return out[:n], {"corpus": "lines", "doc": "long/tinyshakespeare.txt",
                         "licenses": licenses}

    def _ctx_needle(self, n: int, rng: random.Random):
        code = f"{rng.choice(['AMBER', 'COBALT', 'JUNIPER', 'SAFFRON', 'TUNDRA', 'VIOLET'])}-" \
               f"{rng.randrange(1000, 9999)}"
        needle = self.tok.encode(f"The secret code is {code}.\n")
        hay, prov = self._ctx_window("needle", n - len(needle), rng)
        depth = rng.random()
        target = int(depth * len(hay))
        nl = self.store.newline_ids
        pos = next((i + 1 for i in range(target, len(hay)) if hay[i] in nl), len(hay))
        ids = hay[:pos] + needle + hay[pos:]
        prov.update({"needle": code, "needle_depth": round(pos / max(1, len(ids)), 4)})
        return ids, prov

    def _ctx_fewshot(self, n: int, rng: random.Random):
        pool = self.store.shots()
        out: list[list[int]] = []
        used: list[str] = []
        total = 0
        while total < n:
            sid, ids = pool[rng.randrange(len(pool))]
            out.append(ids)
            used.append(sid)
            total += len(ids)
        flat = [t for ids in out for t in ids]
        return flat[len(flat) - n:], {"corpus": "exam", "shots": len(used),
                                      "licenses": {"aryopg/mmlu-redux": "CC-BY-4.0",
                                                   "openai/grade-school-math": "MIT"}}

    # ----- prompts -------------------------------------------------------------------------
    def _question(self, rng: random.Random) -> tuple[list[int], str]:
        """The unanswered few-shot question: the instruction at the end of the prompt."""
        shots = self.store.shots()
        sid, ids = shots[rng.randrange(len(shots))]
        text = self.tok.decode(ids)
        q = text.rsplit("Answer:", 1)[0] + "Answer:"
        return self.tok.encode("\n\n" + INSTRUCTIONS["fewshot"][0] + "\n\n" + q), sid

    def prompt(self, kind: str, isl: int, label: str, i: int) -> PromptRecord:
        rng = random.Random(f"{self.seed}:{isl}:{kind}:{i}")
        lead = self._lead[kind]
        if kind == "fewshot":
            instr, qid = self._question(rng)
            instr_text = None
        else:
            j = rng.randrange(len(self._instr[kind]))
            instr, qid = self._instr[kind][j], None
            instr_text = INSTRUCTIONS[kind][j]
        budget = isl - len(self.prefix) - len(lead) - len(instr) - len(self.suffix)
        if budget < 16:
            raise ValueError(f"ISL {isl} is too small for a {kind} prompt "
                             f"({isl - budget} ids of template and instruction)")
        maker = {"sorting": self._ctx_sorting, "needle": self._ctx_needle,
                 "fewshot": self._ctx_fewshot}.get(kind)
        ctx, prov = maker(budget, rng) if maker else self._ctx_window(kind, budget, rng)
        ids = self.prefix + lead + ctx + instr + self.suffix
        assert len(ids) == isl, (kind, len(ids), isl)
        tier = next(t for t, kinds in TIERS.items() if kind in kinds)
        licenses = prov.pop("licenses")
        meta: dict[str, Any] = {
            "sub_category": kind, "isl": isl, "source": prov.get("corpus"),
            "license": "; ".join(sorted(set(licenses.values()))), "origins": licenses,
            "original_id": prov.get("doc") or qid, "instruction_len": len(instr) + len(self.suffix),
            **{k: v for k, v in prov.items() if k not in ("corpus", "doc")},
        }
        if qid:
            meta["question_id"] = qid
        if instr_text:
            meta["instruction"] = instr_text
        return PromptRecord(id=f"throughput_{label}-{tier}-{kind}-{i:04d}", category=tier,
                            prompt_token_ids=ids, meta=meta)

    def build(self, isl: int, label: str, per_tier: int, messages: bool = True) -> PromptFile:
        """``per_tier`` prompts in each of the 3 tiers for this ISL (split over its kinds)."""
        counts = tier_counts(per_tier)
        kinds = list(counts)
        records = [self.prompt(k, isl, label, i) for k in kinds for i in range(counts[k])]
        if messages:
            n_sys = len(self.prefix)
            n_tail = len(self.suffix)
            bodies = [r.prompt_token_ids[n_sys: len(r.prompt_token_ids) - n_tail] for r in records]
            texts = self.tok.hf.batch_decode(bodies, skip_special_tokens=False,
                                              clean_up_tokenization_spaces=False)
            for r, t in zip(records, texts, strict=True):
                r.messages = ([{"role": "system", "content": self.system}] if self.system
                              else []) + [{"role": "user", "content": t}]
        header = make_header(
            **self.tok.header_fields(), built_by="loadgen data build throughput",
            config={"isl": isl, "isl_label": label, "per_tier": per_tier, "counts": counts,
                    "data_root": str(self.root), "system": self.system,
                    "template_prefix_len": len(self.prefix),
                    "template_suffix_len": len(self.suffix)},
            seed=self.seed, dataset=f"throughput_{label}")
        return PromptFile(header=header, records=records)


def build_throughput(tok: ChatTokenizer, isls: list[str], per_tier: int, out: str | Path,
                     seed: int = 0, data_root: str | Path | None = None, fmt: str = "parquet",
                     messages: bool = True, system: str | None = None, log=None) -> dict[str, Any]:
    """Write one file per ISL (``throughput_<label>.<fmt>``) into ``out``; returns timings."""
    from loadgen.data.prompts import write_prompts

    out = Path(out)
    builder = ThroughputBuilder(tok, data_root, seed=seed, system=system)
    report: dict[str, Any] = {}
    for spec in isls:
        label, isl = parse_isl(spec)
        t0 = time.perf_counter()
        pf = builder.build(isl, label, per_tier, messages=messages)
        t1 = time.perf_counter()
        target = out if out.suffix in (".jsonl", ".parquet", ".gz") and len(isls) == 1 \
            else out / f"throughput_{label}.{fmt}"
        write_prompts(target, pf.records, pf.header)
        t2 = time.perf_counter()
        report[label] = {"file": str(target), "prompts": len(pf.records), "isl": isl,
                         "per_tier": per_tier, "kinds": pf.header["config"]["counts"],
                         "build_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2)}
        if log:
            log(f"throughput_{label}: {len(pf.records)} prompts of {isl} ids -> {target} "
                f"(build {t1 - t0:.1f}s, write {t2 - t1:.1f}s)")
    return report
