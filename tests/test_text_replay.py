"""Multi-turn without output token ids (client/replay.py) and ``--dataset builtin`` everywhere
(data/builtin.py ``read_dataset``), against the synthetic engine's OpenAI surface.

The synthetic engine's ``--text-only`` streams /v1/completions as text (no ``token_ids``), as
llama-server and hosted APIs do; its truth log holds the digest of every prompt it received and
the ids it generated, so the ids of a later turn are checked against a known truth: the previous
prompt, the reply's text tokenized with the prompt file's tokenizer, the next user turn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.data.builtin import BUILTIN_TOKENIZER, read_dataset
from loadgen.data.prompts import write_prompts
from loadgen.data.tokenizer import load_tokenizer
from loadgen.results.records import read_records
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from loadgen.synthetic.wire import detokenize, tokenize_text

pytestmark = pytest.mark.timeout(180)


def multi_turn_file(path: Path, header: bool = True) -> Path:
    """The built-in set's two-turn records as SmolLM2 ids (with or without the header that
    names the tokenizer)."""
    pf, _ = read_dataset("builtin")
    recs = [r for r in pf.records if r.turns][:3]
    assert len(recs) == 3
    return write_prompts(path, recs, pf.header if header else {"built_by": "test"})


@pytest.fixture
def loadgen_run(loadgen_cli):
    """``loadgen run ARGS --quiet`` in this process (tests/conftest.py ``loadgen_cli``)."""
    return lambda *args: loadgen_cli("run", *args, "--quiet")


def text_only_engine(synthetic, truth):
    """The synthetic vLLM surface streaming text without ids, as llama-server's OpenAI one."""
    return synthetic("--protocol", "vllm", "--text-only", "--step-base-ms", "1",
                     "--model-name", "m", "--truth-log", str(truth))


def test_next_turn_built_from_the_reply_text_with_the_files_tokenizer(synthetic, tmp_path,
                                                                     loadgen_run):
    truth = tmp_path / "truth.jsonl"
    eng = text_only_engine(synthetic, truth)
    ds = multi_turn_file(tmp_path / "mt.jsonl")
    out = tmp_path / "run"
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--model", "m",
                    "--dataset", str(ds), "--output-len", "12", "--concurrency", "2",
                    "--warmup-requests", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    # said once, before the run
    assert r.stderr.count("tokenized with smollm2") == 1, r.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) == 6 and all(x["status"] == "ok" for x in recs), recs
    tok = load_tokenizer(BUILTIN_TOKENIZER)
    prompts = {p.id: p for p in read_dataset(ds)[0].records}
    sent = {t["prompt_sha256"]: t for t in read_truth(truth)}
    for first in (x for x in recs if x["turn"] == 0):
        p = prompts[first["prompt_id"]]
        t0 = sent[prompt_digest(p.prompt_token_ids)]  # what the engine generated for turn 1
        reply_ids = tok.encode(detokenize(t0["output_token_ids"]))
        second = next(x for x in recs if x["prompt_id"] == p.id and x["turn"] == 1)
        want = p.prompt_token_ids + reply_ids + p.turns[0]
        assert prompt_digest(want) in sent  # the engine received exactly these ids
        assert second["input_tokens"] == len(want)
        assert second["prompt_ids_from_text"] == len(reply_ids) > 0
        assert first["prompt_ids_from_text"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert any("tokenized with smollm2" in w for w in summary["warnings"])


def test_no_tokenizer_known_refused_before_anything_is_sent(synthetic, tmp_path, loadgen_run):
    truth = tmp_path / "truth.jsonl"
    eng = text_only_engine(synthetic, truth)
    ds = multi_turn_file(tmp_path / "mt.jsonl", header=False)
    out = tmp_path / "run"
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--model", "m",
                    "--dataset", str(ds), "--output-len", "8", "--out", str(out))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("loadgen run: ")
    assert "names no tokenizer" in lines[0] and "--no-multi-turn" in lines[0]
    assert read_truth(truth) == [] and not (out / "requests.jsonl").exists()
    # --no-multi-turn needs no tokenizer: the first turns run
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--model", "m",
                    "--dataset", str(ds), "--output-len", "8", "--out", str(out),
                    "--no-multi-turn", "--warmup-requests", "0")
    assert r.returncode == 0, r.stderr
    assert len(read_truth(truth)) == 3


