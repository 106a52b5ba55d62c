"""`loadgen run` against the synthetic engine, all four protocols: every number is checked against
the server's counters and its truth log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import read_prompts
from loadgen.results.records import read_records
from loadgen.results.summary import Summary
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from tests.synthetic_data import CATEGORIES, make_dataset, rates_args


def engine_args(protocol: str, truth: Path, *extra: str) -> list[str]:
    args = ["--protocol", protocol, "--truth-log", str(truth), "--step-base-ms", "2",
            "-k", "3", "--model-name", "m", *rates_args(), *extra]
    if protocol == "vllm":
        args += ["--per-request-spec-metrics", "summary"]
    return args


def run(eng_url: str, engine: str, dataset: Path, out: Path, **kw) -> dict:
    kw.setdefault("warmup_requests", 0)  # these tests count every request sent
    cfg = RunConfig.build(endpoint=eng_url, engine=engine, out=out, model="m",
                          output_len=kw.pop("output_len", 32), **kw)
    return run_benchmark(cfg, read_prompts(dataset), dataset, argv=["test"])


def truth_al(engine: str, recs: list[dict]) -> float:
    """The engine's own per-request AL formula, applied to the truth log (token-weighted)."""
    toks = steps = 0.0
    for r in recs:
        n = r["output_len"]
        drafted, accepted = r["drafted_per_step"], r["accepted_per_step"]
        if engine == "vllm":
            with_drafts = sum(1 for d in drafted if d)
            al = 1 + sum(accepted) / with_drafts
        elif engine == "sglang":
            al = n / len(drafted)
        elif engine == "llamacpp":
            al = n / (n - sum(accepted))
        else:  # trtllm: tokens per iteration, the context iteration included
            al = n / (1 + len(drafted))
        toks += n
        steps += n / al
    return toks / steps


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "llamacpp"])
def test_acceptance_equals_counters_and_truth(synthetic, tmp_path, engine):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl")
    eng = synthetic(*engine_args(engine, truth))
    s = run(eng.url, engine, ds, tmp_path / "out", concurrency=4, num_requests=24,
            keep_token_ids=True)
    eng.stop()
    counts = asdict(s.requests)
    assert {k: counts[k] for k in ("total", "ok", "error", "cancelled", "warmup", "retries",
                                   "rate_limited")} == {"total": 24, "ok": 24, "error": 0,
                                                        "cancelled": 0, "warmup": 0,
                                                        "retries": 0, "rate_limited": 0}
    recs = read_truth(truth)
    assert len(recs) == 24
    # Run-wide counter deltas equal the truth log exactly.
    run_delta = s.server_counters.run_delta
    assert run_delta["generation_tokens"] == sum(r["output_len"] for r in recs) == 24 * 32
    steps = [(d, a) for r in recs
             for d, a in zip(r["drafted_per_step"], r["accepted_per_step"], strict=True)]
    if engine == "sglang":
        assert run_delta["verify_calls"] == len(steps)
    else:
        assert run_delta["accepted"] == sum(a for _, a in steps)
        assert run_delta["drafts"] == sum(1 for d, _ in steps if d)
    # Window acceptance is exactly the engine's formula over the window's counter deltas.
    acc = s.acceptance
    wd = s.server_counters.window_delta
    if engine == "sglang":
        assert acc.acceptance_length == pytest.approx(wd["generation_tokens"]
                                                         / wd["verify_calls"])
    else:
        assert acc.acceptance_length == pytest.approx(1 + wd["accepted"] / wd["drafts"])
        assert acc.acceptance_rate == pytest.approx(wd["accepted"] / wd["draft_tokens"])
    if engine in ("vllm", "llamacpp"):
        pos = acc.per_position_rate
        assert pos == pytest.approx([wd[f"accepted_pos_{i}"] / wd["drafts"] for i in range(3)])
        cond = acc.conditional_rate
        assert cond[1] == pytest.approx(wd["accepted_pos_1"] / wd["accepted_pos_0"])
    # Per category, the per-request AL equals the engine's formula on the truth log.
    by_key = defaultdict(list)
    for r in recs:
        by_key[r["category_key"]].append(r)
    for cat, (marker, _) in CATEGORIES.items():
        assert s.categories[cat].requests == 8
        assert s.categories[cat].acceptance_length == pytest.approx(
            truth_al(engine, by_key[marker]), rel=1e-9)
    cats = s.categories
    assert cats["coding"].acceptance_length > cats["math"].acceptance_length > cats[
        "roleplay"].acceptance_length
    # Exact output lengths, and the very tokens the server logged.
    records = read_records(tmp_path / "out" / "requests.jsonl")
    assert all(r["output_tokens"] == 32 for r in records)
    if engine == "llamacpp":
        # llama-server withholds events for incomplete UTF-8 pieces: counts stay exact (from
        # tokens_predicted) and the record says the ids are incomplete rather than lying
        assert any(t % 13 == 0 for r in recs for t in r["output_token_ids"][:-1])
        assert all(r["token_ids"] is None for r in records)
    else:
        assert sorted(tuple(r["token_ids"]) for r in records) == sorted(
            tuple(r["output_token_ids"]) for r in recs)


