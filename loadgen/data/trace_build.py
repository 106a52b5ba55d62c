"""``loadgen data build trace``: a production trace -> a prompt file replayed on its schedule.

One record per trace row, in arrival order: ``arrival_s`` (seconds from the first row kept),
``max_tokens`` = the row's output length (every adapter sends it with ignore-EOS / min-tokens, so
the server generates exactly that many), and prompt ids of exactly the row's input length in the
target tokenizer, cut from real text of the category the mix drew for it (trace_fill.py). The
build's report (``TraceReport``): rate over time, length percentiles, theoretical prefix reuse.
"""

from __future__ import annotations

import gzip
import time
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from loadgen.data.prompts import make_header
from loadgen.data.tokenizer import ChatTokenizer
from loadgen.data.trace_fill import BlockFiller, TextPool
from loadgen.data.trace_read import TraceRow, TraceSpec, read_trace, select

RATE_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)  # seconds
MAX_RATE_ROWS = 12


@dataclass
class Lengths:
    mean: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass
class RateBucket:
    start_s: float
    requests: int
    rate: float  # requests per second over the bucket


@dataclass
class TraceReport:
    file: str
    format: str
    rows_read: int
    requests: int
    duration_s: float
    mean_rate: float  # (requests - 1) / duration: the arrival rate between first and last
    input_len: Lengths
    output_len: Lengths
    rate_over_time: list[RateBucket]
    categories: dict[str, int]
    # share of prefix blocks (and of their tokens among all input tokens) whose hash id came
    # earlier in the selection; None without hash ids (docs/METRICS.md, "Theoretical reuse")
    reuse_blocks: float | None = None
    reuse_tokens: float | None = None
    input_tokens: int = 0
    build_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lengths(values: np.ndarray) -> Lengths:
    p50, p90, p99 = (float(np.percentile(values, q)) for q in (50, 90, 99))
    return Lengths(mean=round(float(values.mean()), 1), p50=p50, p90=p90, p99=p99,
                   max=int(values.max()))