def test_ids_in_the_stream_are_used_when_they_come(synthetic, tmp_path, loadgen_run):
    """vLLM's surface honours return_token_ids: the reply's own ids, nothing from text."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--truth-log", str(truth))
    ds = multi_turn_file(tmp_path / "mt.jsonl")
    out = tmp_path / "run"
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--model", "m",
                    "--dataset", str(ds), "--output-len", "8", "--warmup-requests", "0",
                    "--out", str(out))
    assert r.returncode == 0, r.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) == 6 and all(x["prompt_ids_from_text"] is None for x in recs)
    prompts = {p.id: p for p in read_dataset(ds)[0].records}
    sent = {t["prompt_sha256"]: t for t in read_truth(truth)}
    for p in prompts.values():
        t0 = sent[prompt_digest(p.prompt_token_ids)]
        assert prompt_digest(p.prompt_token_ids + t0["output_token_ids"] + p.turns[0]) in sent


@pytest.mark.parametrize("mode", ["chat", "ids"])
def test_dataset_builtin_in_run(synthetic, tmp_path, mode, loadgen_run):
    """``--dataset builtin``: text records in chat mode, SmolLM2 ids otherwise."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--truth-log", str(truth))
    out = tmp_path / "run"
    engine = (["--engine", "openai", "--openai-mode", "chat", "--model", "m"] if mode == "chat"
              else ["--engine", "vllm"])
    r = loadgen_run("--endpoint", eng.url, *engine, "--dataset", "builtin",
                    "--output-len", "4", "--num-requests", "3", "--warmup-requests", "0",
                    "--no-multi-turn", "--out", str(out))
    assert r.returncode == 0, r.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) == 3 and all(x["status"] == "ok" for x in recs)
    assert all(x["text_prompt"] is (mode == "chat") for x in recs)
    truth_recs = read_truth(truth)
    assert {t["endpoint"] for t in truth_recs} == {
        "/v1/chat/completions" if mode == "chat" else "/v1/completions"}
    if mode == "ids":
        ids = {prompt_digest(p.prompt_token_ids) for p in read_dataset("builtin")[0].records}
        assert {t["prompt_sha256"] for t in truth_recs} <= ids
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"]["path"].endswith("builtin_prompts.jsonl")


def test_scaled_run_replays_from_text_in_every_worker(synthetic, tmp_path, loadgen_run):
    truth = tmp_path / "truth.jsonl"
    eng = text_only_engine(synthetic, truth)
    ds = multi_turn_file(tmp_path / "mt.jsonl")
    out = tmp_path / "run"
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--model", "m",
                    "--dataset", str(ds), "--output-len", "8", "--concurrency", "2",
                    "--workers", "2", "--warmup-requests", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("tokenized with smollm2") == 1, r.stderr
    shards = sorted(out.glob("requests.*.jsonl"))
    recs = [x for s in shards for x in read_records(s)]
    assert len(shards) == 2 and len(recs) == 6 and all(x["status"] == "ok" for x in recs)
    sent = {t["prompt_sha256"] for t in read_truth(truth)}
    prompts = {p.id: p for p in read_dataset(ds)[0].records}
    for x in recs:
        assert (x["prompt_ids_from_text"] or 0) > 0 if x["turn"] == 1 else \
            x["prompt_ids_from_text"] is None
    # every first turn went out as its file ids
    assert all(prompt_digest(p.prompt_token_ids) in sent for p in prompts.values())


def test_sweep_reads_builtin_as_text_in_chat_mode(synthetic, tmp_path, loadgen_cli):
    import yaml

    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m")
    cfg = {"engine": "openai", "sd_configs": [{"label": "vendor", "endpoint": eng.url}],
           "datasets": [{"name": "builtin", "path": "builtin"}],
           "loads": {"concurrency": [2]},
           "run": {"output_len": 4, "num_requests": 4, "warmup_requests": 0,
                   "openai_mode": "chat", "model": "m", "multi_turn": False}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    r = loadgen_cli("sweep", "--config", tmp_path / "s.yaml", "--out", tmp_path / "sw",
                    "--quiet")
    assert r.returncode == 0, r.stderr
    recs = [x for f in (tmp_path / "sw").rglob("requests.jsonl") for x in read_records(f)]
    assert len(recs) == 4 and all(x["status"] == "ok" and x["text_prompt"] for x in recs)


def test_chat_mode_replays_a_token_id_files_text(synthetic, tmp_path, loadgen_run):
    """A token-id file in chat mode: its text messages go, split into turns (the first user
    turn, then each later one after the live reply); no tokenizer is needed."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m",
                    "--truth-log", str(truth))
    ds = multi_turn_file(tmp_path / "mt.jsonl", header=False)  # no tokenizer named
    out = tmp_path / "run"
    r = loadgen_run("--endpoint", eng.url, "--engine", "openai", "--openai-mode", "chat",
                    "--model", "m", "--dataset", str(ds), "--output-len", "8",
                    "--warmup-requests", "0", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "tokenized with" not in r.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) == 6 and all(x["status"] == "ok" and x["text_prompt"] for x in recs)
    sent = {t["prompt_sha256"]: t for t in read_truth(truth)}

    def rendered(msgs):  # the synthetic engine's chat rendering (protocols/openai.py)
        return tokenize_text("".join(f"<|{m['role']}|>{m['content']}" for m in msgs)
                             + "<|assistant|>")

    for p in read_dataset(ds)[0].records:
        users = [m for m in p.messages if m["role"] == "user"]
        first = [m for m in p.messages if m["role"] == "system"] + users[:1]
        t0 = sent[prompt_digest(rendered(first))]
        second = [*first, {"role": "assistant", "content": detokenize(t0["output_token_ids"])},
                  users[1]]
        assert prompt_digest(rendered(second)) in sent
