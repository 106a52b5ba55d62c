"""Duplicate removal and the diversity selection (minimum mean pairwise cosine similarity).

For unit vectors e_1..e_k with sum s, the sum of pairwise similarities is (|s|^2 - k) / 2, so the
mean pairwise cosine similarity of a subset is

    f(S) = (|s|^2 - k) / (k (k - 1)).

Minimising f is minimising the norm of the subset's sum vector. The selection:

1. greedy start: a seeded random first item, then repeatedly the item i with the smallest s.e_i
   (each step is the exact best single addition);
2. swap local search: for every member j and non-member i the change of |s|^2 when i replaces j is
   2 s.e_i - 2 s.e_j + 2 - 2 e_i.e_j (all unit vectors); the best improving swap is applied until
   none
   improves (or ``max_swaps``). Each pass is one (n x k) matrix product, so a category of 5,000
   candidates and k = 80 takes milliseconds per pass.

Deterministic for a seed (ties break on the lowest index).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import numpy as np


def mean_pairwise(E: np.ndarray, idx: list[int] | np.ndarray) -> float:
    k = len(idx)
    if k < 2:
        return float("nan")
    s = E[np.asarray(idx)].sum(axis=0, dtype=np.float64)
    sq = float(np.sum(np.linalg.norm(E[np.asarray(idx)].astype(np.float64), axis=1) ** 2))
    return (float(s @ s) - sq) / (k * (k - 1))


def random_baseline(E: np.ndarray, k: int, seed: int, draws: int = 32) -> tuple[float, float]:
    """Mean and standard deviation of f over ``draws`` uniform random k-subsets."""
    n = len(E)
    if n < 2 or k < 2:
        return float("nan"), float("nan")
    k = min(k, n)
    rng = np.random.default_rng(seed)
    vals = [mean_pairwise(E, rng.choice(n, size=k, replace=False)) for _ in range(draws)]
    return float(np.mean(vals)), float(np.std(vals))


def _incidence(groups: list[Any] | None, n: int, caps: dict[str, int]):
    """(rows x labels bool matrix, each label's cap): a row may carry one label or a tuple."""
    rows = [(g,) if isinstance(g, str) else tuple(g) for g in (groups or [()] * n)]
    labels = sorted({lab for r in rows for lab in r})
    col = {lab: i for i, lab in enumerate(labels)}
    M = np.zeros((n, max(1, len(labels))), dtype=bool)
    for i, r in enumerate(rows):
        for lab in r:
            M[i, col[lab]] = True
    cap = np.array([caps.get(lab, n) for lab in labels] or [n], dtype=np.int64)
    return M, cap


def select_diverse(E: np.ndarray, k: int, seed: int = 0, max_swaps: int = 2000,
                   groups: list[Any] | None = None,
                   caps: dict[str, int] | None = None) -> list[int]:
    """Indices of a k-subset of the rows of E (unit vectors) with low mean pairwise similarity.

    ``groups`` (one label, or a tuple of labels, per row: its source, its language...) and
    ``caps`` (label -> most members) bound how many members a label may hold (a recipe's
    ``max_share``); fewer than k come back when the caps allow fewer.
    """
    n = len(E)
    caps = caps or {}
    if not caps and k >= n:
        return list(range(n))
    if k <= 0 or n == 0:
        return []
    E = E.astype(np.float64, copy=False)
    M, cap = _incidence(groups, n, caps)
    Mi = M.astype(np.int64)
    count = np.zeros(len(cap), dtype=np.int64)
    rng = np.random.default_rng(seed)
    in_set = np.zeros(n, dtype=bool)

    def room() -> np.ndarray:  # rows all of whose labels have room
        return ~np.any(M & (count >= cap)[None, :], axis=1)

    open_rows = np.flatnonzero(room())
    if not len(open_rows):
        return []
    first = int(open_rows[int(rng.integers(len(open_rows)))])
    chosen = [first]
    in_set[first] = True
    count += Mi[first]
    s = E[first].copy()
    scores = E @ s
    while len(chosen) < k:
        masked = np.where(in_set | ~room(), np.inf, scores)
        j = int(np.argmin(masked))
        if not np.isfinite(masked[j]):
            break  # the caps allow no more
        chosen.append(j)
        in_set[j] = True
        count += Mi[j]
        s += E[j]
        scores += E @ E[j]
    members = np.array(chosen)
    for _ in range(max_swaps):
        sc = E @ s
        cand = np.flatnonzero(~in_set)
        if not len(cand):
            break
        cross = E[cand] @ E[members].T  # (n - k, k)
        delta = 2.0 * sc[cand][:, None] - 2.0 * sc[members][None, :] + 2.0 - 2.0 * cross
        if caps:  # i may replace j if every full label of i is also one of j's
            full = Mi[cand] * (count >= cap)[None, :]
            ok = (full @ (1 - Mi[members]).T) == 0
            delta = np.where(ok, delta, np.inf)
        flat = int(np.argmin(delta))
        a, b = divmod(flat, len(members))
        if delta[a, b] >= -1e-9:
            break
        i, j = int(cand[a]), int(members[b])
        s += E[i] - E[j]
        in_set[i], in_set[j] = True, False
        count += Mi[i] - Mi[j]
        members[b] = i
    return sorted(int(m) for m in members)


_WS = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize_text(text: str) -> str:
    """Key for exact duplicates: NFKC, case-folded, punctuation dropped, whitespace collapsed."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return _WS.sub(" ", _PUNCT.sub(" ", t)).strip()


def exact_duplicates(texts: list[str]) -> list[int | None]:
    """For each text, the index of an earlier text with the same normalised form (or None)."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, t in enumerate(texts):
        key = normalize_text(t)
        if key in first:
            out.append(first[key])
        else:
            first[key] = i
            out.append(None)
    return out


def near_duplicates(E: np.ndarray, threshold: float, block: int = 2048) -> list[int | None]:
    """For each row, an earlier kept row with cosine >= threshold (or None). Greedy keep-first."""
    n = len(E)
    out: list[int | None] = [None] * n
    kept: list[int] = []
    kept_mat = np.zeros((0, E.shape[1]), dtype=E.dtype)
    for start in range(0, n, block):
        chunk = E[start:start + block]
        prev = chunk @ kept_mat.T if len(kept) else np.zeros((len(chunk), 0), dtype=E.dtype)
        inner = chunk @ chunk.T
        keep_mask = np.zeros(len(chunk), dtype=bool)
        for r in range(len(chunk)):
            if prev.shape[1]:
                j = int(np.argmax(prev[r]))
                if prev[r, j] >= threshold:
                    out[start + r] = kept[j]
                    continue
            hits = np.flatnonzero((inner[r, :r] >= threshold) & keep_mask[:r])
            if len(hits):
                out[start + r] = start + int(hits[0])
                continue
            keep_mask[r] = True
        local_kept = [int(q) for q in np.flatnonzero(keep_mask)]
        kept.extend(start + q for q in local_kept)
        kept_mat = E[np.array(kept)] if kept else kept_mat
    return out


def summarize(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}