def _client_lags_ms(synthetic, tmp_path: Path,
                    engine: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(arrival stamp - engine send stamp per event, the engine's own gaps between its sends,
    the client's event-loop lag p90), all in ms, from one run."""
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl", n=12, seed=0)
    eng = synthetic(*engine_args(engine, truth))
    out = tmp_path / "out"
    summary = run(eng.url, engine, ds, out, concurrency=2, num_requests=12, output_len=48)
    eng.stop()
    prompts = {p.id: p for p in read_prompts(ds).records}
    truth_by_digest = {r["prompt_sha256"]: r for r in read_truth(truth)}
    lags: list[float] = []
    gaps: list[float] = []
    for r in read_records(out / "requests.jsonl"):
        t = truth_by_digest[prompt_digest(prompts[r["prompt_id"]].prompt_token_ids)]
        assert r["event_tokens"] == t["chunk_tokens"]
        lags += [(a - b) / 1e6 for a, b in zip(r["arrivals_ns"], t["chunk_send_ns"],
                                                strict=True)]
        gaps += list(np.diff(t["chunk_send_ns"]) / 1e6)
        # TTFT is measured from the send, the engine saw the request after it
        assert r["send_ns"] <= t["received_ns"] <= r["first_token_ns"]
    return np.array(lags), np.array(gaps), summary.client.loop_lag_ms.p90 or 0.0


@pytest.mark.parametrize("engine", ["vllm", "llamacpp"])
def test_timestamps_match_server_send_stamps(synthetic, tmp_path, engine):
    """Each event's arrival stamp follows the engine's own send stamp (both CLOCK_MONOTONIC on
    this host): never before it, and typically by a small fraction of the engine's step. Only
    figures of one run are compared (no wall-clock threshold): the typical stamp lag must be
    under a tenth of the engine's step, or, when other processes hold the CPUs, no larger than
    what the client's own event loop shows as scheduling delay (twice its lag p90). A client
    that stamped after parsing or queued reads would lag by the order of a step."""
    lags, gaps, loop_p90 = _client_lags_ms(synthetic, tmp_path, engine)
    assert (lags >= 0).all()  # nothing arrives before it was sent: same clock, same events
    bound = max(0.1 * np.median(gaps), 2 * loop_p90)
    assert np.median(lags) < bound, (np.median(lags), np.median(gaps), loop_p90)


@pytest.mark.parametrize("fault,expect", [
    ("http500:p=0.3", "HTTP 500"),
    ("http503:p=0.3", "HTTP 503"),
    ("http429:p=0.3,retry_after=2", "HTTP 429"),
    ("close_before_headers:p=0.3", "before the response headers"),
    ("reset:p=0.3,after=5", "mid-response"),
    ("malformed:p=0.3,after=5", "malformed JSON chunk"),
    ("truncate:p=0.3,after=5", "without its [DONE]"),
    ("stall:p=0.3,after=5,seconds=0.3", None),
])
def test_every_request_accounted_under_faults(synthetic, tmp_path, fault, expect):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl")
    eng = synthetic(*engine_args("vllm", truth, "--fault", fault, "--seed", "3"))
    s = run(eng.url, "vllm", ds, tmp_path / "out", concurrency=4, num_requests=20,
            warmup_requests=2)
    eng.stop()
    req = s.requests
    assert req.total == 20 and req.ok + req.error + req.cancelled == 20
    records = read_records(tmp_path / "out" / "requests.jsonl")
    assert len(records) == 22
    faulted = sum(1 for r in read_truth(truth) if r["fault"])
    assert faulted > 0
    errors = [r for r in records if r["status"] == "error"]
    if expect is None:  # a stall slows a request but it completes
        assert not errors
        assert s.latency_ms.e2e.max > 300
    else:
        # a close before the headers on a kept-alive connection is indistinguishable from the
        # server dropping it: that request was sent once more (and said so), on a new one
        resent = [r for r in records if r.get("resent")]
        assert len(errors) + len(resent) == faulted
        if resent:  # only a close before the headers can look like a dropped connection
            assert fault.startswith("close_before_headers")
        assert all(expect in r["error"] for r in errors), {r["error"] for r in errors}
        if resent:
            assert any("sent again on a new connection" in w for w in s.warnings)
        if "429" in expect:
            assert all(r["retry_after"] == "2" for r in errors)
    json.dumps(s.to_dict())  # the summary stays valid JSON
    assert (tmp_path / "out" / "summary.json").exists()


def test_rate_mode_latency_from_schedule(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl")
    eng = synthetic(*engine_args("vllm", truth))
    s = run(eng.url, "vllm", ds, tmp_path / "out", request_rate=40.0, arrival="constant",
            num_requests=30, max_concurrency=2)
    eng.stop()
    assert s.requests.ok == 30
    records = read_records(tmp_path / "out" / "requests.jsonl")
    sched = sorted(r["scheduled_ns"] for r in records)
    gaps = np.diff(sched) / 1e6
    assert np.allclose(gaps, 25.0, atol=0.01)  # the schedule never slips
    # with 2 slots and ~100 ms requests, requests wait: that wait is in TTFT and in the lag
    lag = s.latency_ms.schedule_lag
    assert lag.max > 50
    for r in records:
        assert r["first_token_ns"] - r["scheduled_ns"] >= r["first_token_ns"] - r["send_ns"]


def test_warns_about_other_traffic_on_the_server(synthetic, tmp_path):
    import threading

    import httpx

    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl")
    eng = synthetic(*engine_args("vllm", truth))
    streaming = threading.Event()

    def someone_else() -> None:  # a long request that is generating during the whole run
        body = {"prompt": [5, 6, 7], "max_tokens": 3000, "ignore_eos": True, "stream": True}
        try:
            with httpx.stream("POST", eng.url + "/v1/completions", json=body, timeout=120) as r:
                for _ in r.iter_lines():
                    streaming.set()
        except httpx.HTTPError:
            pass  # the engine is stopped under it at the end of the test

    other = threading.Thread(target=someone_else, daemon=True)
    other.start()
    assert streaming.wait(30)
    s = run(eng.url, "vllm", ds, tmp_path / "out", concurrency=2, num_requests=24)
    assert other.is_alive()  # still generating when our run ended
    assert any("other traffic" in w for w in s.warnings), s.warnings
    eng.stop()
    other.join(10)


def test_bad_prompt_file_names_line_and_field(tmp_path, loadgen_cli):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "category": "c", "prompt_token_ids": [1, 2]}) + "\n"
                   + json.dumps({"id": "b", "category": "c", "prompt_token_ids": [1, "x"]})
                   + "\n")
    proc = loadgen_cli("run", "--endpoint", "http://127.0.0.1:9", "--dataset", str(bad),
                       "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "bad.jsonl:2" in proc.stderr and "prompt_token_ids" in proc.stderr


def test_ctrl_c_leaves_a_valid_partial_result(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl")
    eng = synthetic(*engine_args("vllm", truth, "--step-base-ms", "20"))
    out = tmp_path / "out"
    env = dict(os.environ, LOADGEN_TEST_KEY="sekrit-value-123")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "--endpoint", eng.url, "--engine", "vllm",
         "--dataset", str(ds), "--output-len", "60", "--concurrency", "4",
         "--num-requests", "400", "--warmup-requests", "0", "--out", str(out),
         "--api-key-env", "LOADGEN_TEST_KEY",
         "--quiet"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # interrupt once some requests have finished (so the run has both ok and in-flight ones)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = out / "requests.jsonl"
        if done.exists() and done.read_text().count('"status":"ok"') >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    summary = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    req = summary.requests
    assert summary.interrupted is True
    assert req.cancelled >= 1 and req.ok >= 1
    assert req.total == req.ok + req.error + req.cancelled
    records = read_records(out / "requests.jsonl")
    assert len(records) == req.total
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    # the API key never reaches the outputs
    for f in out.iterdir():
        assert "sekrit-value-123" not in f.read_text()
    assert "sekrit-value-123" not in stdout + stderr


def test_warns_when_the_engine_did_not_see_the_ids_sent(synthetic, tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=6)
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--add-bos", "--model-name", "m")
    s = run(eng.url, "vllm", ds, tmp_path / "out", concurrency=2, num_requests=6)
    assert s.requests.ok == 6
    assert any("prompt_tokens differ" in w and "6 request(s)" in w for w in s.warnings)
    records = read_records(tmp_path / "out" / "requests.jsonl")
    assert all(r["usage_prompt_tokens"] == r["input_tokens"] + 1 for r in records)
