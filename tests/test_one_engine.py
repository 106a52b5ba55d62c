"""One run engine: every run option in all three modes (this process, two worker processes, Ray
actors on a local cluster), checked on what the synthetic engine received (its truth log), not
on what the summary says; and the summary a pure function of the run directory."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from loadgen.analysis.rundir import summarize_run
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.engines.sampling import Sampling
from loadgen.results.records import read_run_records
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from tests.synthetic_data import CATEGORIES, make_dataset, rates_args
from tests.test_sampling_windows import truth_al_by_category

MODES = {"single": {}, "workers": {"workers": 2}, "ray": {"ray": "local"}}
# the fast lane runs the single-process mode; worker processes and Ray are the slow lane's
ALL_MODES = [pytest.param(m, marks=[] if m == "single" else [pytest.mark.slow]) for m in MODES]


def _mode(mode: str) -> dict:
    # not imported here: loadgen connects to its loopback cluster before ray is imported
    if mode == "ray" and importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install -e '.[scale]')")
    return dict(MODES[mode])


def start(synthetic, truth, *extra: str):
    return synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "2",
                     "-k", "3", "--model-name", "m", *rates_args(), *extra)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_sampling_windows_warmup_and_salt_reach_the_engine(synthetic, tmp_path, mode):
    """vLLM without per-request SD numbers: the first warm-up request tells, category windows
    follow, each category's AL equals the truth; sampling and the cache salt reach every
    request the engine received; the summary is reproduced from the run directory."""
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=24)
    out = tmp_path / "out"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=16,
                          concurrency=2, num_requests=24, warmup_requests=2, temperature=0.7,
                          top_p=0.9, seed_per_request=True, seed=11, **_mode(mode))
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])
    recs = read_run_records(out)
    seen = read_truth(truth)
    # what the engine received: every request sampled as asked, each with its own seed
    assert len(seen) == len(recs) == s.requests.total + s.requests.warmup
    assert all(t["sampling"]["temperature"] == 0.7 and t["sampling"]["top_p"] == 0.9
               for t in seen)
    want = Sampling(seed_per_request=True, run_seed=11)
    assert sorted(t["sampling"]["seed"] for t in seen) == sorted(
        want.request_seed(r["index"], r["turn"]) for r in recs)
    assert s.sampling["temperature"] == 0.7
    assert s.prefix_cache is not None and s.prefix_cache.policy == "salted"
    # category windows, decided by the first warm-up request, in every mode
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["category_windows_effective"] is True
    assert s.window.category_windows == 3
    prompts = {p.id: p for p in read_prompts(ds).records}
    truth_cat = truth_al_by_category(truth, prompts, recs)
    for cat in CATEGORIES:
        c = s.categories[cat]
        assert c.requests == 8
        assert c.acceptance_length == pytest.approx(truth_cat[cat][0], rel=1e-12)
        assert c.window_counters["generation_tokens"] == 8 * 16
    # the summary is a pure function of the run directory
    assert summarize_run(out).to_dict() == json.loads((out / "summary.json").read_text())


def _conversations(path, n: int = 6):
    recs = []
    for i in range(n):
        cat = list(CATEGORIES)[i % 3]
        marker = CATEGORIES[cat][0]
        recs.append(PromptRecord(id=f"c{i}", category=cat,
                                 prompt_token_ids=[marker, 500 + i, 600 + i, 700 + i],
                                 turns=[[800 + i, 801], [900 + i, 901, 902]]))
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


@pytest.mark.parametrize("mode", ALL_MODES)
def test_multi_turn_replays_each_reply_in_every_mode(synthetic, tmp_path, mode):
    """Each later turn the engine received is the previous prompt, the engine's own reply and
    the next user turn, byte for byte."""
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, truth, "--per-request-spec-metrics", "summary")
    ds = _conversations(tmp_path / "conv.jsonl")
    out = tmp_path / "out"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=8,
                          concurrency=2, num_requests=6, warmup_requests=0, **_mode(mode))
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])
    assert s.requests.ok == s.requests.total == 18  # 6 conversations x 3 turns
    seen = read_truth(truth)
    by_digest = {t["prompt_sha256"]: t for t in seen}
    assert len(seen) == 18
    for p in read_prompts(ds).records:
        ids = list(p.prompt_token_ids)
        t = by_digest[prompt_digest(ids)]  # the engine received exactly this prompt
        for turn in p.turns:
            ids = ids + t["output_token_ids"] + turn
            t = by_digest[prompt_digest(ids)]
    assert summarize_run(out).to_dict() == json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("mode", ALL_MODES)
def test_vendor_text_mode_in_every_mode(synthetic, tmp_path, mode):
    """--engine openai --openai-mode chat with a text prompt file: every request the engine
    received is a chat request with the run's sampling."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "2",
                    "--model-name", "m")
    ds = tmp_path / "text.jsonl"
    ds.write_text("".join(json.dumps({"id": f"t{i}", "category": "qa", "messages": [
        {"role": "user", "content": f"question number {i}: why is the sky blue?"}]}) + "\n"
        for i in range(6)))
    out = tmp_path / "out"
    cfg = RunConfig.build(endpoint=eng.url, engine="openai", openai_mode="chat", out=out, model="m",
                          output_len=8, concurrency=2, num_requests=6, warmup_requests=0,
                          temperature=0.5, **_mode(mode))
    s = run_benchmark(cfg, read_prompts(ds, text=True), ds, argv=["t"])
    assert s.requests.ok == 6, s.error_reasons
    seen = read_truth(truth)
    assert len(seen) == 6
    assert all(t["endpoint"] == "/v1/chat/completions" for t in seen)
    assert all(t["sampling"]["temperature"] == 0.5 for t in seen)


