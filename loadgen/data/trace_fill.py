"""Real text for trace rows: token ids of an exact length, cut from a pool tokenized once.

The pool (docs/DATASETS.md, "Traces: the fill"): per category of the qualitative recipe, its
prompts from the data kit in a seeded order, joined by blank lines, then the kit's long plain-text
documents (so a long input continues into real long text instead of repeating itself). Each
category's stream is tokenized once with the target tokenizer (cached on disk by tokenizer and
text) and requests are cut from it as id windows starting at a line start no earlier request
started at: no request is tokenized on its own, no id is random, and two requests share
tokens at the same positions only where the trace's hash ids say so.

Prefix blocks (Mooncake ``hash_ids``): the first request that uses a hash id fixes that block's
tokens (the window of its own category at that block's position); every later request with the
same hash id carries the same tokens there, so a prefix cache sees the trace's reuse.
"""

from __future__ import annotations

import glob
import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadgen.data.tokenizer import ChatTokenizer

# the kit's long plain-text documents, after every category's own prompts
LONG_TEXTS = ("long/canterbury/*.txt", "long/tinyshakespeare.txt", "long/code/*.txt")
MAX_CATEGORY_CHARS = 2_000_000  # of each category's prompt text (the rest is not needed)


def parse_mix(text: str, categories: list[str]) -> dict[str, float]:
    """``coding=0.3,rag=0.2`` -> weights normalised to 1 (categories of the recipe only)."""
    mix: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, w = part.partition("=")
        name = name.strip()
        if name not in categories:
            raise ValueError(f"--category-mix: {name!r} is not a category "
                             f"({', '.join(categories)})")
        try:
            weight = float(w) if sep else 1.0
        except ValueError:
            raise ValueError(f"--category-mix: {part!r}: the weight is not a number") from None
        if not weight >= 0 or weight == float("inf"):
            raise ValueError(f"--category-mix: {part!r}: the weight must be >= 0")
        if name in mix:
            raise ValueError(f"--category-mix: {name} is given twice")
        mix[name] = weight
    top = max(mix.values(), default=0.0)
    if top <= 0:
        raise ValueError("--category-mix: the weights add up to 0")
    scaled = {k: v / top for k, v in mix.items()}  # <= 1 each: their sum cannot overflow
    total = sum(scaled.values())
    return {k: v / total for k, v in scaled.items() if v > 0}


@dataclass
class Stream:
    """One category's ids (its prompts, then the shared long text) and its prompt starts."""

    name: str
    own: np.ndarray
    starts: np.ndarray  # line starts (after a newline token) in a seeded order
    used: int = 0  # how many of ``starts`` windows began at