def rate_over_time(arrivals: np.ndarray) -> list[RateBucket]:
    """Arrivals per bucket; the bucket the smallest of RATE_BUCKETS giving at most
    MAX_RATE_ROWS buckets (beyond them, the span / MAX_RATE_ROWS rounded up to hours)."""
    span = float(arrivals[-1]) if len(arrivals) else 0.0
    width = next((w for w in RATE_BUCKETS if span / w < MAX_RATE_ROWS),
                 RATE_BUCKETS[-1] * (span // (RATE_BUCKETS[-1] * MAX_RATE_ROWS) + 1))
    edges = np.arange(0.0, span + width, width)
    if len(edges) < 2:
        edges = np.array([0.0, float(width)])
    counts, _ = np.histogram(arrivals, bins=edges)
    return [RateBucket(start_s=float(lo), requests=int(c), rate=round(int(c) / width, 3))
            for lo, c in zip(edges[:-1], counts, strict=True)]


def assign_categories(rows: list[TraceRow], mix: dict[str, float], seed: int) -> list[str]:
    """Each row's category: its own (a mapped category column) or a seeded draw from ``mix``."""
    names = list(mix)
    draws = np.random.default_rng([seed, 1]).choice(len(names), size=len(rows),
                                                     p=[mix[n] for n in names])
    return [r.category or names[d] for r, d in zip(rows, draws, strict=True)]


def build_trace(spec: TraceSpec, tok: ChatTokenizer, out: str | Path, mix: dict[str, float],
                window: tuple[float, float] | None = None, limit: int | None = None,
                seed: int = 0, data_root: str | Path | None = None, log=None) -> TraceReport:
    """Read, select, fill and write; returns the report (also in the output's header)."""
    from loadgen.data.sources import default_data_root

    t0 = time.perf_counter()
    fmt, rows = read_trace(spec)
    n_read = len(rows)
    if limit is not None:
        limit = min(limit, n_read)
    late = sum(b.arrival_s < a.arrival_s for a, b in pairwise(rows))
    if late and log is not None:
        log(f"warning: {spec.path}: {late} {'row arrives' if late == 1 else 'rows arrive'} "
            f"before the row above; the prompt file is in arrival order (trace order among "
            f"equal times)")
    rows = select(rows, window, limit)
    root = Path(data_root) if data_root else default_data_root()
    if root is None or not root.exists():
        raise FileNotFoundError("the trace fill needs the data kit: pass --data-root or set "
                                "LOADGEN_DATA_ROOT (../shared/data beside the checkout is used "
                                "when present)")
    cats = assign_categories(rows, mix, seed)
    for r, c in zip(rows, cats, strict=True):
        if c not in mix and r.category is not None:
            raise ValueError(f"{spec.path}: row {r.row + 1}: category {c!r} is not in the mix "
                             f"({', '.join(mix)})")
    t_read = time.perf_counter()
    pool = TextPool(tok, root, sorted(set(cats)), seed, log)
    t_pool = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arrivals = np.array([r.arrival_s for r in rows])
    report = TraceReport(
        file=str(spec.path), format=fmt, rows_read=n_read, requests=len(rows),
        duration_s=float(arrivals[-1]),
        mean_rate=round((len(rows) - 1) / float(arrivals[-1]), 4) if arrivals[-1] > 0 else 0.0,
        input_len=lengths(np.array([r.input_len for r in rows])),
        output_len=lengths(np.array([r.output_len for r in rows])),
        rate_over_time=rate_over_time(arrivals),
        categories={c: cats.count(c) for c in sorted(set(cats))})
    header = _header(tok, spec, fmt, window, limit, seed, mix, root)
    header["trace"]["licenses"] = pool.licenses
    tmp = out.with_name(out.name + ".partial")
    done = out.with_name(out.name + ".partial2")
    try:
        _write(tmp, out, header, rows, cats, pool, BlockFiller(pool, spec.block_size),
               np.random.default_rng([seed, 2]), report)
        t_write = time.perf_counter()
        report.build_s = {"read": round(t_read - t0, 2), "pool": round(t_pool - t_read, 2),
                          "fill_write": round(t_write - t_pool, 2)}
        _rewrite_header(tmp, done, out, report)
        done.replace(out)  # an existing file is replaced whole, never left half-written
    finally:
        tmp.unlink(missing_ok=True)
        done.unlink(missing_ok=True)
    return report


def _write(tmp: Path, out: Path, header: dict[str, Any], rows: list[TraceRow],
           cats: list[str], pool: TextPool, blocks: BlockFiller, rng: np.random.Generator,
           report: TraceReport) -> None:
    """The header and one record per row into ``tmp``; the report's token counts."""
    name = out.name.split(".")[0]
    n_blocks = n_seen = reused = total_in = 0
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(tmp, "wb") as fh:
        fh.write(orjson.dumps(header) + b"\n")
        for r, cat in zip(rows, cats, strict=True):
            start = pool.start(cat, rng)
            meta: dict[str, Any] = {"trace_row": r.row}
            if r.hash_ids is not None:
                ids, nb, ns, ru = blocks.fill(r.hash_ids, r.input_len, cat, start)
                n_blocks, n_seen, reused = n_blocks + nb, n_seen + ns, reused + ru
                meta["reused_tokens"] = ru
            else:
                ids = pool.cut(cat, start, r.input_len)
                meta["fill_offset"] = start
            total_in += r.input_len
            fh.write(orjson.dumps({"id": f"{name}-{r.row}", "category": cat,
                                   "prompt_token_ids": ids, "max_tokens": r.output_len,
                                   "arrival_s": r.arrival_s, "meta": meta},
                                  option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    report.input_tokens = total_in
    if any(r.hash_ids is not None for r in rows):
        report.reuse_blocks = round(n_seen / n_blocks, 6) if n_blocks else 0.0
        report.reuse_tokens = round(reused / total_in, 6) if total_in else 0.0


def _header(tok: ChatTokenizer, spec: TraceSpec, fmt: str, window, limit, seed: int,
            mix: dict[str, float], root: Path) -> dict[str, Any]:
    return make_header(
        **tok.header_fields(), built_by="loadgen data build trace", dataset=spec.path.name,
        trace={"file": spec.path.name, "format": fmt, "window_s": list(window) if window else
               None, "limit": limit, "seed": seed, "category_mix": mix,
               "block_size": spec.block_size, "data_root": str(root),
               "fill": "real text of the qualitative categories, then the kit's long documents; "
                       "no chat template"})


def _rewrite_header(tmp: Path, dst_path: Path, out: Path, report: TraceReport) -> None:
    """``tmp`` with the report in its header line (the first line rewritten, the rest copied)
    into ``dst_path`` (compressed as ``out`` is)."""
    opener = gzip.open if out.suffix == ".gz" else open
    with opener(tmp, "rb") as src, opener(dst_path, "wb") as dst:
        header = orjson.loads(src.readline())
        header["trace"]["report"] = report.to_dict()
        dst.write(orjson.dumps(header) + b"\n")
        while chunk := src.read(1 << 22):
            dst.write(chunk)


def format_report(rep: TraceReport) -> str:
    """The build report as lines of text."""
    def lens(name: str, x: Lengths) -> str:
        return (f"{name}: mean {x.mean:g}, p50 {x.p50:g}, p90 {x.p90:g}, p99 {x.p99:g}, "
                f"max {x.max}")

    lines = [f"{rep.requests} requests of {rep.rows_read} rows ({rep.format}) over "
             f"{rep.duration_s:.1f} s: mean rate {rep.mean_rate:g} req/s; "
             f"{rep.input_tokens} input tokens",
             lens("input length", rep.input_len), lens("output length", rep.output_len),
             "categories: " + ", ".join(f"{c} {n}" for c, n in rep.categories.items())]
    if rep.reuse_blocks is not None:
        lines.append(f"theoretical prefix reuse: {rep.reuse_blocks:.1%} of blocks, "
                     f"{rep.reuse_tokens:.1%} of input tokens (hash ids seen before)")
    else:
        lines.append("theoretical prefix reuse: unknown (the trace has no prefix hash ids)")
    lines.append("rate over time (start s: requests, req/s):")
    lines += [f"  {b.start_s:>8.0f}: {b.requests:>6} {b.rate:>8.3f}" for b in rep.rate_over_time]
    lines.append("build seconds: " + ", ".join(f"{k} {v:g}" for k, v in rep.build_s.items()))
    return "\n".join(lines)
