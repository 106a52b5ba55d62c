"""Category fit: does a prompt read like its own category's description more than any other's?

Each category of a recipe has one or more descriptions. They are embedded with the embedder the
build already loaded; a prompt's score for a category is its best cosine similarity to that
category's descriptions, and the prompt *fits* when its own category scores highest. The build
report gives, per category, the share of chosen prompts that fit and which other categories the
rest fit better (docs/DATASETS.md, "Category fit").
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def description_matrix(embed, descriptions: dict[str, list[str]]) -> tuple[np.ndarray, list[str]]:
    """(unit vectors of every description, the category of each row)."""
    texts: list[str] = []
    owners: list[str] = []
    for cat, descs in descriptions.items():
        for d in descs:
            texts.append(d)
            owners.append(cat)
    return np.asarray(embed(texts), dtype=np.float32), owners


def category_scores(E: np.ndarray, D: np.ndarray, owners: list[str],
                    cats: list[str]) -> np.ndarray:
    """(len(E), len(cats)): per prompt, the best similarity to each category's descriptions."""
    sims = E.astype(np.float32) @ D.T
    out = np.full((len(E), len(cats)), -np.inf, dtype=np.float32)
    for r, cat in enumerate(owners):
        c = cats.index(cat)
        out[:, c] = np.maximum(out[:, c], sims[:, r])
    return out


def fit_report(scores: np.ndarray, own: list[str], cats: list[str]) -> dict[str, dict[str, Any]]:
    """Per category: chosen prompts, the share whose best-scoring category is their own, and the
    categories the others fit better."""
    best = [cats[int(i)] for i in np.argmax(scores, axis=1)] if len(scores) else []
    out: dict[str, dict[str, Any]] = {}
    for cat in dict.fromkeys(own):
        rows = [i for i, c in enumerate(own) if c == cat]
        hits = sum(best[i] == cat for i in rows)
        out[cat] = {"fit": round(hits / len(rows), 4) if rows else float("nan"),
                    "fit_count": hits,
                    "fits_better": dict(Counter(best[i] for i in rows
                                                if best[i] != cat).most_common())}
    return out


def prompt_fit(scores_row: np.ndarray, own: str, cats: list[str]) -> dict[str, Any]:
    """What a prompt's meta records: its best category and the margin of its own over the best
    other category (negative when another category fits better)."""
    c = cats.index(own)
    others = np.delete(scores_row, c)
    return {"best": cats[int(np.argmax(scores_row))],
            "margin": round(float(scores_row[c] - (others.max() if len(others) else 0.0)), 4)}
