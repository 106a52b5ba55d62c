"""``loadgen data review FILE``: what a reviewer reads and checks in a built qualitative split.

A seeded sample of N prompts per category for a person to read, and the automated checks, one
pass/fail line each (docs/DATASETS.md, "Review"). The build runs the same checks on what it
selected.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from loadgen.data.categorycheck import category_problem
from loadgen.data.contentfilter import defects
from loadgen.data.language import detect_language
from loadgen.data.screen import passage_key
from loadgen.data.select import normalize_text
from loadgen.data.textfmt import TextPrompt

#: The share of a category one source (one prompt template) may hold when another source of it
#: still had candidates (the recipe's ``max_share`` overrides it per source).
DEFAULT_MAX_SHARE = 0.5
MIN_LANGUAGES = 8
MAX_LANGUAGE_SHARE = 0.2
MIN_TASK_TYPES = 3
MIN_SUB_CATEGORIES = 3
NEAR_JACCARD = 0.8
SHINGLE = 5
MIN_CHARS = 24
#: p90 / p10 of a category's prompt lengths at least this (one template of one length fails).
MIN_LENGTH_SPREAD = 1.5


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Review:
    checks: list[Check]
    samples: dict[str, list[TextPrompt]] = field(default_factory=dict)
    lengths: dict[str, dict[str, int]] = field(default_factory=dict)
    languages: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [c.__dict__ for c in self.checks],
                "lengths": self.lengths, "languages": self.languages}


def _by_cat(prompts: list[TextPrompt]) -> dict[str, list[TextPrompt]]:
    out: dict[str, list[TextPrompt]] = defaultdict(list)
    for p in prompts:
        out[p.category].append(p)
    return out


def _text(p: TextPrompt) -> str:
    return "\n".join(p.turns)


def _groups(cats, key) -> list[list[str]]:
    """Groups (ids) of two or more prompts of one category sharing key(p) (None: no key)."""
    out = []
    for ps in cats.values():
        g: dict[str, list[str]] = defaultdict(list)
        for p in ps:
            k = key(p)
            if k is not None:
                g[k].append(p.id)
        out += [ids for ids in g.values() if len(ids) > 1]
    return out


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = normalize_text(text).split()
    return {tuple(w[i:i + SHINGLE]) for i in range(max(1, len(w) - SHINGLE + 1))}


def _near_groups(cats) -> list[list[str]]:
    pairs = []
    for ps in cats.values():
        sh = [_shingles(_text(p)) for p in ps]
        for i in range(len(ps)):
            for j in range(i + 1, len(ps)):
                inter = len(sh[i] & sh[j])
                if inter and inter / len(sh[i] | sh[j]) >= NEAR_JACCARD:
                    pairs.append([ps[i].id, ps[j].id])
    return pairs


def _dup_check(name: str, groups: list[list[str]]) -> Check:
    return Check(name, not groups, f"{len(groups)} groups" + (
        f", e.g. {', '.join(groups[0][:3])}" if groups else ""))


def _share_problems(cats, report: dict[str, Any], caps: dict[str, float]) -> list[str]:
    """Sources above their share of a category while another source had candidates left (the
    header's report says; without one, while another source is in the category)."""
    bad = []
    for cat, ps in cats.items():
        n = len(ps)
        sel = Counter(p.meta.get("source") for p in ps)
        pool = (report.get("categories", {}).get(cat) or {}).get("pool_sources") or {}
        for src, k in sel.items():
            cap = caps.get(src, DEFAULT_MAX_SHARE)
            if k <= max(1, int(cap * n)):
                continue
            left = [s for s, c in pool.items() if s != src and c > sel.get(s, 0)]
            if left or (not pool and len(sel) > 1):  # no report: other sources are there
                bad.append(f"{cat}: {src} {k}/{n} above {cap:.0%}"
                           + (f" while {left[0]} had candidates left" if left else ""))
    return bad


def _lengths(cats) -> dict[str, dict[str, int]]:
    out = {}
    for cat, ps in cats.items():
        ls = sorted(len(_text(p)) for p in ps)
        at = [ls[min(len(ls) - 1, int(f * len(ls)))] for f in (0.1, 0.5, 0.9)]
        out[cat] = {"min": ls[0], "p10": at[0], "median": at[1], "p90": at[2], "max": ls[-1]}
    return out


def review_prompts(prompts: list[TextPrompt], header: dict[str, Any] | None = None,
                   per_category: int = 8, seed: int = 0) -> Review:
    """Every check on ``prompts`` (a built split; ``header`` its file header, if any)."""
    header = header or {}
    report = header.get("report") or {}
    cats = _by_cat(prompts)
    checks: list[Check] = []
    want = (header.get("config") or {}).get("per_category") or report.get("per_category")
    if want:
        short = {c: len(ps) for c, ps in cats.items() if len(ps) < want}
        missing = [c for c in report.get("categories", {}) if c not in cats]
        checks.append(Check("counts", not short and not missing, f"{len(cats)} categories, "
                            f"{want} asked each" + "".join(f"; {c} has {n}" for c, n in
                                                            short.items())
                            + "".join(f"; {c} has none" for c in missing)))
    hits: Counter[str] = Counter()
    first: dict[str, str] = {}
    off: list[str] = []
    for p in prompts:
        for name, text in defects(p.turns, p.category).items():
            hits[name] += 1
            first.setdefault(name, f"{p.id}: {' '.join(text.split())[:80]}")
        why = category_problem(p.category, p.turns, p.system)
        if why:
            off.append(f"{p.id}: {why}")
    checks.append(Check("content_filters", not hits, ", ".join(
        f"{n} {k} (e.g. {first[k]})" for k, n in hits.items()) or "no prompt hits a filter"))
    checks.append(Check("category_meaning", not off, f"{len(off)} prompts off their category"
                        + (f", e.g. {'; '.join(off[:3])}" if off else "")))
    checks.append(_dup_check("exact_duplicates", _groups(
        {"all": prompts}, lambda p: normalize_text(_text(p)))))
    checks.append(_dup_check("task_duplicates", _groups(cats, lambda p: p.meta.get("task"))))
    checks.append(_dup_check("passage_duplicates", _groups(cats, passage_key)))
    checks.append(_dup_check("near_duplicates", _near_groups(cats)))
    caps = {k: float(v) for k, v in (report.get("max_share") or {}).items()}
    bad = _share_problems(cats, report, caps)
    checks.append(Check("source_share", not bad, "; ".join(bad[:4]) or
                        "no source above its share while another had candidates"))
    few = {c: len({p.meta.get("sub_category") for p in ps}) for c, ps in cats.items()}
    few = {c: n for c, n in few.items() if n < MIN_SUB_CATEGORIES and len(cats[c]) >= 10}
    checks.append(Check("sub_tasks", not few, ", ".join(f"{c} has {n}" for c, n in few.items())
                        or f"every category has {MIN_SUB_CATEGORIES}+ sub-categories"))
    langs = {c: Counter(detect_language(_text(p)) for p in ps) for c, ps in cats.items()}
    lang_bad = []
    for c, cnt in langs.items():
        n = sum(cnt.values())
        if c == "multilingual":
            top, k = max(cnt.items(), key=lambda kv: (kv[1], kv[0]))
            if len(cnt) < MIN_LANGUAGES or k > MAX_LANGUAGE_SHARE * n or cnt.get("en"):
                lang_bad.append(f"multilingual: {len(cnt)} languages, {top} {k}/{n}, "
                                f"English {cnt.get('en', 0)}")
        elif c != "coding":
            other = n - cnt.get("en", 0) - cnt.get("und", 0)
            if other:
                lang_bad.append(f"{c}: {other} not English")
    checks.append(Check("language_mix", not lang_bad, "; ".join(lang_bad) or (
        f"multilingual {len(langs.get('multilingual', {}))} languages, each at most "
        f"{MAX_LANGUAGE_SHARE:.0%}; other categories English")))
    if "multilingual" in cats:
        types = {p.meta.get("source") for p in cats["multilingual"]}
        checks.append(Check("multilingual_task_types", len(types) >= MIN_TASK_TYPES,
                            f"{len(types)} task types ({', '.join(sorted(map(str, types)))})"))
    lengths = _lengths(cats)
    flat = [c for c, v in lengths.items() if v["p90"] < MIN_LENGTH_SPREAD * v["p10"]
            and len(cats[c]) >= 10]
    tiny = [p.id for p in prompts if len(_text(p)) < MIN_CHARS]
    checks.append(Check("lengths", not flat and not tiny, (
        f"one length (p90 < {MIN_LENGTH_SPREAD} x p10): {', '.join(flat)}; " if flat else "")
        + (f"{len(tiny)} under {MIN_CHARS} characters" if tiny else
           "every category spreads its lengths")))
    rng = random.Random(seed)
    samples = {c: rng.sample(ps, min(per_category, len(ps))) for c, ps in sorted(cats.items())}
    return Review(checks=checks, samples=samples, lengths=lengths,
                  languages={c: dict(v.most_common()) for c, v in langs.items()})


_WS = re.compile(r"[ \t]+")


def format_checks(rev: Review) -> list[str]:
    lines = [f"{'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in rev.checks]
    lines.append("lengths (characters) per category: min / p10 / median / p90 / max")
    lines += [f"  {c:<14}{v['min']:>7}{v['p10']:>7}{v['median']:>8}{v['p90']:>7}{v['max']:>7}"
              for c, v in sorted(rev.lengths.items())]
    if "multilingual" in rev.languages:
        lines.append("multilingual languages: " + ", ".join(
            f"{k} {n}" for k, n in rev.languages["multilingual"].items()))
    return lines


def format_samples(rev: Review, max_chars: int = 600) -> list[str]:
    lines = []
    for cat, ps in rev.samples.items():
        lines.append(f"=== {cat} ({len(ps)} of the category, seeded sample)")
        for p in ps:
            lines.append(f"--- {p.id}  [{p.meta.get('source')} / {p.meta.get('sub_category')}]")
            for i, t in enumerate(p.turns):
                body = _WS.sub(" ", t.strip())
                if len(body) > max_chars:
                    body = body[: max_chars // 2] + " [...] " + body[-max_chars // 2:]
                lines.append((f"(turn {i + 1}) " if len(p.turns) > 1 else "") + body)
    return lines
