"""Screening the pool before the embedder: content filters, category checks, and duplicates at
the task and passage level (docs/DATASETS.md, "Screening").

1. ``contentfilter.filter_prompt`` on every prompt (with its source's ``document`` pattern):
   repaired or dropped, each class counted with examples.
2. One prompt per task (``meta.task``, from the recipe's ``task`` template: a HumanEval task in
   any language, an MGSM problem in any language, an XQuAD paragraph, a QMSum meeting): the
   members of a task are taken in a seeded order (a hash of seed and prompt id, so no language
   or source wins every task) and the first that passes ``categorycheck.category_problem`` (its
   category's definition) stays; those that fail are counted per category with examples.
3. One prompt per passage: prompts of a category whose longest line (200 characters or more)
   starts the same way share a passage (a BBH story, a RAG passage); a seeded draw keeps one.
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
from loadgen.data.textfmt import TextPrompt, alnum_head

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
    return alnum_head(longest, PASSAGE_KEY_CHARS)


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
    """The pool after content filters, category checks and task/passage dedup; the counts.

    The category check (the slow step: it detects languages) runs on the members of a task
    group in their seeded order until one passes, so a group costs one check, not one a member.
    """
    rep = ScreenReport()
    spec = {s["name"]: s for s in sources}
    clean: list[TextPrompt] = []
    for p in pool:
        src = spec.get(p.meta.get("source"), {})
        min_chars = int(src.get("min_chars", defaults.get("min_chars", 1)))
        turns, fixed, found = filter_prompt(p.turns, p.category, src.get("document"), min_chars)
        for name in fixed:
            rep.filters.note(name, "fixed", p.id, "\n".join(p.turns))
        for name, text in found.items():
            rep.filters.note(name, "dropped", p.id, text)
        if turns is not None:
            p.turns = turns
            clean.append(p)
    groups: dict[tuple[str, str], list[TextPrompt]] = defaultdict(list)
    for p in clean:
        groups[(p.category, p.meta.get("task") or p.id)].append(p)
    off: Counter[str] = Counter()
    task_dups: Counter[str] = Counter()
    winners: set[int] = set()
    for (cat, _), members in groups.items():
        for p in sorted(members, key=lambda p: _rank(seed, p.id)):
            why = category_problem(cat, p.turns, p.system)
            if not why:
                winners.add(id(p))
                task_dups[cat] += len(members) - 1
                break
            off[cat] += 1
            ex = rep.off_category_examples.setdefault(cat, [])
            if len(ex) < EXAMPLES_KEPT:
                ex.append(f"{p.id}: {why}: {' '.join(p.turns[0].split())[:120]}")
    kept = [p for p in clean if id(p) in winners]
    for p in kept:
        if p.category == "multilingual":
            p.meta["lang"] = detect_language("\n".join(p.turns))
    rep.off_category = dict(off)
    rep.task_duplicates = {c: n for c, n in task_dups.items() if n}
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
    for exs in rep["off_category_examples"].values():
        lines += [f"      {e[:150]}" for e in exs]
    by: dict[str, list[str]] = defaultdict(list)
    for what in ("task_duplicates", "passage_duplicates"):
        for c, n in rep[what].items():
            by[c].append(f"{n} {what.split('_')[0]}")
    lines.append("task/passage duplicates dropped: " + (", ".join(
        f"{c} {' + '.join(v)}" for c, v in by.items()) or "none"))
    return lines


def thin(prompts: list[TextPrompt], limit: int, seed: int) -> tuple[list[TextPrompt], int]:
    """At most ``limit`` prompts of one category, shared out over its sources: small sources
    keep every prompt, the largest are cut to an equal quota by a seeded draw (the embedder then
    reads a pool the size of the choice, not of the kit). Also: how many were left out."""
    by_src: dict[str, list[TextPrompt]] = defaultdict(list)
    for p in prompts:
        by_src[p.meta.get("source", "")].append(p)
    if len(prompts) <= limit:
        return prompts, 0
    sizes = sorted(len(v) for v in by_src.values())
    quota, left, n_left = limit, limit, len(sizes)
    for size in sizes:  # water-filling: every source below the quota keeps all
        quota = left // n_left
        if size > quota:
            break
        left -= size
        n_left -= 1
    keep: set[int] = set()
    for ps in by_src.values():
        if len(ps) > quota:
            ps = sorted(ps, key=lambda p: _rank(seed, p.id))[:quota]
        keep.update(id(p) for p in ps)
    out = [p for p in prompts if id(p) in keep]
    return out, len(prompts) - len(out)
