"""Screening the pool before the embedder: content filters, category checks, and duplicates at
the task and passage level (docs/DATASETS.md, "Screening").

1. ``contentfilter.filter_prompt`` on every prompt (with its source's ``document`` pattern):
   repaired or dropped, each class counted with examples.
2. ``categorycheck.category_problem``: prompts that do not meet their category's definition are
   dropped, counted per category with examples.
3. One prompt per task (``meta.task``, from the recipe's ``task`` template: a HumanEval task in
   any language, an MGSM problem in any language, an XQuAD paragraph, a QMSum meeting), then one
   per passage (prompts of a category whose longest line, 200 characters or more, starts the same
   way share a passage: a BBH story, a RAG passage). Which member of a group stays is a seeded
   draw (a hash of seed and prompt id), so no language or source wins every group.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadgen.data.categorycheck import category_problem
from loadgen.data.contentfilter import FilterReport, filter_prompt
from loadgen.data.language import detect_language
from loadgen.data.textfmt import TextPrompt

PASSAGE_MIN = 200
PASSAGE_KEY_CHARS = 160
EXAMPLES_KEPT = 3


def passage_key(p: TextPrompt) -> str | None:
    """The first 160 letters and digits of the prompt's longest line, when that line is a
    passage (200 characters or more); None otherwise."""
    lines = [ln for t in p.turns for ln in t.split("\n")]
    longest = max(lines, key=len, default="")
    if len(longest) < PASSAGE_MIN:
        return None
    return "".join(ch for ch in longest.lower() if ch.isalnum())[:PASSAGE_KEY_CHARS]


def _rank(seed: int, pid: str) -> str:
    return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest()


def one_per_group(prompts: list[TextPrompt], key, seed: int) -> tuple[list[TextPrompt],
                                                                      dict[str, int]]:
    """Keep one prompt per (category, key(p)) group (a seeded draw); prompts whose key is None
    all stay. Also: the number dropped per category."""
    best: dict[tuple[str, str], TextPrompt] = {}
    for p in prompts:
        k = key(p)
        if k is None:
            continue
        g = (p.category, k)
        if g not in best or _rank(seed, p.id) < _rank(seed, best[g].id):
            best[g] = p
    winners = {id(p) for p in best.values()}
    kept = [p for p in prompts if key(p) is None or id(p) in winners]
    dropped = Counter(p.category for p in prompts if key(p) is not None and id(p) not in winners)
    return kept, dict(dropped)


@dataclass
class ScreenReport:
    filters: FilterReport = field(default_factory=FilterReport)
    off_category: dict[str, int] = field(default_factory=dict)
    off_category_examples: dict[str, list[str]] = field(default_factory=dict)
    task_duplicates: dict[str, int] = field(default_factory=dict)
    passage_duplicates: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"filters": self.filters.to_dict(), "off_category": self.off_category,
                "off_category_examples": self.off_category_examples,
                "task_duplicates": self.task_duplicates,
                "passage_duplicates": self.passage_duplicates}


def screen_pool(pool: list[TextPrompt], sources: list[dict[str, Any]], defaults: dict[str, Any],
                seed: int = 0) -> tuple[list[TextPrompt], ScreenReport]:
    """The pool after content filters, category checks and task/passage dedup; the counts."""
    rep = ScreenReport()
    spec = {s["name"]: s for s in sources}
    kept: list[TextPrompt] = []
    off: Counter[str] = Counter()
    for p in pool:
        src = spec.get(p.meta.get("source"), {})
        min_chars = int(src.get("min_chars", defaults.get("min_chars", 1)))
        turns, fixed, found = filter_prompt(p.turns, p.category, src.get("document"), min_chars)
        for name in fixed:
            rep.filters.note(name, "fixed", p.id, "\n".join(p.turns))
        for name, text in found.items():
            rep.filters.note(name, "dropped", p.id, text)
        if turns is None:
            continue
        p.turns = turns
        why = category_problem(p.category, turns)
        if why:
            off[p.category] += 1
            ex = rep.off_category_examples.setdefault(p.category, [])
            if len(ex) < EXAMPLES_KEPT:
                ex.append(f"{p.id}: {why}: {' '.join(turns[0].split())[:120]}")
            continue
        if p.category == "multilingual":
            p.meta["lang"] = detect_language("\n".join(turns))
        kept.append(p)
    rep.off_category = dict(off)
    kept, rep.task_duplicates = one_per_group(kept, lambda p: p.meta.get("task"), seed)
    kept, rep.passage_duplicates = one_per_group(kept, passage_key, seed)
    return kept, rep


_WS = re.compile(r"\s+")


def format_screen(rep: dict[str, Any]) -> list[str]:
    """The screening part of the build report, as lines."""
    lines = ["content filters (dropped / repaired):"]
    for name, v in rep["filters"].items():
        lines.append(f"  {name:<20}{v['dropped']:>6}{v['fixed']:>6}")
        lines += [f"      {_WS.sub(' ', e)[:150]}" for e in v["examples"]]
    off = rep["off_category"]
    lines.append("off-category (dropped by the category checks): " + (", ".join(
        f"{c} {n}" for c, n in off.items()) or "none"))
    for c, exs in rep["off_category_examples"].items():
        lines += [f"      {e[:150]}" for e in exs]
    by: dict[str, list[str]] = defaultdict(list)
    for what in ("task_duplicates", "passage_duplicates"):
        for c, n in rep[what].items():
            by[c].append(f"{n} {what.split('_')[0]}")
    lines.append("task/passage duplicates dropped: " + (", ".join(
        f"{c} {' + '.join(v)}" for c, v in by.items()) or "none"))
    return lines
