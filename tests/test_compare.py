"""`loadgen compare`: the bootstrap against known truths, then real runs on the synthetic engine
(SD on vs off, an identical configuration with another seed, a run against itself)."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from loadgen.cli.compare import main as compare_main
from loadgen.compare import (
    CompareError,
    PooledQuantiles,
    compare_dirs,
    compare_runs,
    load_run,
    resample_counts,
    throughput_estimates,
    weighted_quantiles,
)
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.process import SyntheticProcess

# ------------------------------------------------------------------------------------------
# Synthetic numbers with a known truth
# ------------------------------------------------------------------------------------------


def test_weighted_quantiles_equal_numpy_on_each_resample():
    rng = np.random.default_rng(1)
    vals = np.sort(rng.lognormal(0, 1, 57))
    vals[10:14] = vals[10]  # ties
    counts = resample_counts(rng, vals.size, 40)
    assert (counts.sum(axis=1) == vals.size).all()
    qs = (0.0, 0.5, 0.9, 0.99, 1.0)
    got = weighted_quantiles(vals, counts, qs)
    for row, c in zip(got, counts, strict=True):
        expect = np.percentile(np.repeat(vals, c), [q * 100 for q in qs])
        assert row == pytest.approx(expect, rel=1e-12)
    # a subset (zero counts) and an empty row
    counts[:, ::2] = 0
    counts[0] = 0
    got = weighted_quantiles(vals, counts, (0.5,))
    assert np.isnan(got[0, 0])
    for row, c in zip(got[1:], counts[1:], strict=True):
        assert row[0] == pytest.approx(np.percentile(np.repeat(vals, c), 50), rel=1e-12)


def _itl_like(rng: np.random.Generator, n_req: int, events: tuple[int, int]):
    ev = rng.integers(*events, n_req)
    req = np.repeat(np.arange(n_req), ev)
    w = rng.integers(1, 5, req.size)
    val = rng.gamma(2, 1.5, req.size) * (1 + (req % 7) / 7)  # requests differ
    return val, w, req


def test_pooled_itl_quantiles_against_exact():
    rng = np.random.default_rng(2)
    qs = (0.5, 0.9, 0.99)
    # few distinct values near each target: one bin each, and the result is exact
    n_req = 300
    val, w, req = _itl_like(rng, n_req, (5, 40))
    order = np.argsort(val)
    pq = PooledQuantiles(val, w, req, n_req, qs, val[order], w[order])
    counts = resample_counts(rng, n_req, 30)
    exact = np.array([np.percentile(np.repeat(val, w * c[req]), [50, 90, 99]) for c in counts])
    assert pq(counts) == pytest.approx(exact, rel=1e-9)
    # many (as in a large run): bins on a grid of levels; the error is small against the
    # bootstrap spread the CI is made of
    n_req = 2000
    val, w, req = _itl_like(rng, n_req, (50, 150))
    order = np.argsort(val)
    counts = resample_counts(rng, n_req, 30)
    exact = np.array([np.percentile(np.repeat(val, w * c[req]), [50, 90, 99]) for c in counts])
    spread = exact.std(axis=0)
    pq = PooledQuantiles(val, w, req, n_req, qs, val[order], w[order])
    assert pq.edges.size <= 2100  # budget CELLS / n_req
    err = np.abs(pq(counts) - exact).max(axis=0)
    assert (err < 0.1 * spread).all(), (err, spread)
    pq.CELLS = 300 * n_req  # as tight as for 13,000+ requests
    pq.__init__(val, w, req, n_req, qs, val[order], w[order])
    assert pq.edges.size <= 302
    err = np.abs(pq(counts) - exact).max(axis=0)
    assert (err < 0.25 * spread).all(), (err, spread)


def fake_run(path: Path, ttft_ms: np.ndarray, *, tokens: int = 2, engine: str = "vllm",
             arrivals: list[list[int]] | None = None, window: tuple[int, int] | None = None,
             **config) -> Path:
    """A run directory whose ok requests have the given TTFTs (sent one after another)."""
    path.mkdir(parents=True, exist_ok=True)
    recs = []
    t = 10**12
    for i, v in enumerate(ttft_ms):
        send = t
        if arrivals is not None:
            arr = arrivals[i]
        else:
            first = send + int(v * 1e6)
            arr = [first + k * 1_000_000 for k in range(tokens)]
        recs.append({
            "index": i, "prompt_id": f"p{i}", "category": "c", "turn": 0, "warmup": False,
            "input_tokens": 10, "expected_tokens": len(arr), "scheduled_ns": 0,
            "send_ns": send, "first_token_ns": arr[0], "end_ns": arr[-1], "status": "ok",
            "error": None, "output_tokens": len(arr), "events": len(arr), "arrivals_ns": arr,
            "event_tokens": [1] * len(arr), "acceptance_length": None})
        t = arr[-1] + 1
    (path / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    start, end = window or (10**12, t)
    (path / "summary.json").write_text(json.dumps(
        {"window": {"start_ns": start, "end_ns": end, "includes_drain": False},
         "acceptance": {"source": None}, "warnings": []}))
    cfg = {"engine": engine, "output_len": tokens, "concurrency": 1, **config}
    (path / "manifest.json").write_text(json.dumps(
        {"config": cfg, "dataset": {"sha256": "x" * 64, "path": "d", "header": {}},
         "status": "complete", "host": {"hostname": "h"}}))
    return path


def _row(result: dict, key: str) -> dict:
    return next(r for r in result["statistics"] if r["key"] == key)


def test_bootstrap_ci_of_mean_and_median_against_truth(tmp_path):
    """Samples of N(μ, σ): the CI of a mean covers μ about 95% of the time and is about
    2·1.96·σ/√n wide; the CI of B − A covers μB − μA with width 2·1.96·σ·√(2/n); the
    median's CI covers the true median difference."""
    n, sigma, mu_a, mu_b, trials = 200, 10.0, 100.0, 103.0, 80
    rng = np.random.default_rng(7)
    cover_a = cover_d = cover_med = 0
    widths_a, widths_d, widths_med = [], [], []
    for t in range(trials):
        a = load_run(fake_run(tmp_path / f"a{t}", rng.normal(mu_a, sigma, n)), "A")
        b = load_run(fake_run(tmp_path / f"b{t}", rng.normal(mu_b, sigma, n)), "B")
        res = compare_runs(a, b, resamples=1000, seed=t)
        mean, med = _row(res, "ttft_ms.mean"), _row(res, "ttft_ms.p50")
        lo, hi = mean["ci_a"]
        cover_a += lo <= mu_a <= hi
        widths_a.append(hi - lo)
        lo, hi = mean["ci_diff"]
        cover_d += lo <= mu_b - mu_a <= hi
        widths_d.append(hi - lo)
        lo, hi = med["ci_diff"]
        cover_med += lo <= mu_b - mu_a <= hi
        widths_med.append(hi - lo)
    # 80 trials at 95%: a count below 68 (85%) has probability < 0.1%
    assert cover_a >= 68 and cover_d >= 68 and cover_med >= 68
    assert np.mean(widths_a) == pytest.approx(2 * 1.96 * sigma / np.sqrt(n), rel=0.1)
    assert np.mean(widths_d) == pytest.approx(2 * 1.96 * sigma * np.sqrt(2 / n), rel=0.1)
    # the sample median's standard error is √(π/2)·σ/√n
    assert np.mean(widths_med) == pytest.approx(
        2 * 1.96 * np.sqrt(np.pi / 2) * sigma * np.sqrt(2 / n), rel=0.25)


