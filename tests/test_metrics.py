"""Each formula of docs/METRICS.md on hand-built records whose answers are known."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from loadgen.analysis.accumulate import PerRequestALSum, SummaryAccumulator
from loadgen.analysis.metrics import (
    e2e_ms,
    itl_values_ms,
    per_user_tokens_per_s,
    stats,
    tpot_ms,
    ttft_ms,
)
from loadgen.engines import make_adapter

MS = 1_000_000


def summarize(records, window, *, rate_mode, **finish):
    """The summary of ``records`` over ``window``: the accumulator every run uses."""
    acc = SummaryAccumulator(window, rate_mode)
    for r in records:
        acc.add(r)
    return acc.finish(**finish)



def rec(**kw):
    base = {"index": 0, "prompt_id": "p", "category": "c", "turn": 0, "warmup": False,
            "input_tokens": 10, "expected_tokens": 7, "scheduled_ns": 0, "send_ns": 0,
            "first_token_ns": 0, "end_ns": 0, "status": "ok", "error": None,
            "output_tokens": 7, "events": 3, "arrivals_ns": [], "event_tokens": [],
            "usage_prompt_tokens": 10, "acceptance_length": None}
    base.update(kw)
    return base


# A request sent at 100 ms, first token at 150 ms (1 token), then 3 tokens at 170 ms,
# 3 more at 200 ms; the response ends at 201 ms.
R = rec(scheduled_ns=100 * MS, send_ns=100 * MS, first_token_ns=150 * MS, end_ns=201 * MS,
        arrivals_ns=[150 * MS, 170 * MS, 200 * MS], event_tokens=[1, 3, 3])


def test_latency_definitions():
    assert ttft_ms(R) == 50
    assert e2e_ms(R) == 101
    assert tpot_ms(R) == pytest.approx((101 - 50) / 6)
    per_token, per_chunk = itl_values_ms(R)
    assert per_chunk == [20, 30]
    assert per_token == pytest.approx([20 / 3] * 3 + [10] * 3)
    assert per_user_tokens_per_s(R) == pytest.approx(6 / 0.050)


def test_rate_mode_counts_from_schedule():
    r = dict(R, scheduled_ns=90 * MS)  # sent 10 ms late
    assert ttft_ms(r) == 60 and e2e_ms(r) == 111


def test_single_token_request_has_no_tpot():
    r = rec(output_tokens=1, arrivals_ns=[5 * MS], event_tokens=[1], first_token_ns=5 * MS,
            end_ns=6 * MS)
    assert tpot_ms(r) is None and per_user_tokens_per_s(r) is None


def test_stats_percentiles_interpolate():
    s = stats([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert s.mean == 5.5 and s.max == 10 and s.count == 10
    assert s.p50 == 5.5 and s.p90 == pytest.approx(9.1) and s.p99 == pytest.approx(9.91)
    assert stats([]).p99 is None


def test_window_tokens_and_throughput():
    other = rec(arrivals_ns=[120 * MS, 300 * MS], event_tokens=[2, 5], output_tokens=7,
                first_token_ns=120 * MS, end_ns=300 * MS, send_ns=110 * MS,
                scheduled_ns=110 * MS)
    warm = rec(warmup=True, arrivals_ns=[180 * MS], event_tokens=[4], output_tokens=4)
    s = summarize([R, other, warm], {"start_ns": 140 * MS, "end_ns": 240 * MS},
                  acceptance=None, counter_delta=None, run_counter_delta=None,
                  rate_mode=False)
    # in [140, 240] ms: R's 1+3+3 and warm's 4; other's arrivals fall outside
    assert s.throughput.window_output_tokens == 11
    assert s.throughput.output_tokens_per_s == pytest.approx(11 / 0.1)
    assert s.throughput.requests_per_s == pytest.approx(1 / 0.1)  # only R ended inside
    counts = asdict(s.requests)
    assert {k: counts[k] for k in ("total", "ok", "error", "cancelled", "warmup")} == {
        "total": 2, "ok": 2, "error": 0, "cancelled": 0, "warmup": 1}
    assert s.acceptance.client_tokens_per_chunk.value == pytest.approx(11 / 4)


def test_per_request_al_weighting():
    a = rec(output_tokens=100, acceptance_length=4.0)  # 25 steps
    b = rec(output_tokens=10, acceptance_length=1.0)  # 10 steps
    acc = PerRequestALSum()
    for r in (a, b, rec(output_tokens=5)):  # a record without AL is left out
        acc.add(r)
    al = acc.result()
    assert al.requests == 2
    assert al.request_weighted == 2.5
    assert al.token_weighted == pytest.approx(110 / 35)


def test_counter_acceptance_formulas():
    delta = {"drafts": 10, "draft_tokens": 30, "accepted": 15, "accepted_pos_0": 8,
             "accepted_pos_1": 5, "accepted_pos_2": 2}
    acc = make_adapter("vllm").acceptance(delta)
    assert acc.acceptance_length == 2.5
    assert acc.acceptance_rate == 0.5
    assert acc.per_position_rate == [0.8, 0.5, 0.2]
    assert acc.conditional_rate == pytest.approx([0.8, 5 / 8, 2 / 5])
    sg = make_adapter("sglang").acceptance({"verify_calls": 40, "generation_tokens": 100})
    assert sg.acceptance_length == 2.5 and sg.acceptance_rate is None
    assert make_adapter("vllm").acceptance({"drafts": 0}) is None


def test_prompt_mismatch_warning():
    bad = dict(R, usage_prompt_tokens=11)
    s = summarize([bad], {"start_ns": 0, "end_ns": 300 * MS}, acceptance=None,
                  counter_delta=None, run_counter_delta=None, rate_mode=False)
    assert any("prompt_tokens differ" in w for w in s.warnings)


def test_sse_parsing_counts_tokens_not_chunks():
    ad = make_adapter("vllm")
    st = ad.new_state()
    body = (b'data: {"choices":[{"token_ids":[1,2,3],"finish_reason":null}]}\n\n'
            b'data: {"choices":[{"token_ids":[4],"finish_reason":"length"}]}\n\ndata: {"choi')
    ad.feed(st, body, 5)
    ad.feed(st, b'ces":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\ndata: [DONE]\n\n',
            9)
    assert st.tokens == 4 and st.event_tokens == [3, 1] and st.arrivals_ns == [5, 5]
    assert st.done and st.final_seen and st.usage_completion_tokens == 4
    assert ad.check_complete(st) is None
    sg = make_adapter("sglang")
    st = sg.new_state()
    for total in (1, 4, 6):  # cumulative output_ids: count from completion_tokens
        sg.feed(st, b'data: {"output_ids":[%b],"meta_info":{"completion_tokens":%d,'
                    b'"finish_reason":null}}\n\n' % (b",".join([b"7"] * total), total), total)
    assert st.event_tokens == [1, 3, 2]
