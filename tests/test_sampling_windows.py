"""Sampling parameters in each engine's own fields, category windows (per-category AL from
counter deltas when the engine gives no per-request SD) and the default warm-up, checked
against the synthetic engine's truth log."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import pairwise

import pytest
from rich.console import Console

from loadgen.cli.console import print_summary
from loadgen.config import WARMUP_SECONDS, RunConfig
from loadgen.data.prompts import read_prompts
from loadgen.engines.sampling import Sampling
from loadgen.results.records import read_records
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.model import prompt_digest
from loadgen.synthetic.process import read_truth
from tests.synthetic_data import CATEGORIES, make_dataset, rates_args

# The sampling fields each engine's request carries, under its own names.
NATIVE_SEED = {"vllm": "seed", "openai": "seed", "trtllm": "seed", "llamacpp": "seed",
               "sglang": "sampling_seed"}


def start(synthetic, protocol: str, truth, *extra: str):
    return synthetic("--protocol", protocol, "--truth-log", str(truth), "--step-base-ms", "1",
                     "-k", "3", "--model-name", "m", *rates_args(), *extra)


def go(url: str, engine: str, ds, out, **kw):
    cfg = RunConfig.build(endpoint=url, engine=engine, out=out, model="m",
                          output_len=kw.pop("output_len", 24), **kw)
    return run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "llamacpp", "openai"])
def test_sampling_reaches_each_engine_in_its_own_fields(synthetic, tmp_path, engine):
    truth = tmp_path / "truth.jsonl"
    protocol = "vllm" if engine == "openai" else engine
    eng = start(synthetic, protocol, truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=6)
    s = go(eng.url, engine, ds, tmp_path / "out", concurrency=2, num_requests=6,
           warmup_requests=0, temperature=0.7, top_p=0.9, top_k=20, seed_per_request=True,
           seed=5)
    assert s.requests.ok == 6, s.error_reasons
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    sent_seeds = {r["seed"] for r in recs}
    expect = Sampling(seed_per_request=True, run_seed=5)
    assert sent_seeds == {expect.request_seed(r["index"], r["turn"]) for r in recs}
    assert len(sent_seeds) == 6
    seen = [t["sampling"] for t in read_truth(truth)]
    seed_key = NATIVE_SEED[engine]
    assert all(t["temperature"] == 0.7 and t["top_p"] == 0.9 and t["top_k"] == 20
               for t in seen)
    assert {t[seed_key] for t in seen} == sent_seeds
    assert s.sampling == {"temperature": 0.7, "top_p": 0.9, "top_k": 20,
                          "seed_per_request": True}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["temperature"] == 0.7 and manifest["config"]["top_k"] == 20
    console = Console(record=True, width=200)
    print_summary(s, console)
    text = console.export_text()
    assert "T=0.7 top_p=0.9 top_k=20 seeded" in text


def test_default_is_greedy_without_seed(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, "sglang", truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    s = go(eng.url, "sglang", ds, tmp_path / "out", concurrency=1, num_requests=3,
           warmup_requests=0)
    assert all(t["sampling"] == {"temperature": 0.0} for t in read_truth(truth))
    console = Console(record=True, width=200)
    print_summary(s, console)
    assert "(greedy)" in console.export_text()


def truth_al_by_category(truth, prompts, records) -> dict[str, tuple[float, list[float]]]:
    """vLLM's counter formulas over the measured requests' truth: (AL, per-position rate)."""
    by_digest = {t["prompt_sha256"]: t for t in read_truth(truth)}
    drafts: dict[str, int] = defaultdict(int)
    accepted: dict[str, int] = defaultdict(int)
    pos: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in records:
        if r["warmup"]:
            continue
        t = by_digest[prompt_digest(prompts[r["prompt_id"]].prompt_token_ids)]
        c = r["category"]
        for d, a in zip(t["drafted_per_step"], t["accepted_per_step"], strict=True):
            if d:
                drafts[c] += 1
                accepted[c] += a
                for i in range(a):
                    pos[c][i] += 1
    return {c: (1 + accepted[c] / drafts[c], [p / drafts[c] for p in pos[c]])
            for c in drafts}


@pytest.mark.parametrize("load", [{"concurrency": 3}, {"request_rate": 40.0}])
def test_category_windows_give_each_category_its_truth_al(synthetic, tmp_path, load):
    """vLLM without --per-request-spec-decode-metrics: category windows are on by default and
    each category's AL and per-position rates from its counter delta equal the truth."""
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, "vllm", truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=24)
    out = tmp_path / "out"
    s = go(eng.url, "vllm", ds, out, num_requests=24, warmup_requests=2, **load)
    assert s.requests.ok == 24 and s.requests.warmup >= 6, s.error_reasons
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["category_windows_effective"] is True
    recs = read_records(out / "requests.jsonl")
    prompts = {p.id: p for p in read_prompts(ds).records}
    truth_cat = truth_al_by_category(truth, prompts, recs)
    assert s.window.category_windows == 3
    for cat in CATEGORIES:
        c = s.categories[cat]
        assert c.requests == 8
        assert "category window" in c.acceptance_source
        assert c.acceptance_length == pytest.approx(truth_cat[cat][0], rel=1e-12)
        assert c.per_position_rate == pytest.approx(truth_cat[cat][1], rel=1e-12)
        assert c.window_s and c.output_tokens_per_s
        # the window's counter delta holds exactly this category's measured requests
        assert c.window_counters["generation_tokens"] == 8 * 24
    cats = s.categories
    assert cats["coding"].acceptance_length > cats["math"].acceptance_length > cats[
        "roleplay"].acceptance_length
    # the categories ran one after another: each one's requests inside its own phase (after
    # request 0, the first warm-up request that told there is no per-request SD)
    assert recs[0]["index"] == 0 and recs[0]["warmup"]
    spans = {}
    for cat in CATEGORIES:
        mine = [r for r in recs[1:] if r["category"] == cat]
        spans[cat] = (min(r["send_ns"] for r in mine), max(r["end_ns"] for r in mine))
    ordered = sorted(spans.values())
    assert all(a[1] < b[0] for a, b in pairwise(ordered))
    # throughput sums over the windows (docs/METRICS.md)
    assert s.window.duration_s == pytest.approx(sum(c.window_s for c in cats.values()))