def test_throughput_block_bootstrap_against_poisson_truth(tmp_path):
    """Tokens arriving as a Poisson process of rate λ over a window of D seconds: the CI of
    output tokens/s covers λ about 95% of the time and is about 2·1.96·√(λ/D) wide."""
    lam, dur, n_req, trials = 400.0, 20.0, 200, 100
    rng = np.random.default_rng(3)
    cover, widths = 0, []
    t0 = 10**12
    for t in range(trials):
        per = dur / n_req  # each request lasts one slot: its tokens arrive in it
        arrivals = []
        for i in range(n_req):
            k = max(int(rng.poisson(lam * per)), 2)
            times = np.sort(rng.uniform(i * per, (i + 1) * per, k))
            arrivals.append([t0 + int(x * 1e9) for x in times])
        path = fake_run(tmp_path / f"r{t}", np.zeros(n_req), arrivals=arrivals,
                        window=(t0, t0 + int(dur * 1e9)))
        est = throughput_estimates(load_run(path, "A"), 2000, np.random.default_rng(t))
        row = est["output_tokens_per_s"]
        assert row.value == pytest.approx(sum(map(len, arrivals)) / dur)
        assert n_req * 0.9 <= row.n <= n_req  # blocks of one median request
        lo, hi = np.percentile(row.reps, [2.5, 97.5])
        cover += lo <= lam <= hi
        widths.append(hi - lo)
    assert cover >= 88  # P(fewer) < 1% at a true 95%
    assert np.mean(widths) == pytest.approx(2 * 1.96 * np.sqrt(lam / dur), rel=0.15)


