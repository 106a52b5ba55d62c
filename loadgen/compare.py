"""``loadgen compare A B``: two runs side by side, B − A with bootstrap confidence intervals.

docs/COMPARE.md defines every statistic, the resampling methods and what "significant" means.
In short:

- Per-request statistics (means, percentiles, per-request AL) are recomputed from each run's
  ``requests.jsonl`` (ok, measured requests, as in ``loadgen/metrics.py``) and bootstrapped by
  resampling requests with replacement. A resample is a vector of counts (how many times each
  request was drawn), so every statistic of one resample is a weighted statistic of the original
  values: means are matrix products, percentiles are exact weighted order statistics (numpy's
  linear interpolation on the resampled values), the pooled per-token ITL percentiles use the
  per-request histograms of ITL on a fine grid of the pooled distribution's quantiles.
- Window throughput (output tokens/s, requests/s) is not a per-request quantity: the window is
  cut into K equal time blocks at least one median request long, and blocks are resampled with
  replacement (a non-overlapping block bootstrap of the token arrival process).
- A and B are resampled independently (different streams of one seed). The CI of B − A is the
  percentile interval of the replicate differences; a difference is significant when it excludes
  0. Counter-based numbers (the server's AL over the window) are one aggregate each: compared,
  never given a CI.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadgen.analysis.metrics import e2e_ms, per_user_tokens_per_s, tpot_ms, ttft_ms

DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95
DEFAULT_MIN_REQUESTS = 10
TAIL_MIN = 5  # a percentile p needs at least this many values above it: n·(1 − p) >= 5
MIN_BLOCKS = 10
MAX_BLOCKS = 400
CHUNK = 256  # resamples per vectorised batch (bounds memory: CHUNK × requests counts)
QUANTS = {"p50": 0.50, "p90": 0.90, "p99": 0.99}
LATENCY = ("ttft", "tpot", "itl", "e2e")
# Keys of manifest.json's config that define the load and the work, checked for comparability.
LOAD_KEYS = ("concurrency", "request_rate", "arrival", "burstiness", "max_concurrency")


class CompareError(ValueError):
    """A run directory that cannot be read."""


# --------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------

@dataclass
class RunData:
    path: Path
    label: str
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None
    records: list[dict[str, Any]]
    measured: list[dict[str, Any]] = field(default_factory=list)
    ok: list[dict[str, Any]] = field(default_factory=list)
    # Per ok request (aligned with ``ok``); NaN where a request has no value.
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tpot: np.ndarray = field(default_factory=lambda: np.zeros(0))
    e2e: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_user: np.ndarray = field(default_factory=lambda: np.zeros(0))
    al: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tokens: np.ndarray = field(default_factory=lambda: np.zeros(0))
    category: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    # Pooled per-token ITL at event granularity: value g/n, weight n, owning request.
    itl_val: np.ndarray = field(default_factory=lambda: np.zeros(0))
    itl_w: np.ndarray = field(default_factory=lambda: np.zeros(0))
    itl_req: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def config(self) -> dict[str, Any]:
        return (self.manifest or {}).get("config") or {}

    @property
    def engine(self) -> str | None:
        return self.config.get("engine")


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CompareError(f"{path}: not valid JSON ({exc})") from exc


def load_run(path: Path | str, label: str | None = None) -> RunData:
    """Read a run directory (or a sweep cell's directory, which is one)."""
    path = Path(path)
    if path.is_file() and path.name in ("summary.json", "manifest.json", "requests.jsonl"):
        path = path.parent
    req = path / "requests.jsonl"
    if not path.is_dir() or not req.exists():
        raise CompareError(f"{path}: not a run directory (no requests.jsonl)")
    records = []
    with open(req, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                # a crash can leave a torn last line; anything else is corruption
                if fh.readline():
                    raise CompareError(f"{req}:{n}: not valid JSON") from None
    run = RunData(path=path, label=label or path.name or str(path),
                  manifest=_read_json(path / "manifest.json"),
                  summary=_read_json(path / "summary.json"), records=records)
    run.measured = [r for r in records if not r.get("warmup")]
    run.ok = [r for r in run.measured if r.get("status") == "ok"]
    _extract(run)
    return run


def _nan(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _extract(run: RunData) -> None:
    ok = run.ok
    run.ttft = np.array([ttft_ms(r) for r in ok], dtype=float)
    run.e2e = np.array([e2e_ms(r) for r in ok], dtype=float)
    run.tpot = np.array([_nan(tpot_ms(r)) for r in ok], dtype=float)
    run.per_user = np.array([_nan(per_user_tokens_per_s(r)) for r in ok], dtype=float)
    run.al = np.array([_nan(r.get("acceptance_length") or None) for r in ok], dtype=float)
    run.tokens = np.array([r["output_tokens"] for r in ok], dtype=float)
    run.category = np.array([r["category"] for r in ok], dtype=object)
    # ITL (docs/METRICS.md): an event bringing n tokens after a gap g adds n values g/n.
    lens = np.array([len(r["arrivals_ns"]) for r in ok], dtype=np.int64)
    if lens.sum() == 0:
        return
    arr = np.concatenate([np.asarray(r["arrivals_ns"], dtype=np.int64) for r in ok])
    ntok = np.concatenate([np.asarray(r["event_tokens"], dtype=np.int64) for r in ok])
    req = np.repeat(np.arange(len(ok)), lens)
    gap = np.diff(arr, prepend=arr[0]) / 1e6
    keep = np.ones(arr.size, dtype=bool)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    keep[starts[lens > 0]] = False  # a request's first event has no gap
    keep &= ntok > 0
    run.itl_val = gap[keep] / ntok[keep]
    run.itl_w = ntok[keep]
    run.itl_req = req[keep]


# --------------------------------------------------------------------------------------------
# Bootstrap machinery
# --------------------------------------------------------------------------------------------

def resample_counts(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``size`` bootstrap resamples of n units, as counts: row b, column i = how many times
    unit i was drawn in resample b (each row sums to n)."""
    dt = np.int32 if size * n < 2**31 else np.int64
    idx = rng.integers(0, n, size=(size, n), dtype=dt)
    idx += (np.arange(size, dtype=dt) * n)[:, None]
    counts = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n)
    # small integers: uint8 halves the memory traffic of the gathers and sums that follow
    return counts.astype(np.uint8 if counts.max() < 256 else np.int32)


def weighted_quantiles(sorted_vals: np.ndarray, counts: np.ndarray,
                       qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles of each resample, exactly as ``np.percentile`` (linear interpolation) on the
    resampled values: ``sorted_vals`` ascending, ``counts`` (b, n) multiplicities in that order.
    Returns (b, len(qs)); NaN for an empty resample."""
    b, n = counts.shape
    # One cumulative sum over the flattened rows is nondecreasing, so a single searchsorted
    # finds, for every row at once, the first position whose running count exceeds a rank.
    flat = np.cumsum(counts.ravel(), dtype=np.int32 if counts.size * int(counts.max(
        initial=0)) < 2**31 else np.int64)
    row_end = flat[n - 1::n]
    base = np.concatenate([[0], row_end[:-1]])
    total = row_end - base
    offset = np.arange(b, dtype=np.int64) * n
    out = np.full((b, len(qs)), np.nan)
    good = total > 0
    for j, q in enumerate(qs):
        h = (total - 1) * q
        k = np.floor(h)
        frac = h - k
        k = k.astype(flat.dtype)
        base_k = (base + k).astype(flat.dtype)  # same dtype: searchsorted must not copy flat
        # the value at 0-based rank k of row r is sorted_vals[#(running count <= k)]
        j0 = np.minimum(np.searchsorted(flat, base_k, side="right") - offset, n - 1)
        j1 = np.minimum(np.searchsorted(flat, base_k + 1, side="right") - offset, n - 1)
        v0, v1 = sorted_vals[j0], sorted_vals[j1]
        out[good, j] = (v0 + frac * (v1 - v0))[good]
    return out


class _PooledQuantiles:
    """Percentiles of a pooled per-token distribution (ITL) whose resampling unit is the
    request.

    The pooled values are cut into bins; row i of H is request i's histogram (tokens per bin),
    so a resample's pooled histogram is counts @ H (one matrix product per batch). Bins: every
    1% of the pooled distribution, and around each target level q (±4 standard errors of the
    level, counting each request as one value: where a resample's quantile falls) one bin per
    distinct value or, when there are more distinct values than the budget allows, a grid of
    equally spaced levels. The quantile then follows numpy's rule (linear interpolation between
    the order statistics at ranks ⌊(N−1)q⌋ and the next), where the value at a rank inside a bin
    is spread evenly between the smallest and largest value the bin holds. Where every bin near
    the target holds one distinct value (runs with up to ~10^4 distinct values near it) this is
    exact; otherwise the bins are ~0.1% of the tokens wide and the error is far below the
    bootstrap spread (tests/test_compare.py checks both). Budget: requests × bins <= CELLS."""

    CELLS = 4_000_000

    def __init__(self, val: np.ndarray, w: np.ndarray, req: np.ndarray, n_req: int,
                 qs: tuple[float, ...], sorted_vals: np.ndarray, sorted_w: np.ndarray) -> None:
        sv, sw = sorted_vals, sorted_w
        total = int(sw.sum())
        cumw = np.cumsum(sw)
        budget = int(np.clip(self.CELLS // max(n_req, 1), 300, 5_000))
        per_q = max((budget - 101) // max(len(qs), 1), 10)
        parts = [weighted_quantiles(sv, sw[None, :], tuple(np.linspace(0, 1, 101)))[0],
                 sv[:1], sv[-1:]]
        for q in qs:
            # ±4 standard errors of the quantile's level with each request counted as one
            # value (the most clustered case): where a resample's quantile can fall
            half = min(max(4 * math.sqrt(q * (1 - q) / max(n_req, 1)), 0.002), 0.2)
            lo_l, hi_l = max(q - half, 0.0), min(q + half, 1.0)
            i0 = int(np.searchsorted(cumw, lo_l * total, side="left"))
            i1 = int(np.searchsorted(cumw, hi_l * total, side="right")) + 1
            window = np.unique(sv[i0:i1])
            if window.size > per_q:
                window = weighted_quantiles(sv, sw[None, :],
                                            tuple(np.linspace(lo_l, hi_l, per_q)))[0]
            parts.append(window)
        self.edges = np.unique(np.concatenate(parts))
        nb = self.edges.size
        # bin j holds the values in [edges[j], edges[j+1]); the last one the maximum
        sbin = np.searchsorted(self.edges, sv, side="right") - 1
        first = np.searchsorted(sbin, np.arange(nb), side="left")
        last = np.searchsorted(sbin, np.arange(nb), side="right") - 1
        filled = last >= first
        self.lo = self.edges.copy()
        self.hi = self.edges.copy()
        self.lo[filled] = sv[first[filled]]
        self.hi[filled] = sv[last[filled]]
        b = np.searchsorted(self.edges, val, side="right") - 1
        dtype = np.float32 if total < 2**24 else np.float64  # float32 sums of ints are exact
        self.hist = np.bincount(req * nb + b, weights=w, minlength=n_req * nb).reshape(
            n_req, nb).astype(dtype)
        self.qs = qs

    def _at_rank(self, mass: np.ndarray, cum: np.ndarray, r: np.ndarray) -> np.ndarray:
        rows = np.arange(mass.shape[0])
        j = np.minimum((cum <= r[:, None]).sum(axis=1), mass.shape[1] - 1)
        prev = np.where(j > 0, cum[rows, np.maximum(j - 1, 0)], 0.0)
        m = mass[rows, j]
        pos = np.where(m > 1, (r - prev) / np.where(m > 1, m - 1, 1), 0.0)
        return self.lo[j] + np.clip(pos, 0, 1) * (self.hi[j] - self.lo[j])

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        mass = (counts.astype(self.hist.dtype) @ self.hist).astype(np.float64)
        cum = np.cumsum(mass, axis=1)
        total = cum[:, -1]
        out = np.full((counts.shape[0], len(self.qs)), np.nan)
        for j, q in enumerate(self.qs):
            h = np.maximum(total - 1, 0) * q
            k = np.floor(h)
            frac = h - k
            v0 = self._at_rank(mass, cum, k)
            v1 = self._at_rank(mass, cum, np.minimum(k + 1, np.maximum(total - 1, 0)))
            out[:, j] = v0 + frac * (v1 - v0)
        out[total <= 0] = np.nan
        return out


@dataclass
class Estimate:
    """One statistic of one run: its value, its bootstrap replicates (None: no CI) and why."""

    value: float | None
    reps: np.ndarray | None = None
    reason: str | None = None
    n: int | None = None


@dataclass
class Spec:
    key: str
    group: str
    label: str
    unit: str
    better: str | None  # "higher", "lower" or None
    method: str


def _q_ok(n_values: int, q: float) -> bool:
    return n_values * (1 - q) >= TAIL_MIN


def run_estimates(run: RunData, resamples: int, rng_requests: np.random.Generator,
                  rng_blocks: np.random.Generator, min_requests: int,
                  categories: list[str]) -> dict[str, Estimate]:
    """Every statistic of one run, with bootstrap replicates where a CI is possible."""
    est: dict[str, Estimate] = {}
    n = len(run.ok)
    # (keys, f(counts, linear functionals of the counts) -> (b, len(keys)) replicates)
    fns: list[tuple[list[str], Callable[[np.ndarray, np.ndarray], np.ndarray]]] = []
    # Every mean and ratio is a ratio of linear functionals Σ_i count_i · w_i: one matrix
    # product per batch of resamples computes them all.
    lin_cols: list[np.ndarray] = []

    def linear(rows: np.ndarray, weights: np.ndarray) -> int:
        w = np.zeros(n)
        w[rows] = weights
        lin_cols.append(w)
        return len(lin_cols) - 1

    few = f"only {n} ok request(s) in {run.label} (a CI needs >= {min_requests})"

    def per_request(prefix: str, values: np.ndarray, mask: np.ndarray | None = None,
                    stats: tuple[str, ...] = ("mean", "p50", "p90", "p99")) -> None:
        sel = np.flatnonzero(~np.isnan(values) if mask is None else mask & ~np.isnan(values))
        vals = values[sel]
        order = np.argsort(vals, kind="stable")
        cols, svals = sel[order], vals[order]
        nv = int(sel.size)
        boot_keys: list[str] = []
        for s in stats:
            key = f"{prefix}.{s}"
            if nv == 0:
                est[key] = Estimate(None, n=0, reason=f"no ok requests in {run.label}" if n == 0
                                    else f"no values in {run.label}")
                continue
            value = float(vals.mean()) if s == "mean" else float(np.percentile(vals, QUANTS[s]
                                                                                 * 100))
            e = Estimate(value, n=nv)
            if nv < min_requests:
                e.reason = (f"only {nv} value(s) in {run.label} (a CI needs >= {min_requests})")
            elif s != "mean" and not _q_ok(nv, QUANTS[s]):
                e.reason = (f"{nv} values in {run.label}: a {s} CI needs >= "
                            f"{math.ceil(TAIL_MIN / (1 - QUANTS[s]))}")
            else:
                boot_keys.append(key)
            est[key] = e
        if not boot_keys:
            return
        qs = tuple(QUANTS[k.rsplit(".", 1)[1]] for k in boot_keys if not k.endswith(".mean"))
        want_mean = any(k.endswith(".mean") for k in boot_keys)

        # a mean is a ratio of two linear functionals of the counts (zero outside the subset)
        i_sum, i_cnt = linear(sel, vals), linear(sel, np.ones(sel.size))

        def fn(c: np.ndarray, lin: np.ndarray) -> np.ndarray:
            parts = []
            if want_mean:
                with np.errstate(invalid="ignore", divide="ignore"):
                    parts.append((lin[:, i_sum] / lin[:, i_cnt])[:, None])
            if qs:
                parts.append(weighted_quantiles(svals, np.take(c, cols, axis=1), qs))
            return np.hstack(parts)

        ordered = [k for k in boot_keys if k.endswith(".mean")] + [
            k for k in boot_keys if not k.endswith(".mean")]
        fns.append((ordered, fn))

    per_request("per_user_tokens_per_s", run.per_user, stats=("mean", "p50"))
    per_request("ttft_ms", run.ttft)
    per_request("tpot_ms", run.tpot)
    per_request("e2e_ms", run.e2e)

    # ITL: pooled over tokens, resampled by request.
    ntok = int(run.itl_w.sum())
    if ntok == 0:
        for s in ("mean", "p50", "p90", "p99"):
            est[f"itl_ms.{s}"] = Estimate(None, reason=f"no ITL values in {run.label}", n=0)
    else:
        # the pooled per-token values, as sorted event values with multiplicities
        order = np.argsort(run.itl_val, kind="stable")
        sv, sw = run.itl_val[order], run.itl_w[order]
        point = dict(zip(QUANTS, weighted_quantiles(sv, sw[None, :], tuple(QUANTS.values()))[0],
                         strict=True))
        point["mean"] = float((sv * sw).sum() / ntok)
        itl_keys = []
        for s in ("mean", "p50", "p90", "p99"):
            e = Estimate(float(point[s]), n=ntok)
            if n < min_requests:
                e.reason = few
            elif s != "mean" and not _q_ok(ntok, QUANTS[s]):
                e.reason = f"{ntok} ITL values in {run.label}: too few for a {s} CI"
            else:
                itl_keys.append(s)
            est[f"itl_ms.{s}"] = e
        if itl_keys:
            everyone = np.arange(n)
            i_sum = linear(everyone, np.bincount(run.itl_req, weights=run.itl_val * run.itl_w,
                                                 minlength=n))
            i_cnt = linear(everyone, np.bincount(run.itl_req, weights=run.itl_w, minlength=n))
            qs = tuple(QUANTS[s] for s in itl_keys if s != "mean")
            pq = (_PooledQuantiles(run.itl_val, run.itl_w, run.itl_req, n, qs, sv, sw)
                  if qs else None)

            def itl_fn(c: np.ndarray, lin: np.ndarray) -> np.ndarray:
                parts = []
                if "mean" in itl_keys:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        parts.append((lin[:, i_sum] / lin[:, i_cnt])[:, None])
                if pq is not None:
                    parts.append(pq(c))
                return np.hstack(parts)

            fns.append(([f"itl_ms.{s}" for s in itl_keys if s == "mean"]
                        + [f"itl_ms.{s}" for s in itl_keys if s != "mean"], itl_fn))

    # Per-request AL: token-weighted (Σtokens / Σ(tokens/AL)) and request-weighted.
    def al_stats(key_tw: str, key_rw: str | None, mask: np.ndarray, what: str) -> None:
        keys = [key_tw] + ([key_rw] if key_rw else [])
        sel = np.flatnonzero(mask & ~np.isnan(run.al) & (run.al > 0))
        if sel.size == 0:
            for k in keys:
                est[k] = Estimate(None, reason=f"no per-request AL {what}in {run.label}", n=0)
            return
        tok, al = run.tokens[sel], run.al[sel]
        steps = tok / al
        est[key_tw] = Estimate(float(tok.sum() / steps.sum()), n=int(sel.size))
        if key_rw:
            est[key_rw] = Estimate(float(al.mean()), n=int(sel.size))
        if sel.size < min_requests:
            for k in keys:
                est[k].reason = (f"only {sel.size} request(s) with AL {what}in {run.label} "
                                 f"(a CI needs >= {min_requests})")
            return

        i_tok, i_steps = linear(sel, tok), linear(sel, steps)
        i_al, i_cnt = linear(sel, al), linear(sel, np.ones(sel.size))

        def fn(c: np.ndarray, lin: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                cols = [lin[:, i_tok] / lin[:, i_steps]]
                if key_rw:
                    cols.append(lin[:, i_al] / lin[:, i_cnt])
            return np.column_stack(cols)

        fns.append((keys, fn))

    al_stats("al_per_request.token_weighted", "al_per_request.request_weighted",
             np.ones(n, dtype=bool), "")
    for cat in categories:
        mask = run.category == cat
        if not mask.any():
            for key in (f"category.{cat}.al", f"category.{cat}.tpot_ms.p50"):
                est[key] = Estimate(None, reason=f"no ok {cat!r} requests in {run.label}", n=0)
            continue
        al_stats(f"category.{cat}.al", None, mask, f"for {cat!r} ")
        per_request(f"category.{cat}.tpot_ms", run.tpot, mask, stats=("p50",))

    # Resample requests: one stream of count vectors feeds every per-request statistic.
    reps: dict[str, list[np.ndarray]] = {k: [] for keys, _ in fns for k in keys}
    lin_matrix = np.column_stack(lin_cols) if lin_cols else None
    if fns and n > 0:
        done = 0
        while done < resamples:
            b = min(CHUNK, resamples - done)
            c = resample_counts(rng_requests, n, b)
            lin = c @ lin_matrix if lin_matrix is not None else np.zeros((b, 0))
            for keys, f in fns:
                out = f(c, lin)
                for j, k in enumerate(keys):
                    reps[k].append(out[:, j])
            done += b
    for k, parts in reps.items():
        est[k].reps = np.concatenate(parts)

    est.update(throughput_estimates(run, resamples, rng_blocks))

    # Counter-based: one aggregate per run, no CI.
    acc = (run.summary or {}).get("acceptance") or {}
    why = "server counters over the window: one aggregate number per run, no resampling unit"
    for key, name in (("al_counters", "acceptance_length"), ("acceptance_rate",
                                                             "acceptance_rate")):
        v = acc.get(name)
        est[key] = Estimate(None if v is None else float(v),
                            reason=why if v is not None else
                            f"no {name.replace('_', ' ')} from server counters in {run.label}")
    return est


def throughput_estimates(run: RunData, resamples: int,
                         rng: np.random.Generator) -> dict[str, Estimate]:
    """Window throughput with a non-overlapping block bootstrap over time (docs/COMPARE.md)."""
    keys = ("output_tokens_per_s", "requests_per_s")
    win = (run.summary or {}).get("window") or {}
    if "start_ns" not in win or "end_ns" not in win:
        return {k: Estimate(None, reason=f"no summary.json window in {run.label}")
                for k in keys}
    start, end = int(win["start_ns"]), int(win["end_ns"])
    dur = max((end - start) / 1e9, 1e-9)
    arr = [np.asarray(r["arrivals_ns"], dtype=np.int64) for r in run.records
           if r.get("arrivals_ns")]
    tok = [np.asarray(r["event_tokens"], dtype=np.int64) for r in run.records
           if r.get("arrivals_ns")]
    t = np.concatenate(arr) if arr else np.zeros(0, dtype=np.int64)
    k = np.concatenate(tok) if tok else np.zeros(0, dtype=np.int64)
    inwin = (t >= start) & (t <= end)
    t, k = t[inwin], k[inwin]
    ends = np.array([r["end_ns"] for r in run.ok], dtype=np.int64)
    ends = ends[(ends >= start) & (ends <= end)]
    point = {"output_tokens_per_s": float(k.sum()) / dur, "requests_per_s": ends.size / dur}
    out = {key: Estimate(point[key]) for key in keys}
    med_e2e = float(np.median(run.e2e)) / 1e3 if run.e2e.size else math.nan
    if win.get("includes_drain"):
        reason = (f"{run.label}'s window includes the drain (all requests sent at once): no "
                  f"steady state to resample")
    elif not math.isfinite(med_e2e) or med_e2e <= 0:
        reason = f"no ok requests in {run.label} to set the block length"
    else:
        nblocks = min(int(dur // med_e2e), MAX_BLOCKS)
        if nblocks < MIN_BLOCKS:
            reason = (f"{run.label}'s window ({dur:.2f} s) holds {nblocks} block(s) of one "
                      f"median request ({med_e2e:.3f} s); a CI needs >= {MIN_BLOCKS}")
        else:
            reason = None
            blen = (end - start) / nblocks
            bt = np.clip(((t - start) // blen).astype(np.int64), 0, nblocks - 1)
            be = np.clip(((ends - start) // blen).astype(np.int64), 0, nblocks - 1)
            x = np.bincount(bt, weights=k, minlength=nblocks)
            y = np.bincount(be, minlength=nblocks).astype(float)
            idx = rng.integers(0, nblocks, size=(resamples, nblocks))
            out["output_tokens_per_s"].reps = x[idx].sum(axis=1) / dur
            out["requests_per_s"].reps = y[idx].sum(axis=1) / dur
            for e in out.values():
                e.n = nblocks
    if reason:
        for e in out.values():
            e.reason = reason
    return out


# --------------------------------------------------------------------------------------------
# Comparability
# --------------------------------------------------------------------------------------------

def comparability(a: RunData, b: RunData) -> tuple[list[str], list[str]]:
    """(warnings: the runs may not measure the same thing; notes: differences that are fine
    but worth saying)."""
    warnings: list[str] = []
    notes: list[str] = []
    for r in (a, b):
        if r.manifest is None:
            warnings.append(f"{r.label}: no manifest.json, so dataset, load and output length "
                            f"cannot be checked")
        if r.summary is None:
            warnings.append(f"{r.label}: no summary.json (interrupted?): throughput and counter "
                            f"AL are missing")
        status = (r.manifest or {}).get("status")
        if status and status != "complete":
            warnings.append(f"{r.label}: run status is {status!r}")
        bad = [x for x in r.measured if x.get("status") != "ok"]
        if bad:
            warnings.append(f"{r.label}: {len(bad)} of {len(r.measured)} measured requests did "
                            f"not complete (statistics use the ok ones only)")
        for w in (r.summary or {}).get("warnings") or []:
            warnings.append(f"{r.label}: {w}")
    ma, mb = a.manifest or {}, b.manifest or {}
    da, db = ma.get("dataset") or {}, mb.get("dataset") or {}
    if a.manifest and b.manifest:
        sa, sb = da.get("sha256"), db.get("sha256")
        if sa and sb and sa != sb:
            warnings.append(f"different datasets: sha256 {sa[:12]}… vs {sb[:12]}… "
                            f"({da.get('path')} vs {db.get('path')})")
        elif not (sa and sb):
            notes.append("dataset sha256 missing in at least one manifest: cannot check that "
                         "the prompt files are identical")
        ha, hb = da.get("header") or {}, db.get("header") or {}
        for key in ("tokenizer", "chat_template_sha256"):
            if ha.get(key) != hb.get(key) and (ha.get(key) or hb.get(key)):
                warnings.append(f"different {key} in the datasets' headers: "
                                f"{ha.get(key)!r} vs {hb.get(key)!r}")
    # What was actually sent: prompts and their token counts.
    pa = Counter((r["prompt_id"], r.get("turn", 0)) for r in a.measured)
    pb = Counter((r["prompt_id"], r.get("turn", 0)) for r in b.measured)
    if pa and pb and pa != pb:
        common = sum((pa & pb).values())
        warnings.append(f"the runs sent different prompts: {common} of {sum(pa.values())} "
                        f"(A) / {sum(pb.values())} (B) measured requests in common; latency "
                        f"and AL depend on the prompts")
    la = {(r["prompt_id"], r.get("turn", 0)): r["input_tokens"] for r in a.measured}
    lb = {(r["prompt_id"], r.get("turn", 0)): r["input_tokens"] for r in b.measured}
    diff_len = [k for k in la.keys() & lb.keys() if la[k] != lb[k] and k[1] == 0]
    if diff_len:
        k = diff_len[0]
        warnings.append(f"{len(diff_len)} prompt(s) have different input token counts (e.g. "
                        f"{k[0]!r}: {la[k]} vs {lb[k]}): different input token ids")
    ca, cb = a.config, b.config
    if a.manifest and b.manifest:
        if ca.get("output_len") != cb.get("output_len"):
            warnings.append(f"different output length: {ca.get('output_len')} vs "
                            f"{cb.get('output_len')}")
        ea = {(r["prompt_id"], r.get("turn", 0)): r["expected_tokens"] for r in a.measured}
        eb = {(r["prompt_id"], r.get("turn", 0)): r["expected_tokens"] for r in b.measured}
        if ca.get("output_len") == cb.get("output_len") and any(
                ea[k] != eb[k] for k in ea.keys() & eb.keys()):
            warnings.append("the same prompts asked for different output lengths")
        rate_mode = ca.get("request_rate") is not None or cb.get("request_rate") is not None
        keys = LOAD_KEYS if rate_mode else ("concurrency",)
        load_a = {k: ca.get(k) for k in keys}
        load_b = {k: cb.get(k) for k in keys}
        if load_a != load_b:
            def fmt(d: dict[str, Any]) -> str:
                return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None) or "?"
            warnings.append(f"different load: {fmt(load_a)} vs {fmt(load_b)}")
        if ca.get("warmup_requests") != cb.get("warmup_requests"):
            notes.append(f"different warm-up: {ca.get('warmup_requests')} vs "
                         f"{cb.get('warmup_requests')} requests")
        if (ca.get("num_requests"), ca.get("duration_s")) != (cb.get("num_requests"),
                                                             cb.get("duration_s")):
            notes.append(f"different run length: num_requests {ca.get('num_requests')} / "
                         f"duration {ca.get('duration_s')} vs {cb.get('num_requests')} / "
                         f"{cb.get('duration_s')} (CIs account for the sample sizes)")
        if ca.get("engine") != cb.get("engine"):
            notes.append(f"different engine protocols: {ca.get('engine')} vs "
                         f"{cb.get('engine')} (expected when comparing a vendor endpoint with "
                         f"a self-hosted one). Per-request AL is each engine's own definition "
                         f"(docs/METRICS.md), so AL is not like for like across engines")
        if ca.get("model") != cb.get("model"):
            notes.append(f"different model names sent: {ca.get('model')!r} vs "
                         f"{cb.get('model')!r}")
        if ca.get("multi_turn") != cb.get("multi_turn"):
            warnings.append("one run replays multi-turn conversations and the other does not")
        ha_, hb_ = ma.get("host") or {}, mb.get("host") or {}
        if ha_.get("hostname") != hb_.get("hostname"):
            notes.append(f"different client hosts: {ha_.get('hostname')} vs "
                         f"{hb_.get('hostname')}")
    src_a = ((a.summary or {}).get("acceptance") or {}).get("source")
    src_b = ((b.summary or {}).get("acceptance") or {}).get("source")
    if src_a and src_b and src_a != src_b:
        notes.append(f"counter AL comes from different sources: {src_a} vs {src_b}")
    return warnings, notes


# --------------------------------------------------------------------------------------------
# The comparison
# --------------------------------------------------------------------------------------------

def _specs(categories: list[str]) -> list[Spec]:
    blocks = "time-block bootstrap of the window's arrivals"
    req = "bootstrap over requests"
    out = [
        Spec("output_tokens_per_s", "throughput", "output tokens/s", "tok/s", "higher", blocks),
        Spec("requests_per_s", "throughput", "requests/s", "req/s", "higher", blocks),
        Spec("per_user_tokens_per_s.mean", "per-user", "per-user tokens/s mean", "tok/s",
             "higher", req),
        Spec("per_user_tokens_per_s.p50", "per-user", "per-user tokens/s p50", "tok/s",
             "higher", req),
    ]
    for m in LATENCY:
        for s in ("mean", "p50", "p90", "p99"):
            out.append(Spec(f"{m}_ms.{s}", "latency", f"{m.upper()} {s}", "ms", "lower",
                            req + (" (pooled tokens, resampled by request)"
                                   if m == "itl" else "")))
    out += [
        Spec("al_counters", "acceptance", "AL (server counters)", "", "higher",
             "server counters: no CI"),
        Spec("acceptance_rate", "acceptance", "acceptance rate (server counters)", "",
             "higher", "server counters: no CI"),
        Spec("al_per_request.token_weighted", "acceptance", "AL per request, token-weighted",
             "", "higher", req),
        Spec("al_per_request.request_weighted", "acceptance",
             "AL per request, request-weighted", "", "higher", req),
    ]
    for c in categories:
        out.append(Spec(f"category.{c}.al", "category", f"{c}: AL (token-weighted)", "",
                        "higher", req))
        out.append(Spec(f"category.{c}.tpot_ms.p50", "category", f"{c}: TPOT p50", "ms",
                        "lower", req))
    return out


def _pct(x: np.ndarray, alpha: float) -> tuple[float, float] | None:
    x = x[np.isfinite(x)]
    if x.size < 2:
        return None
    lo, hi = np.percentile(x, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def compare_runs(a: RunData, b: RunData, *, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = DEFAULT_CONFIDENCE, seed: int = 0,
                 min_requests: int = DEFAULT_MIN_REQUESTS) -> dict[str, Any]:
    """Everything ``loadgen compare`` prints, as one JSON-able dict."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be between 0 and 1")
    if resamples < 100:
        raise ValueError("use at least 100 resamples")
    t0 = time.perf_counter()
    alpha = 1 - confidence
    categories = sorted(set(a.category.tolist()) | set(b.category.tolist()))
    streams = np.random.SeedSequence(seed).spawn(4)
    rngs = [np.random.default_rng(s) for s in streams]
    ea = run_estimates(a, resamples, rngs[0], rngs[2], min_requests, categories)
    eb = run_estimates(b, resamples, rngs[1], rngs[3], min_requests, categories)
    rows = []
    for spec in _specs(categories):
        x, y = ea[spec.key], eb[spec.key]
        row: dict[str, Any] = {
            "key": spec.key, "group": spec.group, "label": spec.label, "unit": spec.unit,
            "better": spec.better, "method": spec.method,
            "a": x.value, "b": y.value, "n_a": x.n, "n_b": y.n,
            "diff": None, "ratio": None, "ci_a": None, "ci_b": None, "ci_diff": None,
            "ci_ratio": None, "ci_log_ratio": None, "significant": None,
            "verdict": "not compared", "reason": None,
        }
        if x.reps is not None:
            row["ci_a"] = _pct(x.reps, alpha)
        if y.reps is not None:
            row["ci_b"] = _pct(y.reps, alpha)
        if x.value is None or y.value is None:
            missing = [r.label for r, e in ((a, x), (b, y)) if e.value is None]
            row["reason"] = (x.reason if x.value is None else y.reason) or (
                f"missing in {' and '.join(missing)}")
            rows.append(row)
            continue
        row["diff"] = y.value - x.value
        if x.value != 0:
            row["ratio"] = y.value / x.value
        if x.reps is None or y.reps is None:
            row["reason"] = x.reason if x.reps is None else y.reason
            row["verdict"] = "no CI"
            rows.append(row)
            continue
        d = y.reps - x.reps
        ci = _pct(d, alpha)
        if ci is None:
            row["reason"] = "too few finite bootstrap replicates"
            row["verdict"] = "no CI"
            rows.append(row)
            continue
        row["ci_diff"] = ci
        if x.value > 0 and y.value > 0:
            with np.errstate(invalid="ignore", divide="ignore"):
                lr = np.log(y.reps / x.reps)
            cl = _pct(lr, alpha)
            if cl is not None:
                row["ci_log_ratio"] = cl
                row["ci_ratio"] = (math.exp(cl[0]), math.exp(cl[1]))
        sig = ci[0] > 0 or ci[1] < 0
        row["significant"] = bool(sig)
        if not sig:
            row["verdict"] = "not significant"
        else:
            up = ci[0] > 0
            if spec.better is None:
                row["verdict"] = "B higher" if up else "B lower"
            else:
                good = up == (spec.better == "higher")
                row["verdict"] = "B better" if good else "B worse"
        rows.append(row)

    warnings, notes = comparability(a, b)
    tested = [r for r in rows if r["significant"] is not None]
    nsig = sum(r["significant"] for r in tested)
    notes.append(f"{nsig} of {len(tested)} differences with a CI are significant at "
                 f"{confidence:.0%}; between identical configurations about "
                 f"{alpha * len(tested):.1f} would be flagged by chance")
    return {
        "loadgen_compare": 1,
        "a": _run_info(a), "b": _run_info(b),
        "settings": {"resamples": resamples, "confidence": confidence, "seed": seed,
                     "min_requests": min_requests, "tail_min": TAIL_MIN,
                     "min_blocks": MIN_BLOCKS},
        "warnings": warnings, "notes": notes,
        "statistics": rows,
        "errors": {"a": _errors(a), "b": _errors(b)},
        "runtime_s": time.perf_counter() - t0,
    }


def _run_info(r: RunData) -> dict[str, Any]:
    cfg = r.config
    return {"label": r.label, "path": str(r.path), "engine": cfg.get("engine"),
            "endpoint": (r.manifest or {}).get("endpoint"), "model": cfg.get("model"),
            "dataset": ((r.manifest or {}).get("dataset") or {}).get("path"),
            "load": {k: cfg.get(k) for k in LOAD_KEYS if cfg.get(k) is not None},
            "output_len": cfg.get("output_len"), "ok_requests": len(r.ok),
            "acceptance_source": ((r.summary or {}).get("acceptance") or {}).get("source"),
            "window_s": ((r.summary or {}).get("window") or {}).get("duration_s")}


def _errors(r: RunData) -> dict[str, Any]:
    st = Counter(x.get("status") for x in r.measured)
    reasons = Counter((x.get("error") or "")[:120] for x in r.measured
                      if x.get("status") != "ok")
    return {"total": len(r.measured), "ok": st.get("ok", 0), "error": st.get("error", 0),
            "cancelled": st.get("cancelled", 0), "reasons": dict(reasons)}


def compare_dirs(path_a: Path | str, path_b: Path | str, *, label_a: str | None = None,
                 label_b: str | None = None, **kw: Any) -> dict[str, Any]:
    a = load_run(path_a, label_a or "A")
    b = load_run(path_b, label_b or "B")
    return compare_runs(a, b, **kw)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.3g}" if a < 10 else f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ci(ci: tuple[float, float] | list[float] | None) -> str:
    return "-" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def table_rows(result: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """(rows: statistic, A, B, B−A, CI of B−A, B/A, CI of B/A, verdict; footnotes: why a
    statistic has no CI or was not compared, each reason once, cited as [n])."""
    out, notes = [], []
    for r in result["statistics"]:
        verdict = r["verdict"]
        if r["reason"] and not r["significant"]:
            if r["reason"] not in notes:
                notes.append(r["reason"])
            verdict = f"{verdict} [{notes.index(r['reason']) + 1}]"
        label = r["label"] + (f" ({r['unit']})" if r["unit"] else "")
        out.append([label, fmt(r["a"]), fmt(r["b"]), fmt(r["diff"]), fmt_ci(r["ci_diff"]),
                    fmt(r["ratio"]), fmt_ci(r["ci_ratio"]), verdict])
    return out, [f"[{i}] {n}" for i, n in enumerate(notes, 1)]


HEADERS = ["statistic", "A", "B", "B − A", "CI of B − A", "B / A", "CI of B / A", "verdict"]


def _describe(info: dict[str, Any]) -> str:
    load = ", ".join(f"{k} {v}" for k, v in info["load"].items()) or "?"
    return (f"engine {info['engine']}, {info['ok_requests']} ok requests, {load}, output_len "
            f"{info['output_len']}")


def print_result(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no need to wrap at 80 columns
            console = Console(width=160)
    a, b = result["a"], result["b"]
    conf = result["settings"]["confidence"]
    for side, info in (("A", a), ("B", b)):
        console.print(f"[bold]{side}[/bold] {info['path']}: {_describe(info)}")
    t = Table(title=f"loadgen compare: B − A, {conf:.0%} bootstrap CIs "
                    f"({result['settings']['resamples']} resamples)")
    for h in HEADERS:
        t.add_column(h, justify="left" if h in ("statistic", "verdict") else "right",
                     overflow="fold")
    group = None
    style = {"B better": "green", "B worse": "red", "B higher": "cyan", "B lower": "cyan"}
    rows, footnotes = table_rows(result)
    for r, cells in zip(result["statistics"], rows, strict=True):
        if r["group"] != group:
            if group is not None:
                t.add_section()
            group = r["group"]
        s = style.get(r["verdict"])
        if s:
            cells[-1] = f"[{s}]{cells[-1]}[/{s}]"
        t.add_row(*cells)
    console.print(t)
    for f in footnotes:
        console.print(f, highlight=False)
    ea, eb = result["errors"]["a"], result["errors"]["b"]
    console.print(f"requests: A {ea['ok']} ok / {ea['error']} error / {ea['cancelled']} "
                  f"cancelled; B {eb['ok']} ok / {eb['error']} error / {eb['cancelled']} "
                  f"cancelled")
    for w in result["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for n in result["notes"]:
        console.print(f"note: {n}")


def to_markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = ["# loadgen compare", ""]
    for side in ("a", "b"):
        info = result[side]
        lines.append(f"- **{side.upper()}** `{info['path']}`: {_describe(info)}, dataset "
                     f"`{info['dataset']}`")
    lines += ["", f"B − A with {s['confidence']:.0%} bootstrap confidence intervals "
                  f"({s['resamples']} resamples, seed {s['seed']}); a difference is "
                  f"significant when its CI excludes 0. Methods: docs/COMPARE.md.", ""]
    lines.append("| " + " | ".join(HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    rows, footnotes = table_rows(result)
    for cells in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if footnotes:
        lines += [""] + [f"{f}  " for f in footnotes]
    ea, eb = result["errors"]["a"], result["errors"]["b"]
    lines += ["", "| requests | A | B |", "|---|---|---|"]
    for k in ("total", "ok", "error", "cancelled"):
        lines.append(f"| {k} | {ea[k]} | {eb[k]} |")
    if result["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result["warnings"]]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def to_json(result: dict[str, Any]) -> str:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        if isinstance(o, np.floating | np.integer):
            return clean(o.item())
        return o

    return json.dumps(clean(result), indent=2) + "\n"