def test_per_request_sd_keeps_one_window(synthetic, tmp_path):
    """With per-request SD in the stream, the first warm-up request says so: no category
    windows, per-category AL from the requests."""
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, "vllm", truth, "--per-request-spec-metrics", "summary")
    ds = make_dataset(tmp_path / "ds.jsonl", n=12)
    s = go(eng.url, "vllm", ds, tmp_path / "out", concurrency=2, num_requests=12)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["category_windows_effective"] is False
    assert s.window.category_windows is None
    assert all(c.acceptance_source == "per_request" for c in s.categories.values())


def test_without_category_windows_the_summary_says_why_category_al_is_missing(synthetic,
                                                                              tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, "vllm", truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=6)
    s = go(eng.url, "vllm", ds, tmp_path / "out", concurrency=2, num_requests=6,
           category_windows=False)
    assert all(c.acceptance_length is None for c in s.categories.values())
    assert any("--category-windows" in w for w in s.warnings)


def test_default_warmup_is_the_concurrency(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = start(synthetic, "sglang", truth)
    ds = make_dataset(tmp_path / "ds.jsonl", n=12)
    s = go(eng.url, "sglang", ds, tmp_path / "out", concurrency=3, num_requests=9)
    recs = read_records(tmp_path / "out" / "requests.jsonl")
    assert s.requests.warmup == 3 and s.requests.total == 9
    warm = [r for r in recs if r["warmup"]]
    measured = [r for r in recs if not r["warmup"]]
    # warm-up ends before the window opens: every measured request is sent after it
    assert max(r["end_ns"] for r in warm) <= min(r["send_ns"] for r in measured)
    assert s.window.start_ns >= max(r["end_ns"] for r in warm)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["warmup_requests"] is None
    assert manifest["config"]["warmup_requests_effective"] == 3
    # rate mode: a few seconds of arrivals; an explicit 0 keeps cold requests
    rate = RunConfig.build(endpoint="x", engine="vllm", out=tmp_path, request_rate=2.5,
                           num_requests=5)
    assert rate.load.effective_warmup() == int(2.5 * WARMUP_SECONDS + 0.999)
    assert rate.replace(warmup_requests=0).load.effective_warmup() == 0
