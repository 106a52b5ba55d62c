"""The trace schedule without a server: due times (plan.trace_due), the time scale and target
rate (client/trace.py), the send-lag warning's threshold, the trace readers' selection."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.analysis.sendlag import SEND_LAG_WARN_MS, send_lag_warning
from loadgen.client.plan import iter_records, trace_due
from loadgen.client.trace import configure, trace_schedule
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile, PromptRecord
from loadgen.data.trace_read import TraceError, TraceSpec, parse_window, read_trace, select
from loadgen.results.summary import Stats

ARRIVALS = [0.0, 0.5, 0.5, 2.0, 4.0]


def _pf(arrivals=ARRIVALS) -> PromptFile:
    return PromptFile(header={}, records=[
        PromptRecord(id=f"r{i}", category="c", prompt_token_ids=[1, 2], max_tokens=3,
                     arrival_s=a) for i, a in enumerate(arrivals)])


def test_due_times_count_from_each_phase_first_request():
    recs = _pf().records
    due = trace_due(recs, warmup=2)
    # warm-up from record 0, measured from record 2 (the first measured)
    assert [due(i) for i in range(5)] == [0.0, 0.5, 0.0, 1.5, 3.5]
    # a second pass continues one mean gap (4 s / 4 gaps = 1 s) after the last arrival
    assert due(5) == pytest.approx(4.0 + 1.0 - 0.5)
    items = iter_records(recs, seed=0, warmup=2, shuffle=False, worker=1, workers=2)
    first = [next(items) for _ in range(2)]
    assert [(it.index, it.due_s, it.warmup) for it in first] == [(1, 0.5, True), (3, 1.5, False)]
    assert trace_due(_pf([0.0, None]).records, 0) is None  # type: ignore[list-item]


def test_time_scale_and_target_rate():
    pf = _pf()
    s = trace_schedule(pf)
    assert (s.native_rate, s.time_scale, s.offered_rate) == (1.0, 1.0, 1.0)
    assert trace_schedule(pf, time_scale=3).offered_rate == 3.0
    t = trace_schedule(pf, target_rate=8)
    assert t.time_scale == 8.0 and t.offered_rate == 8.0
    cfg = RunConfig.build(endpoint="http://127.0.0.1:1", engine="vllm", out=Path("x"),
                          request_rate=1.0, num_requests=1, arrival="trace")
    cfg = configure(cfg, t, num_requests_given=False)
    load = cfg.load
    assert (load.shuffle, load.time_scale, load.request_rate, load.warmup_requests,
            load.num_requests, cfg.measurement.category_windows) == (False, 8.0, 8.0, 0, 5, False)
    with pytest.raises(ValueError, match="arrives before"):
        trace_schedule(_pf([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="not both"):
        trace_schedule(pf, time_scale=2, target_rate=2)


def test_send_lag_warning_threshold():
    assert send_lag_warning(Stats(p50=1.0, p99=SEND_LAG_WARN_MS, max=12.0)) is None
    w = send_lag_warning(Stats(p50=1.0, p99=SEND_LAG_WARN_MS + 0.1, max=30.0))
    assert w is not None and w.startswith("send lag p50 1.0 ms, p99 10.1 ms")


def test_generic_jsonl_read_and_window(tmp_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"t": 100, "i": 5, "o": 2}\n{"t": 40, "i": 7, "o": 1}\n'
                   '{"t": 700, "i": 3, "o": 4}\n')
    fmt, rows = read_trace(TraceSpec(src, fmt="generic", mapping={
        "arrival": "t", "input": "i", "output": "o"}))
    assert fmt == "generic" and [r.input_len for r in rows] == [5, 7, 3]
    kept = select(rows, parse_window("50s:12m"), None)
    assert [(r.row, r.arrival_s) for r in kept] == [(0, 0.0), (2, 600.0)]
    assert parse_window(":1m") == (0.0, 60.0)
    with pytest.raises(TraceError, match="row 1: input length is 0, below 1"):
        src.write_text('{"t": 1, "i": 0, "o": 2}\n')
        read_trace(TraceSpec(src, fmt="generic", mapping={"arrival": "t", "input": "i",
                                                          "output": "o"}))
