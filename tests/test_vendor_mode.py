"""Vendor mode (`--engine openai`): text prompt files, reasoning deltas, error events in the
stream, 429 with Retry-After and --retry-429; all against the synthetic engine's vLLM surface."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFileError, read_prompts
from loadgen.data.textfmt import TextPrompt, write_text_prompts
from loadgen.engines.openai import completion_text
from loadgen.results.records import read_records
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.faults import STREAM_ERROR_MESSAGE
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from loadgen.synthetic.wire import detokenize, tokenize_text

TEXTS = [
    TextPrompt(id="t0", category="coding", turns=["write a loop", "now in rust"],
               system="be brief"),
    TextPrompt(id="t1", category="qa", turns=["what is SD?"]),
    TextPrompt(id="t2", category="qa", turns=["name a prime"]),
]


def chat_ids(messages: list[dict[str, str]]) -> list[int]:
    """The synthetic engine's own rendering of a chat request (protocols/openai.py)."""
    return tokenize_text("".join(f"<|{m['role']}|>{m['content']}" for m in messages)
                         + "<|assistant|>")


def vendor_run(url: str, ds: Path, out: Path, **kw) -> object:
    kw.setdefault("warmup_requests", 0)
    cfg = RunConfig.build(endpoint=url, engine="openai", out=out, model="m",
                          output_len=kw.pop("output_len", 8), concurrency=kw.pop("concurrency", 1),
                          **kw)
    return run_benchmark(cfg, read_prompts(ds, text=True), ds, argv=["t"])


def test_text_prompt_file_in_chat_mode_replays_turns_with_the_live_reply(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--truth-log", str(truth))
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS, {"built_by": "test"})
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="chat", num_requests=3,
                   shuffle=False)
    assert s.requests.ok == 4, s.error_reasons  # t0's two turns, t1, t2
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    by_digest = {r["prompt_sha256"]: r for r in read_truth(truth)}
    first = [{"role": "system", "content": "be brief"},
             {"role": "user", "content": "write a loop"}]
    t1 = by_digest[prompt_digest(chat_ids(first))]
    # turn 2 = turn 1's messages, the reply the engine generated, the next user turn
    second = [*first, {"role": "assistant", "content": detokenize(t1["output_token_ids"])},
              {"role": "user", "content": "now in rust"}]
    t2 = by_digest[prompt_digest(chat_ids(second))]
    turn_recs = sorted((r for r in recs if r["prompt_id"] == "t0"), key=lambda r: r["turn"])
    assert [r["turn"] for r in turn_recs] == [0, 1]
    # a text record's input_tokens is the server's own count of what it was sent
    assert [r["input_tokens"] for r in turn_recs] == [t1["prompt_len"], t2["prompt_len"]]
    assert all(r["text_prompt"] and r["output_tokens"] == 8 for r in recs)
    assert s.requests.reasoning_tokens is None  # no reasoning delta came
    assert all(r["reasoning_tokens"] is None for r in recs)
    # no "server saw other ids" warning for text prompts: there are no ids to compare
    assert not any("prompt_tokens differ" in w for w in s.warnings)


def test_messages_jsonl_and_text_completions_mode(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--truth-log", str(truth))
    msgs = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
    ds = tmp_path / "msgs.jsonl"
    ds.write_text("".join(json.dumps({"messages": m, **({"category": "a"} if i % 2 else {})})
                          + "\n" for i, m in enumerate(msgs)))
    pf = read_prompts(ds, text=True)
    assert [r.category for r in pf.records] == ["default", "a", "default", "a"]
    assert [r.id for r in pf.records] == ["line-1", "line-2", "line-3", "line-4"]
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="completions", num_requests=4)
    assert s.requests.ok == 4, s.error_reasons
    # completions mode sends the text as the prompt string
    assert {r["prompt_sha256"] for r in read_truth(truth)} == {
        prompt_digest(tokenize_text(completion_text(m))) for m in msgs}


def test_token_id_engines_refuse_text_files_with_one_clear_line(tmp_path, loadgen_cli):
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS)
    with pytest.raises(PromptFileError, match="tokenize it for the target model first"):
        read_prompts(ds)
    msgs = tmp_path / "m.jsonl"
    msgs.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    proc = loadgen_cli("run", "--endpoint", "http://127.0.0.1:9", "--engine", "vllm",
                       "--dataset", str(msgs), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen run: ")
    assert "text prompt file" in lines[0] and "--engine openai" in lines[0]


def test_reasoning_deltas_are_output_and_counted_apart(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--no-spec", "--step-base-ms", "1", "--model-name",
                    "m", "--reasoning-tokens", "5", "--truth-log", str(truth))
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS[1:])
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="chat", num_requests=4,
                   output_len=12)
    assert s.requests.ok == 4, s.error_reasons
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    assert all(r["output_tokens"] == 12 and r["reasoning_tokens"] == 5 for r in recs)
    assert s.requests.reasoning_tokens == 20
    assert s.requests.reasoning_share == pytest.approx(5 / 12)


def test_error_event_inside_the_stream_is_recorded_with_its_message(synthetic, tmp_path):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--fault", "stream_error:every=2,after=3")
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS[1:])
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="chat", num_requests=6)
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    errors = [r for r in recs if r["status"] == "error"]
    assert len(errors) == 3 and s.requests.ok == 3
    assert all(STREAM_ERROR_MESSAGE in r["error"] and r["output_tokens"] >= 3 for r in errors)


def test_429_recorded_and_not_retried_by_default(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--fault", "http429:every=3,retry_after=0.2", "--truth-log", str(truth))
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS[1:])
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="chat", num_requests=6)
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    limited = [r for r in recs if r["http_status"] == 429]
    assert len(limited) == 2 and s.requests.rate_limited == 2 and s.requests.retries == 0
    assert all(r["status"] == "error" and r["retry_after"] == "0.2" for r in limited)
    assert len(read_truth(truth)) == 6  # nothing was resent


def test_retry_429_waits_retry_after_and_counts_from_the_first_send(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--fault", "http429:every=3,retry_after=0.2", "--truth-log", str(truth))
    ds = write_text_prompts(tmp_path / "text.jsonl", TEXTS[1:])
    s = vendor_run(eng.url, ds, tmp_path / "out", openai_mode="chat", num_requests=6,
                   retry_429=2)
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    served = read_truth(truth)
    faults = [t for t in served if t["status"] == "fault:http429"]
    assert s.requests.ok == 6 and s.requests.rate_limited == 0
    assert s.requests.retries == len(faults) == sum(r["retries"] for r in recs) >= 2
    assert s.requests.retried == sum(1 for r in recs if r["retries"])
    by_index = sorted(served, key=lambda t: t["index"])
    for r in (r for r in recs if r["retries"]):
        # the first attempt is the 429; the record's latency counts from it
        attempts = [t for t in by_index if r["send_ns"] <= t["received_ns"] <= r["end_ns"]]
        assert attempts[0]["status"] == "fault:http429" and attempts[-1]["status"] == "ok"
        assert r["scheduled_ns"] == r["send_ns"] < attempts[0]["received_ns"]
        # the resend waited the server's Retry-After
        assert attempts[1]["received_ns"] - attempts[0]["end_ns"] >= 0.2e9