def test_too_few_requests_give_no_ci(tmp_path):
    a = fake_run(tmp_path / "a", np.full(5, 10.0))
    b = fake_run(tmp_path / "b", np.full(30, 12.0))
    res = compare_dirs(a, b)
    row = _row(res, "ttft_ms.mean")
    assert row["diff"] == pytest.approx(2.0)
    assert row["ci_diff"] is None and row["significant"] is None
    assert row["verdict"] == "no CI" and "only 5" in row["reason"]
    assert _row(res, "ttft_ms.p99")["ci_diff"] is None


def test_large_run_gives_intervals(tmp_path):
    """5,000 requests of 64 tokens, 2,000 resamples per run: the pooled ITL percentiles get an
    interval (their cost is measured by scripts, not here: docs/COMPARE.md)."""
    rng = np.random.default_rng(0)
    n = 5000
    arrivals, t = [], 10**12
    for _ in range(n):
        gaps = rng.gamma(2, 2e6, 64).astype(np.int64)
        arr = (t + np.cumsum(gaps)).tolist()
        arrivals.append(arr)
        t = arr[-1] + 1
    a = load_run(fake_run(tmp_path / "a", np.zeros(n), arrivals=arrivals), "A")
    res = compare_runs(a, a)
    row = _row(res, "itl_ms.p99")
    assert row["ci_diff"] is not None
    lo, hi = row["ci_diff"]
    assert lo <= 0 <= hi  # a run against itself


# ------------------------------------------------------------------------------------------
# Real runs on the synthetic engine
# ------------------------------------------------------------------------------------------

CATEGORIES = {"coding": (7, "0.9,0.8,0.7"), "math": (11, "0.7,0.5"), "chat": (13, "0.5,0.3")}
N_REQUESTS = 90


def make_dataset(path: Path, n: int = N_REQUESTS) -> Path:
    rng = random.Random(0)
    recs = []
    for i in range(n):
        cat = list(CATEGORIES)[i % len(CATEGORIES)]
        ids = [CATEGORIES[cat][0]] + [rng.randrange(100, 40000)
                                      for _ in range(rng.randrange(16, 120))]
        recs.append(PromptRecord(id=f"p{i}", category=cat, prompt_token_ids=ids))
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