class TextPool:
    """The token streams of the categories of a mix, for one tokenizer."""

    def __init__(self, tok: ChatTokenizer, root: Path, categories: list[str], seed: int = 0,
                 log=None) -> None:
        from loadgen.data.qualitative import collect_pool

        self.tok = tok
        _, _, prompts, sources = collect_pool("qualitative", root, seed, categories, log)
        # source -> license of every source the text came from (kept in the file's header)
        self.licenses = {s["name"]: s["license"] for s in sources if "skipped" not in s}
        self.licenses["long documents"] = "see the data kit's MANIFEST.md (long/)"
        by_cat: dict[str, list[str]] = {c: [] for c in categories}
        for p in prompts:
            by_cat[p.category].append("\n\n".join(p.turns))
        long_texts = []
        for pattern in LONG_TEXTS:
            for f in sorted(glob.glob(str(root / pattern))):
                long_texts.append(Path(f).read_text(encoding="utf-8", errors="replace"))
        if not long_texts:
            raise FileNotFoundError(f"{root}: none of {', '.join(LONG_TEXTS)} (the data kit's "
                                    f"long documents)")
        self.long = self._ids("long", ["\n\n".join(long_texts)])[0]
        pieces = tok.hf.convert_ids_to_tokens(list(range(len(tok.hf))))
        newline = np.array([i for i, p in enumerate(pieces)
                            if p is not None and ("\n" in p or "Ċ" in p or "<0x0A>" in p)],
                           dtype=np.int32)
        self.streams: dict[str, Stream] = {}
        for cat in categories:
            texts = by_cat[cat]
            if not texts:
                raise ValueError(f"category {cat!r} has no prompts in the data kit at {root}")
            random.Random(f"{seed}:{cat}").shuffle(texts)
            kept, size = [], 0
            for t in texts:
                kept.append(t + "\n\n")
                size += len(t) + 2
                if size >= MAX_CATEGORY_CHARS:
                    break
            own, _ = self._ids(cat, kept)
            after_nl = np.flatnonzero(np.isin(own[:-1], newline)) + 1
            starts = np.random.default_rng([seed, len(own)]).permutation(after_nl)
            self.streams[cat] = Stream(cat, own, starts)

    def _ids(self, name: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``texts`` tokenized once (cached by tokenizer identity and text): all their ids in
        one array, and each text's length."""
        from loadgen.cache import cache_dir, publish_file

        h = hashlib.sha256(self.tok.identity()["vocab_sha256"].encode())
        for t in texts:
            h.update(hashlib.sha256(t.encode()).digest())
        path = cache_dir("trace-pool") / f"{name}-{h.hexdigest()[:24]}.npz"
        if path.exists():
            with np.load(path) as z:
                return z["ids"], z["lens"]
        enc = self.tok.encode_batch(texts)
        lens = np.array([len(e) for e in enc], dtype=np.int64)
        flat = np.fromiter((t for e in enc for t in e), dtype=np.int32, count=int(lens.sum()))
        publish_file(path, lambda tmp: np.savez(tmp, ids=flat, lens=lens))
        return flat, lens

    def total(self, cat: str) -> int:
        return len(self.streams[cat].own) + len(self.long)

    def cut(self, cat: str, start: int, n: int) -> np.ndarray:
        """``n`` ids of ``cat``'s stream from ``start`` (the stream wraps around only past its
        end: its prompts and the long text, millions of ids)."""
        s = self.streams[cat]
        own, long = s.own, self.long
        size = len(own) + len(long)
        out = np.empty(n, dtype=np.int32)
        pos, done = start % size, 0
        while done < n:
            if pos < len(own):
                take = min(n - done, len(own) - pos)
                out[done:done + take] = own[pos:pos + take]
            else:
                lp = pos - len(own)
                take = min(n - done, len(long) - lp)
                out[done:done + take] = long[lp:lp + take]
            done += take
            pos = (pos + take) % size
        return out

    def start(self, cat: str, rng: np.random.Generator) -> int:
        """Where ``cat``'s next window begins: a line start of its prompts never used before
        (in a seeded order), so two requests share tokens only where their hash ids say so;
        once every line start is used, a random offset."""
        s = self.streams[cat]
        if s.used < len(s.starts):
            s.used += 1
            return int(s.starts[s.used - 1])
        return int(rng.integers(len(s.own)))


class BlockFiller:
    """Ids of requests with prefix blocks: a hash id's tokens are fixed by its first use."""

    def __init__(self, pool: TextPool, block: int) -> None:
        self.pool = pool
        self.block = block
        self.where: dict[int, tuple[str, int]] = {}  # hash id -> (category, stream offset)

    def fill(self, hash_ids: list[int], n: int, cat: str,
             start: int) -> tuple[np.ndarray, int, int, int]:
        """(``n`` ids, its blocks, those whose hash id came before, the tokens in them): block
        k holds the tokens of ``hash_ids[k]``; a new hash id takes ``cat``'s stream at
        ``start + k * block``."""
        out = np.empty(n, dtype=np.int32)
        reused = blocks = seen = 0
        b = self.block
        for k, h in enumerate(hash_ids):
            lo = k * b
            if lo >= n:
                break
            size = min(b, n - lo)
            blocks += 1
            got = self.where.get(h)
            if got is None:
                got = self.where[h] = (cat, start + lo)
            else:
                seen += 1
                reused += size
            out[lo:lo + size] = self.pool.cut(got[0], got[1], size)
        return out, blocks, seen, reused