def _argv(url: str, ds, out, mode: str, *extra: str) -> list[str]:
    flags = {"single": [], "workers": ["--workers", "2"], "ray": ["--ray", "local"]}[mode]
    return [sys.executable, "-m", "loadgen", "run", "--endpoint", url, "--engine", "vllm",
            "--dataset", str(ds), "--output-len", "200", "--concurrency", "4",
            "--num-requests", "400", "--warmup-requests", "0", "--out", str(out), "--quiet",
            *flags, *extra]


def _wait_for_records(out, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = "".join(p.read_text() for p in out.glob("requests*.jsonl"))
        if text.count('"status":"ok"') >= n:
            return
        time.sleep(0.05)
    raise AssertionError("no records")


# the open loop's load: 100 requests/s, each sent in the loop turn its time comes
RATE_LOAD = ("--request-rate", "100", "--arrival", "constant")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["single", "workers"])
@pytest.mark.parametrize("gap_s,load", [(None, ()), (0.005, ()), (0.05, ()), (None, RATE_LOAD),
                                        (0.005, RATE_LOAD)],
                         ids=["once", "twice-5ms", "twice-50ms", "rate-once", "rate-twice-5ms"])
def test_interrupts_leave_a_valid_result_in_every_mode(synthetic, tmp_path, mode, gap_s, load):
    """Ctrl-C once (``gap_s`` None), or twice ``gap_s`` apart, in a closed loop or an open
    one (``load``): exit 130, a summary that counts every record on disk, a manifest that says
    interrupted, never a process killed by the signal."""
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, truth, "--step-base-ms", "20")
    ds = make_dataset(tmp_path / "ds.jsonl")
    out = tmp_path / "out"
    argv = _argv(eng.url, ds, out, mode)
    if load:
        argv[argv.index("--concurrency"):argv.index("--concurrency") + 2] = load
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    _wait_for_records(out, 2)
    proc.send_signal(signal.SIGINT)
    if gap_s is not None:
        time.sleep(gap_s)
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted", stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True
    req = summary["requests"]
    assert req["total"] == len(read_run_records(out)) == req["ok"] + req["error"] + req[
        "cancelled"]
    assert req["ok"] >= 2
    if gap_s is None:  # the run ended itself: every in-flight request is a cancelled record
        assert req["cancelled"] >= 1


@pytest.mark.parametrize("mode", ALL_MODES)
def test_faults_are_accounted_in_every_mode(synthetic, tmp_path, mode):
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, truth, "--fault", "reset:p=0.3,after=3", "--seed", "3",
                "--per-request-spec-metrics", "summary")
    ds = make_dataset(tmp_path / "ds.jsonl")
    out = tmp_path / "out"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=12,
                          concurrency=4, num_requests=20, warmup_requests=2, **_mode(mode))
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])
    recs = read_run_records(out)
    assert len(recs) == 22 and s.requests.total == 20
    errors = [r for r in recs if r["status"] == "error"]
    faulted = sum(1 for t in read_truth(truth) if t["fault"])
    assert faulted > 0 and len(errors) == faulted
    assert all("mid-response" in r["error"] for r in errors)