def _engine_args(*extra: str, spec: bool = True) -> list[str]:
    args = ["--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2", "--draft-ms",
            "0.1", "--per-request-spec-metrics", "summary", *extra]
    if spec:
        args += ["-k", "3"]
        for marker, rates in CATEGORIES.values():
            args += ["--accept-rates-for", f"{marker}={rates}"]
    else:
        args += ["--no-spec"]
    return args


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Three real runs of the same dataset at concurrency 4: SD, no SD, SD with another seed."""
    root = tmp_path_factory.mktemp("compare")
    ds = make_dataset(root / "ds.jsonl")
    prompts = read_prompts(ds)
    configs = {"sd": _engine_args(), "nosd": _engine_args(spec=False),
               "sd_seed2": _engine_args("--seed", "2")}
    out = {}
    for name, args in configs.items():
        with SyntheticProcess(args) as eng:
            cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=root / name, model="m",
                                  output_len=32, concurrency=4, num_requests=N_REQUESTS,
                                  warmup_requests=0, progress=False)
            s = run_benchmark(cfg, prompts, ds, argv=["test"])
        assert s.requests.ok == N_REQUESTS
        out[name] = root / name
    return out


def test_sd_against_no_sd_significant_with_the_right_sign(runs):
    res = compare_dirs(runs["sd"], runs["nosd"])
    # B (no SD) is slower for each user: fewer tokens/s, longer TPOT; the CI says so.
    for key in ("per_user_tokens_per_s.mean", "per_user_tokens_per_s.p50"):
        row = _row(res, key)
        assert row["significant"] and row["ci_diff"][1] < 0 and row["verdict"] == "B worse"
    for key in ("tpot_ms.mean", "tpot_ms.p50", "category.coding.tpot_ms.p50"):
        row = _row(res, key)
        assert row["significant"] and row["ci_diff"][0] > 0 and row["verdict"] == "B worse"
        assert row["ci_ratio"][0] > 1
    # AL exists only in A: said, not compared.
    for key in ("al_counters", "al_per_request.token_weighted", "category.coding.al"):
        row = _row(res, key)
        assert row["a"] > 1.5 and row["b"] is None
        assert row["verdict"] == "not compared" and "in B" in row["reason"]
    # p99 of 90 requests: no CI, and the reason says why
    assert "p99 CI needs" in _row(res, "tpot_ms.p99")["reason"]
    # same dataset, load and output length: nothing to warn about
    assert not [w for w in res["warnings"] if "different" in w]


def test_point_values_equal_each_runs_summary(runs):
    res = compare_dirs(runs["sd"], runs["nosd"])
    for side, name in (("a", "sd"), ("b", "nosd")):
        s = json.loads((runs[name] / "summary.json").read_text())
        expect = {
            "output_tokens_per_s": s["throughput"]["output_tokens_per_s"],
            "requests_per_s": s["throughput"]["requests_per_s"],
            "per_user_tokens_per_s.mean": s["per_user_tokens_per_s"]["mean"],
            "per_user_tokens_per_s.p50": s["per_user_tokens_per_s"]["p50"],
            "al_counters": s["acceptance"].get("acceptance_length"),
            "al_per_request.token_weighted": s["acceptance"]["per_request"]["token_weighted"],
        }
        for m in ("ttft", "tpot", "itl", "e2e"):
            for st in ("mean", "p50", "p90", "p99"):
                expect[f"{m}_ms.{st}"] = s["latency_ms"][m][st]
        for cat, c in s["categories"].items():
            expect[f"category.{cat}.al"] = c["acceptance_length"]
            expect[f"category.{cat}.tpot_ms.p50"] = c["tpot_ms_p50"]
        for key, v in expect.items():
            got = _row(res, key)[side]
            assert (got is None) == (v is None), key
            if v is not None:
                assert got == pytest.approx(v, rel=1e-9), key


def test_run_against_itself_nothing_significant(runs):
    res = compare_dirs(runs["sd"], runs["sd"])
    tested = [r for r in res["statistics"] if r["ci_diff"] is not None]
    assert len(tested) >= 20
    for r in res["statistics"]:
        if r["a"] is not None:
            assert r["diff"] == 0 and r["ratio"] == 1
    for r in tested:
        lo, hi = r["ci_diff"]
        assert lo < 0 < hi and not r["significant"], r["key"]
        # A and B are resampled independently from the same data: the difference's law is
        # symmetric about 0, so its interval is about centred (a tail quantile of a few
        # hundred values moves in steps: not exactly; 0.25 of the width failed on one key)
        assert abs(lo + hi) < 0.5 * (hi - lo), r["key"]
        assert r["ci_ratio"][0] < 1 < r["ci_ratio"][1]


def test_identical_configuration_other_seed(runs):
    """Same SD settings, another engine seed: AL differs only by chance, so its CIs (taken
    at 99.9% so the test is not flaky) contain 0. Timing metrics are not asserted
    non-significant: runs made one after another on a shared machine can differ for real
    (docs/COMPARE.md), so only their size is checked."""
    res = compare_dirs(runs["sd"], runs["sd_seed2"], confidence=0.999, resamples=4000)
    for key in ("al_per_request.token_weighted", "al_per_request.request_weighted",
                *(f"category.{c}.al" for c in CATEGORIES)):
        row = _row(res, key)
        assert row["ci_diff"] is not None and not row["significant"], key
    assert _row(res, "al_counters")["ratio"] == pytest.approx(1, abs=0.1)
    assert 0.5 < _row(res, "tpot_ms.p50")["ratio"] < 2
    assert not [w for w in res["warnings"] if "different" in w]


def _copy_with(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for k, v in config.items():
        if k == "sha256":
            m["dataset"]["sha256"] = v
        else:
            m["config"][k] = v
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_comparability_warnings(runs, tmp_path):
    b = _copy_with(runs["nosd"], tmp_path / "b", sha256="0" * 64, output_len=64,
                   concurrency=8, engine="openai", temperature=0.7, top_p=0.9)
    res = compare_dirs(runs["sd"], b)
    text = " | ".join(res["warnings"])
    assert "different sampling: greedy vs T=0.7 top_p=0.9" in text
    assert "different sampling" not in " | ".join(compare_dirs(runs["sd"], runs["nosd"])[
        "warnings"])
    assert "different datasets" in text
    assert "different output length: 32 vs 64" in text
    assert "different load: concurrency=4 vs concurrency=8" in text
    notes = " | ".join(res["notes"])
    assert "different engine protocols: vllm vs openai" in notes and "vendor" in notes
    # different prompts sent
    c = tmp_path / "c"
    shutil.copytree(runs["nosd"], c)
    lines = (c / "requests.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    for r in recs[:10]:
        r["prompt_id"] += "x"
        r["input_tokens"] += 1
    (c / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = compare_dirs(runs["sd"], c)
    assert any("different prompts: 80 of 90" in w for w in res["warnings"])


def test_torn_last_line_tolerated_malformed_line_before_it_an_error(runs, tmp_path, capsys):
    """A crash can leave the last line of requests.jsonl half written: it is skipped and the
    run counts one request fewer. A bad line before the last is corruption: an error naming
    the file and the line."""
    lines = (runs["sd"] / "requests.jsonl").read_text().splitlines(keepends=True)
    torn = tmp_path / "torn"
    shutil.copytree(runs["sd"], torn)
    for tail in ("", "\n", "\n  \n"):  # blank lines after the torn one: still the last
        (torn / "requests.jsonl").write_text("".join(lines[:-1]) + lines[-1][:40] + tail)
        run = load_run(torn)
        assert len(run.records) == len(lines) - 1
        assert len(run.ok) == N_REQUESTS - 1
    res = compare_dirs(runs["sd"], torn)
    assert res["errors"]["a"]["ok"] == N_REQUESTS
    assert res["errors"]["b"]["ok"] == res["errors"]["b"]["total"] == N_REQUESTS - 1
    assert _row(res, "ttft_ms.mean")["n_b"] == N_REQUESTS - 1

    bad = tmp_path / "bad"
    shutil.copytree(runs["sd"], bad)
    damaged = [*lines[:41], lines[41][:40] + "\n", *lines[42:]]
    (bad / "requests.jsonl").write_text("".join(damaged))
    where = re.escape(f"{bad / 'requests.jsonl'}:42: not valid JSON")
    with pytest.raises(CompareError, match=where):
        load_run(bad)
    assert compare_main([str(runs["sd"]), str(bad), "--quiet"]) == 2
    assert re.search(where, capsys.readouterr().err)


def test_cli_writes_json_and_markdown(runs, tmp_path, capsys):
    out_json, out_md = tmp_path / "c.json", tmp_path / "c.md"
    rc = compare_main([str(runs["sd"]), str(runs["nosd"]), "--json", str(out_json),
                       "--markdown", str(out_md), "--resamples", "500"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "per-user tokens/s mean" in printed and "B worse" in printed, printed
    data = json.loads(out_json.read_text())
    assert data["settings"]["resamples"] == 500
    assert {r["key"] for r in data["statistics"]} >= {"output_tokens_per_s", "itl_ms.p90"}
    md = out_md.read_text()
    assert md.startswith("# loadgen compare") and "| TPOT p50 (ms) |" in md
    assert compare_main([str(runs["sd"]), str(tmp_path / "nowhere")]) == 2


def test_register_adds_a_compare_command(runs, tmp_path):
    import argparse

    from loadgen.cli.compare import register

    parser = argparse.ArgumentParser(prog="loadgen")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["compare", str(runs["sd"]), str(runs["sd_seed2"]), "--quiet",
                              "--json", str(tmp_path / "x.json"), "--confidence", "0.9"])
    assert args.func(args) == 0
    assert json.loads((tmp_path / "x.json").read_text())["settings"]["confidence"] == 0.9
