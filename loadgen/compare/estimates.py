"""Every statistic of one run, with its bootstrap replicates where a CI is possible: requests
resampled with replacement for per-request statistics, time blocks for window throughput,
server counters as one aggregate without a CI (docs/COMPARE.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loadgen.analysis.gate import gated_counters
from loadgen.compare.load import RunData
from loadgen.compare.resample import PooledQuantiles, resample_counts, weighted_quantiles

TAIL_MIN = 5  # a percentile p needs at least this many values above it: n·(1 − p) >= 5
MIN_BLOCKS = 10
MAX_BLOCKS = 400
CHUNK = 256  # resamples per vectorised batch (bounds memory: CHUNK × requests counts)
QUANTS = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


@dataclass
class Estimate:
    """One statistic of one run: its value, its bootstrap replicates (None: no CI) and why."""

    value: float | None
    reps: np.ndarray | None = None
    reason: str | None = None
    n: int | None = None


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
            pq = (PooledQuantiles(run.itl_val, run.itl_w, run.itl_req, n, qs, sv, sw)
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
    acc, withheld = gated_counters((run.summary or {}).get("acceptance") or {})
    why = "server counters over the window: one aggregate number per run, no resampling unit"
    for key, name in (("al_counters", "acceptance_length"), ("acceptance_rate",
                                                             "acceptance_rate")):
        v = getattr(acc, name)
        est[key] = Estimate(None if v is None else float(v),
                            reason=why if v is not None else
                            f"{name.replace('_', ' ')} withheld by the sanity gate in "
                            f"{run.label}: {withheld[name]}" if name in withheld else
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
        reason = (f"{run.label}'s window includes the drain (its requests were sent in under a "
                  f"fifth of the time they took to end: at once, or far faster than the server "
                  f"served them): no steady state to resample")
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
