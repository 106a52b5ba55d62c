"""The lossless check: with greedy sampling SD must not change outputs (docs/METRICS.md,
"Lossless check").

In a sweep with a baseline, every SD cell is paired with the baseline cell of the same dataset,
load level and repetition. Each prompt (``prompt_id``, ``turn``) whose output token ids both
cells kept (``keep_token_ids``; the first ok record of it in each cell) is compared: it
**diverges** when the two id sequences differ, at the **first divergent position** (0-based:
the first index where the ids differ, or the shorter length when one is a prefix of the other).
Counted per (dataset, SD configuration, category) over all load levels and repetitions, and
"all". A divergence is a warning, not a failure: batched numerics can flip a near-tie.
Sampled runs (temperature > 0) are not checked.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from loadgen.results.records import iter_run_records
from loadgen.results.sweepdir import Cell, Sweep

EXAMPLES = 5  # divergent prompts listed per row


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first index where ``a`` and ``b`` differ (the shorter length when one is a prefix
    of the other); None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _outputs(sweep: Sweep, cell: Cell) -> dict[tuple[str, int], tuple[str, list[int]]]:
    out: dict[tuple[str, int], tuple[str, list[int]]] = {}
    for r in iter_run_records(sweep.cell_dir(cell)):
        key = (r["prompt_id"], r["turn"])
        if r["status"] == "ok" and r.get("token_ids") is not None and key not in out:
            out[key] = (r["category"], r["token_ids"])
    return out


def lossless(sweep: Sweep) -> dict[str, Any]:
    """``{"checked", "reason", "rows", "warnings"}``; rows per (dataset, sd, category)."""
    run = sweep.config.get("run") or {}
    if not any(c.baseline for c in sweep.cells):
        return {"checked": False, "reason": "no baseline (SD off) in this sweep", "rows": [],
                "warnings": []}
    if float(run.get("temperature") or 0) > 0:
        return {"checked": False, "reason": "sampled outputs (temperature > 0)", "rows": [],
                "warnings": []}
    done = [c for c in sweep.cells if c.status == "complete"]
    base = {(c.dataset, c.load_level, c.repeat): c for c in done if c.baseline}
    acc: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"compared": 0, "diverged": 0, "positions": [], "examples": []})
    cache: dict[str, dict[tuple[str, int], tuple[str, list[int]]]] = {}

    def outputs(c: Cell) -> dict[tuple[str, int], tuple[str, list[int]]]:
        if c.id not in cache:
            cache[c.id] = _outputs(sweep, c)
        return cache[c.id]

    for c in done:
        b = base.get((c.dataset, c.load_level, c.repeat))
        if c.baseline or b is None:
            continue
        mine, theirs = outputs(c), outputs(b)
        for key, (cat, ids) in mine.items():
            if key not in theirs:
                continue
            pos = first_divergence(ids, theirs[key][1])
            for group in (cat, "all"):
                a = acc[(c.dataset, c.sd, group)]
                a["compared"] += 1
                if pos is not None:
                    a["diverged"] += 1
                    a["positions"].append(pos)
                    if len(a["examples"]) < EXAMPLES:
                        a["examples"].append({"prompt_id": key[0], "turn": key[1],
                                              "load_level": c.load_level, "position": pos})
    rows = []
    for (dataset, sd, cat), a in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                       kv[0][2] != "all",
                                                                       kv[0][2])):
        pos = a.pop("positions")
        rows.append({"dataset": dataset, "sd": sd, "category": cat, **a,
                     "first_divergence_min": min(pos) if pos else None})
    warnings = [f"{r['dataset']} {r['sd']}: {r['diverged']} of {r['compared']} greedy outputs "
                f"differ from the baseline's (first at token {r['first_divergence_min']})"
                for r in rows if r["category"] == "all" and r["diverged"]]
    if not rows:
        return {"checked": False, "reason": "no output token ids kept (run: keep_token_ids)",
                "rows": [], "warnings": []}
    return {"checked": True, "reason": None, "rows": rows, "warnings": warnings}
