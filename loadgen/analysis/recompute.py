"""A run's summary recomputed from its files (``loadgen summarize RUN_DIR``).

The records are streamed from requests.jsonl or every shard requests.<k>.jsonl; the window, the
server's counter deltas and the client's own statistics come from summary.json (they are not in
the records), each shard's clock offset from manifest.json. With ``exact`` every percentile is
exact whatever the run's size (each latency value is kept: 8 bytes per value, no record). A
category-window run keeps its stored throughput and per-category window figures (the windows'
edges are not in the files).
"""

from __future__ import annotations

import sys
from pathlib import Path

from loadgen.analysis.accumulate import SummaryAccumulator
from loadgen.results.files import ResultFileError, read_json
from loadgen.results.records import iter_records, record_files
from loadgen.results.summary import Summary


def recompute(run_dir: Path, exact: bool = True) -> Summary:
    stored = Summary.from_dict(read_json(run_dir / "summary.json"))
    manifest = read_json(run_dir / "manifest.json")
    files = record_files(run_dir)
    if not files:
        raise ResultFileError(f"{run_dir}: no requests.jsonl or requests.<k>.jsonl")
    w = stored.window
    window = {"start_ns": w.start_ns, "end_ns": w.end_ns, "includes_drain": w.includes_drain}
    rate_mode = (manifest.get("config") or {}).get("request_rate") is not None
    offsets = {d["shard"]: int(d.get("clock_offset_ns") or 0)
               for d in (manifest.get("scale") or {}).get("detail", [])}
    acc = SummaryAccumulator(window, rate_mode, exact_limit=sys.maxsize if exact else None)
    for path in files:
        off = offsets.get(path.name, 0)
        acc.edges(w.start_ns + off, w.end_ns + off)
        for r in iter_records(path):
            acc.add(r)
    acceptance = stored.acceptance
    out = acc.finish(acceptance=acceptance, counter_delta=stored.server_counters.window_delta,
                     run_counter_delta=stored.server_counters.run_delta, client=stored.client)
    if stored.window.category_windows:
        # category windows: their edges are not in summary.json; what depends on them is kept
        out.window, out.throughput = stored.window, stored.throughput
        out.acceptance.client_tokens_per_chunk = stored.acceptance.client_tokens_per_chunk
        for name, cs in out.categories.items():
            old = stored.categories.get(name)
            if old is not None:
                for f in ("acceptance_length", "acceptance_source", "acceptance_rate",
                          "per_position_rate", "window_s", "output_tokens_per_s",
                          "window_acceptance_length", "window_counters", "withheld"):
                    setattr(cs, f, getattr(old, f))
    out.sampling = stored.sampling
    # from the host monitor and the server's counters, not from the records
    out.host, out.prefix_cache = stored.host, stored.prefix_cache
    out.fleet = stored.fleet  # each replica's counters (docs/METRICS.md, "Fleets")
    out.warnings = stored.warnings  # computed from the same records, plus the run's own
    out.interrupted = stored.interrupted
    out.token_count_source = stored.token_count_source
    return out
