"""The prompt file format (JSONL and parquet) and the `openai` adapter for vendor endpoints."""

from __future__ import annotations

import json

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFileError, PromptRecord, read_prompts, write_prompts
from loadgen.engines.tokencount import neutral_counter
from loadgen.results.records import read_records
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from loadgen.synthetic.wire import detokenize

RECS = [
    PromptRecord(id="a", category="coding", prompt_token_ids=[1, 2, 3], max_tokens=5,
                 messages=[{"role": "user", "content": "write a loop"}],
                 meta={"source": "unit", "license": "MIT"}),
    PromptRecord(id="b", category="qa", prompt_token_ids=[4, 5], turns=[[6, 7], [8]]),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_round_trip(tmp_path, suffix):
    path = write_prompts(tmp_path / f"p{suffix}", RECS, {"tokenizer": "unit-tok"})
    pf = read_prompts(path)
    assert pf.tokenizer == "unit-tok"
    assert [r.to_dict() for r in pf.records] == [r.to_dict() for r in RECS]


@pytest.mark.parametrize("line,expect", [
    ({"category": "c", "prompt_token_ids": [1]}, "missing required field 'id'"),
    ({"id": "x", "category": "c", "prompt_token_ids": []}, "'prompt_token_ids' is empty"),
    ({"id": "x", "category": "c", "prompt_token_ids": [1, -2]}, "'prompt_token_ids'[1]"),
    ({"id": "x", "category": "c", "prompt_token_ids": [1], "turns": [[2], "3"]},
     "'turns[1]'"),
    ({"id": "x", "category": "c", "prompt_token_ids": [1], "max_tokens": 0}, "'max_tokens'"),
    ({"id": "x", "category": "", "prompt_token_ids": [1]}, "'category'"),
])
def test_bad_records_name_line_and_field(tmp_path, line, expect):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "ok", "category": "c", "prompt_token_ids": [1]}) + "\n"
                    + json.dumps(line) + "\n")
    with pytest.raises(PromptFileError) as err:
        read_prompts(path)
    assert f"{path}:2" in str(err.value) and expect in str(err.value)


def test_file_level_errors(tmp_path):
    dup = tmp_path / "dup.jsonl"
    row = json.dumps({"id": "a", "category": "c", "prompt_token_ids": [1]})
    dup.write_text(row + "\n" + row + "\n")
    with pytest.raises(PromptFileError, match="duplicate id"):
        read_prompts(dup)
    bad_json = tmp_path / "j.jsonl"
    bad_json.write_text('{"id": "a",\n')
    with pytest.raises(PromptFileError, match=r"j.jsonl:1: not valid JSON"):
        read_prompts(bad_json)
    with pytest.raises(PromptFileError, match="no such prompt file"):
        read_prompts(tmp_path / "missing.jsonl")
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(PromptFileError, match="no prompt records"):
        read_prompts(empty)
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"loadgen_text_prompts": 1}) + "\n"
                    + json.dumps({"id": "a", "category": "c", "turns": ["hi"]}) + "\n")
    with pytest.raises(PromptFileError, match=r"text prompt file.*loadgen data tokenize"):
        read_prompts(text)


def test_openai_adapter_token_ids_and_chat(synthetic, tmp_path, monkeypatch):
    """A vendor-style endpoint (the synthetic engine's OpenAI surface) behind an API key:
    token ids to /v1/completions, and text messages to /v1/chat/completions."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "vendor-m",
                    "--truth-log", str(truth))
    ds = write_prompts(tmp_path / "p.jsonl", [
        PromptRecord(id=f"p{i}", category="c", prompt_token_ids=[10 + i, 20, 30],
                     messages=[{"role": "user", "content": f"question {i}"}])
        for i in range(6)])
    monkeypatch.setenv("VENDOR_KEY", "sk-test-not-real")
    for mode in ("completions", "chat"):
        out = tmp_path / mode
        cfg = RunConfig.build(endpoint=eng.url, engine="openai", out=out, output_len=12,
                              concurrency=2, num_requests=6, model="vendor-m",
                              api_key_env="VENDOR_KEY", openai_mode=mode)
        s = run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])
        assert s.requests.ok == 6, s.error_reasons
        recs = read_records(out / "requests.jsonl")
        assert all(r["output_tokens"] == 12 for r in recs)
        # token ids in completions mode, continuous usage counts in chat mode
        assert s.token_count_source == ("token_ids" if mode == "completions"
                                           else "continuous_usage")
        for f in out.iterdir():
            assert "sk-test-not-real" not in f.read_text()
        # tokenizer-neutral counts: the output text in o200k_base
        counter = neutral_counter()
        if counter is None:
            continue
        count, name = counter
        assert s.throughput.neutral_tokenizer == name
        texts = {r["prompt_sha256"]: detokenize(r["output_token_ids"]) for r in read_truth(truth)}
        prompts = {p.id: p for p in read_prompts(ds).records}
        if mode == "completions":
            for r in recs:
                digest = prompt_digest(prompts[r["prompt_id"]].prompt_token_ids)
                assert r["neutral_output_tokens"] == count(texts[digest])
        ratio = s.throughput.neutral_tokens_per_engine_token
        assert s.throughput.neutral_output_tokens_per_s == pytest.approx(
            ratio * s.throughput.output_tokens_per_s)
