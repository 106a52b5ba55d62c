"""Production traces replayed with real content (loadgen/data/trace_*.py, loadgen/client/trace.py):
the build against the trace files themselves (exact lengths, output lengths, arrival offsets,
shared blocks where hash ids repeat, real text windows), and the replay against the synthetic
engine's truth log (schedule, exact lengths, max_tokens, prefix-cache reuse, scaled workers).
Skipped without the data kit or SmolLM2's tokenizer."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from loadgen.data.prompts import read_prompts
from loadgen.data.sources import default_data_root
from loadgen.data.trace_build import build_trace
from loadgen.data.trace_read import TraceSpec, parse_mapping
from loadgen.results.records import read_run_records
from loadgen.synthetic.process import read_truth
from tests.needs import installed_or_skip
from tests.test_scale import ray_cluster  # noqa: F401  (the local 2-node Ray cluster fixture)

installed_or_skip("transformers", "gguf")


def _data_root() -> Path | None:
    here = Path(__file__).resolve()
    for cand in (default_data_root(), here.parents[2] / "shared" / "data",
                 here.parents[3] / "shared" / "data"):
        if cand is not None and (cand / "traces").is_dir() and (cand / "prompts").is_dir():
            return cand
    return None


DATA = _data_root()
if DATA is None:
    pytest.skip("the data kit (../shared/data with traces/) is not present",
                allow_module_level=True)
TRACES = DATA / "traces"
MOONCAKE = TRACES / "mooncake_fast25_conversation.jsonl"
AZURE = TRACES / "azure_llm_2023_conv.csv"
MIX = {"coding": 0.3, "rag": 0.2, "writing": 0.2, "roleplay": 0.3}
N_MOONCAKE = 300


@pytest.fixture(scope="module")
def tok():
    from loadgen.data.tokenizer import load_tokenizer

    try:
        return load_tokenizer("smollm2")
    except Exception as exc:  # no cached GGUF and no package index
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")


@pytest.fixture(scope="module")
def built(tok, tmp_path_factory):
    """The first 300 rows of Mooncake's conversation trace and minutes 10-12 of Azure's."""
    d = tmp_path_factory.mktemp("traces")
    mc = build_trace(TraceSpec(MOONCAKE), tok, d / "mc.jsonl", MIX, limit=N_MOONCAKE,
                     data_root=DATA)
    az = build_trace(TraceSpec(AZURE), tok, d / "az.jsonl", MIX, window=(600.0, 720.0),
                     data_root=DATA)
    return {"mc": (d / "mc.jsonl", mc), "az": (d / "az.jsonl", az), "dir": d}


def _mooncake_rows(n: int) -> list[dict]:
    with open(MOONCAKE) as fh:
        return [json.loads(next(fh)) for _ in range(n)]


def test_mooncake_build_exact_lengths_offsets_and_shared_blocks(built):
    path, rep = built["mc"]
    rows = _mooncake_rows(N_MOONCAKE)
    pf = read_prompts(path)
    assert len(pf.records) == N_MOONCAKE == rep.requests
    t0 = rows[0]["timestamp"]
    blocks: dict[int, tuple[int, ...]] = {}
    seen = reused = total_blocks = 0
    for rec, row in zip(pf.records, rows, strict=True):
        assert rec.id == f"mc-{rec.meta['trace_row']}"
        assert len(rec.prompt_token_ids) == row["input_length"]
        assert rec.max_tokens == row["output_length"]
        assert rec.arrival_s == pytest.approx((row["timestamp"] - t0) / 1000, abs=1e-6)
        ids = rec.prompt_token_ids
        for k, h in enumerate(row["hash_ids"]):
            blk = tuple(ids[k * 512:(k + 1) * 512])
            total_blocks += 1
            if h in blocks:  # the same hash id: the same tokens (a partial block: a prefix)
                seen += 1
                reused += len(blk)
                prev = blocks[h]
                n = min(len(prev), len(blk))
                assert blk[:n] == prev[:n], (rec.id, k, h)
            else:
                blocks[h] = blk
    # requests that share no hash id share no tokens at the same positions
    firsts: dict[tuple[int, ...], int] = {}
    for rec, row in zip(pf.records, rows, strict=True):
        head = tuple(rec.prompt_token_ids[:16])
        if head in firsts:
            assert firsts[head] == row["hash_ids"][0], rec.id
        firsts[head] = row["hash_ids"][0]
    assert seen > 0  # the slice does repeat hash ids (so the checks above ran)
    assert rep.reuse_blocks == pytest.approx(seen / total_blocks, abs=1e-6)
    assert rep.reuse_tokens == pytest.approx(reused / sum(r["input_length"] for r in rows),
                                             abs=1e-6)
    assert set(rep.categories) <= set(MIX)


def test_azure_window_is_real_text_of_exact_length(built, tok):
    path, rep = built["az"]
    with open(AZURE) as fh:
        raw = list(csv.DictReader(fh))

    def ts(s: str) -> float:
        head, _, frac = s.partition(".")
        return datetime.fromisoformat(head).timestamp() + float("0." + frac)

    t0 = ts(raw[0]["TIMESTAMP"])
    want = [r for r in raw if 600 <= ts(r["TIMESTAMP"]) - t0 < 720]
    pf = read_prompts(path)
    assert [len(r.prompt_token_ids) for r in pf.records] == [int(r["ContextTokens"])
                                                              for r in want]
    assert [r.max_tokens for r in pf.records] == [int(r["GeneratedTokens"]) for r in want]
    assert pf.records[0].arrival_s == 0.0
    gaps = np.diff([r.arrival_s for r in pf.records])
    assert (gaps >= 0).all()
    assert rep.reuse_blocks is None  # Azure's traces carry no prefix hashes
    # real text: each prompt is a window of its category's tokenized kit text, no id random
    from loadgen.data.trace_fill import TextPool

    pool = TextPool(tok, DATA, sorted(MIX))
    for rec in pf.records[:50]:
        got = pool.cut(rec.category, rec.meta["fill_offset"], len(rec.prompt_token_ids))
        assert got.tolist() == rec.prompt_token_ids
    text = tok.decode(pf.records[0].prompt_token_ids[:200])
    assert sum(c.isalpha() for c in text) > 0.5 * len(text)  # words, not token soup


def test_generic_trace_with_a_column_mapping(tok, tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text("t_ms,prompt,gen,blocks\n0,32,5,\"[1, 2]\"\n250,30,7,\"[1, 3]\"\n"
                   "1250,16,3,\"[4]\"\n")
    spec = TraceSpec(src, fmt="generic", mapping=parse_mapping(
        "arrival=t_ms,input=prompt,output=gen,hash_ids=blocks"), time_unit="ms", block_size=16)
    rep = build_trace(spec, tok, tmp_path / "g.jsonl", {"coding": 1.0}, data_root=DATA)
    pf = read_prompts(tmp_path / "g.jsonl")
    assert [r.arrival_s for r in pf.records] == [0.0, 0.25, 1.25]
    assert [len(r.prompt_token_ids) for r in pf.records] == [32, 30, 16]
    assert [r.max_tokens for r in pf.records] == [5, 7, 3]
    a, b = pf.records[0].prompt_token_ids, pf.records[1].prompt_token_ids
    assert a[:16] == b[:16] and a[16:30] != b[16:30]
    assert rep.reuse_blocks == pytest.approx(1 / 5)


@pytest.mark.parametrize("argv, message", [
    (["missing.csv"], "no such trace file"),
    (["{trace}", "--window", "5m"], "not START:END"),
    (["{trace}", "--category-mix", "cooking=1"], "'cooking' is not a category"),
    (["{trace}", "--format", "generic"], "needs --columns"),
    (["{trace}", "--columns", "arrival=a,input=b"], "no column for output"),
    (["{trace}", "--out", "x.parquet"], "is .jsonl or .jsonl.gz"),
])
def test_bad_trace_input_is_one_line_exit_2(tmp_path, argv, message):
    argv = [a.replace("{trace}", str(AZURE)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "loadgen", "data", "build", "trace",
                        "--tokenizer", "smollm2", "--out", str(tmp_path / "x.jsonl"),
                        "--data-root", str(DATA), *argv],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("loadgen data: error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


RATE = 200.0


def _replay(url: str, ds: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--endpoint", url, "--engine", "vllm",
         "--dataset", str(ds), "--arrival", "trace", *flags, "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _schedule_error_us(records: list[dict], arrivals: dict[str, float], scale: float) -> float:
    """Largest gap (µs) between the recorded scheduled times and the trace's offsets / scale."""
    recs = sorted(records, key=lambda r: r["scheduled_ns"])
    t0 = recs[0]["scheduled_ns"]
    a0 = arrivals[recs[0]["prompt_id"]]
    return max(abs((r["scheduled_ns"] - t0) / 1e3 - (arrivals[r["prompt_id"]] - a0) / scale * 1e6)
               for r in recs)


def test_replay_on_schedule_against_the_truth_log(built, synthetic, tmp_path):
    """200 requests/s of Mooncake's conversation trace on the synthetic engine (prefix cache
    on): every request sent once on its schedule, exact lengths and max_tokens, and the
    engine's measured prefix-cache hit rate within 5% of the trace's theoretical reuse."""
    path, rep = built["mc"]
    truth_path = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--fast", "--truth-log", str(truth_path))
    # in process, as `loadgen run --arrival trace --target-rate 200` sets it up, with a counter
    # scrape that waits for the engine (its one event loop parses 4.3 M prompt ids in 1.5 s and
    # may get a third of a core on a loaded machine: the default 5 s would skip the scrapes)
    from loadgen.client.trace import configure, trace_schedule
    from loadgen.config import RunConfig
    from loadgen.run.benchmark import run_benchmark

    prompts = read_prompts(path)
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / "run", request_rate=1.0,
                          num_requests=1, arrival="trace", probe_timeout_s=120.0,
                          scrape_interval_s=3600.0)
    cfg = configure(cfg, trace_schedule(prompts, target_rate=RATE), num_requests_given=False)
    run_benchmark(cfg, prompts, path, argv=["test"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    records = read_run_records(tmp_path / "run")
    pf = read_prompts(path)
    by_id = {p.id: p for p in pf.records}
    assert sorted(x["prompt_id"] for x in records) == sorted(by_id)  # each row once
    assert all(x["status"] == "ok" and not x["warmup"] for x in records)
    scale = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]["time_scale"]
    assert scale == pytest.approx(RATE / rep.mean_rate, rel=1e-4)
    assert _schedule_error_us(records, {k: p.arrival_s for k, p in by_id.items()}, scale) < 2
    # exact lengths and output lengths, as the engine saw them
    eng.stop()
    truth = read_truth(truth_path)
    assert len(truth) == N_MOONCAKE
    from collections import Counter

    from loadgen.synthetic.model import prompt_digest

    digest = {p.id: prompt_digest(p.prompt_token_ids) for p in pf.records}
    assert Counter((t["prompt_sha256"], t["prompt_len"], t["max_tokens"], t["output_len"])
                   for t in truth) == Counter(
        (digest[p.id], len(p.prompt_token_ids), p.max_tokens, p.max_tokens) for p in pf.records)
    for x in records:
        assert x["input_tokens"] == len(by_id[x["prompt_id"]].prompt_token_ids)
        assert x["output_tokens"] == by_id[x["prompt_id"]].max_tokens
    # send lag: never early; the engine received each request after the client's send stamp,
    # so the recorded lag is a lower bound of the engine-side lag (docs/METRICS.md, send lag)
    once = Counter(t["prompt_sha256"] for t in truth)
    rx = {t["prompt_sha256"]: t["rx_ns"] for t in truth}
    lag = [x["send_ns"] - x["scheduled_ns"] for x in records]
    assert min(lag) >= 0
    engine_lag = []
    for x in records:
        d = digest[x["prompt_id"]]
        if once[d] == 1:  # 1 ms for the conversion of the kernel's realtime stamp
            assert rx[d] >= x["send_ns"] - 1_000_000
            engine_lag.append((rx[d] - x["scheduled_ns"]) / 1e6)
    assert len(engine_lag) > N_MOONCAKE // 2
    sl = summary["latency_ms"]["schedule_lag"]
    assert sl["count"] == N_MOONCAKE
    assert sl["p99"] == pytest.approx(float(np.percentile(np.array(lag) / 1e6, 99)), rel=1e-9)
    print(f"send lag p50/p99 {sl['p50']:.2f}/{sl['p99']:.2f} ms (client); engine receive lag "
          f"p50/p99 {np.percentile(engine_lag, 50):.2f}/{np.percentile(engine_lag, 99):.2f} ms")
    # the engine's prefix cache saw the trace's reuse
    pc = summary["prefix_cache"]
    assert pc["unit"] == "tokens" and pc["queries"] == sum(len(p.prompt_token_ids)
                                                           for p in pf.records)
    assert pc["hit_rate"] == pytest.approx(rep.reuse_tokens, rel=0.05)


def test_replay_with_workers_keeps_the_global_schedule(built, synthetic, tmp_path):
    path, _ = built["az"]
    eng = synthetic("--protocol", "vllm", "--fast")
    r = _replay(eng.url, path, tmp_path / "run", "--target-rate", str(RATE), "--workers", "2")
    assert r.returncode == 0, r.stderr
    records = read_run_records(tmp_path / "run")
    pf = read_prompts(path)
    assert sorted(x["prompt_id"] for x in records) == sorted(p.id for p in pf.records)
    assert {x["index"] % 2 for x in records} == {0, 1}
    shards = defaultdict(int)
    for f in sorted((tmp_path / "run").glob("requests.*.jsonl")):
        shards[f.name] = sum(1 for _ in f.open())
    assert len(shards) == 2 and all(shards.values())
    scale = json.loads((tmp_path / "run" / "manifest.json").read_text())["config"]["time_scale"]
    assert _schedule_error_us(records, {p.id: p.arrival_s for p in pf.records}, scale) < 2


def test_trace_run_refuses_bad_flags(built, tmp_path):
    path, _ = built["mc"]
    for flags, message in ((["--request-rate", "5"], "no --concurrency or --request-rate"),
                           (["--time-scale", "0"], "--time-scale must be"),
                           (["--num-requests", "999"], "the trace holds 300 requests")):
        r = _replay("http://127.0.0.1:9", path, tmp_path / "x", *flags)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"id": "a", "category": "c", "prompt_token_ids": [1, 2]}\n')
    r = _replay("http://127.0.0.1:9", plain, tmp_path / "y")
    assert r.returncode == 2 and "record 'a' has no arrival_s" in r.stderr, r.stderr


def test_trace_figures_over_time_bands_al_and_send_lag_warning(built, synthetic, tmp_path):
    """A replay whose client is held back (--max-concurrency 2 against 200 requests/s): the
    send-lag warning, and the report's trace figures against the schedule and the truth log."""
    from collections import Counter

    from loadgen.analysis.trace import BANDS, analyse
    from loadgen.synthetic.model import prompt_digest
    from tests.test_client_synthetic import engine_args, truth_al

    path, _ = built["az"]
    n = 80
    truth_path = tmp_path / "truth.jsonl"
    eng = synthetic(*engine_args("vllm", truth_path, "--step-base-ms", "1",
                                 "--per-token-ms", "0.001"))
    out = tmp_path / "run"
    r = _replay(eng.url, path, out, "--target-rate", str(RATE), "--num-requests", str(n),
                "--max-concurrency", "2", "--model", "m")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["latency_ms"]["schedule_lag"]["p99"] > 10
    assert any(w.startswith("send lag p50") for w in summary["warnings"]), summary["warnings"]
    a = analyse(out, summary, manifest)
    pf = read_prompts(path)
    recs = pf.records[:n]
    scale = manifest["config"]["time_scale"]
    # offered: the trace's own arrivals per bucket of the (scaled) schedule
    want = Counter(int((p.arrival_s - recs[0].arrival_s) / scale // a.bucket_s) for p in recs)
    got = {i: round(b.offered_rate * a.bucket_s) for i, b in enumerate(a.buckets)}
    assert sum(abs(got.get(i, 0) - want.get(i, 0)) for i in set(got) | set(want)) <= 2
    assert sum(got.values()) == n
    assert round(sum(b.achieved_rate * a.bucket_s for b in a.buckets)) == summary["requests"]["ok"]
    assert summary["requests"]["ok"] == n
    # the backlog drains after the schedule ends: achieved runs on past the last offered bucket
    last_offered = max(i for i, b in enumerate(a.buckets) if b.offered_rate)
    assert any(b.achieved_rate for b in a.buckets[last_offered + 1:])
    # bands: the requests' input lengths
    lens = Counter(next(i for i, (lo, hi) in enumerate(BANDS) if lo <= len(p.prompt_token_ids)
                        and (hi is None or len(p.prompt_token_ids) < hi)) for p in recs)
    assert {(b.lo, b.requests) for b in a.bands} == {(BANDS[i][0], c) for i, c in lens.items()}
    # AL per category under trace load: the engine's truth, per category
    eng.stop()
    cat_of = {prompt_digest(p.prompt_token_ids): p.category for p in recs}
    by_cat = defaultdict(list)
    for t in read_truth(truth_path):
        by_cat[cat_of[t["prompt_sha256"]]].append(t)
    assert set(a.al_per_category) == set(by_cat)
    for cat, al in a.al_per_category.items():
        assert al == pytest.approx(truth_al("vllm", by_cat[cat]), rel=1e-9)
    # the report shows them
    pytest.importorskip("matplotlib")
    from loadgen.report.build import build_report

    html, md = build_report(out, slos={"ttft_p99_ms": 60000.0})
    page = html.read_text()
    start = page.index("Offered vs achieved rate over time")
    assert "data:image/png;base64," in page[start:start + 4000]  # the plot, embedded
    body = md.read_text()
    assert "## Trace replay" in body and "Offered vs achieved rate" in body
    assert "Latency by input length" in body and "theoretical reuse" in body


def test_replay_on_ray_keeps_the_global_schedule(ray_cluster, built,  # noqa: F811
                                                 synthetic, tmp_path):
    """Two Ray actors replay the trace: each request once, on the global schedule (up to the
    clock mapping's error bound between the coordinator and each actor)."""
    path, _ = built["az"]
    eng = synthetic("--protocol", "vllm", "--fast")
    out = tmp_path / "run"
    r = _replay(eng.url, path, out, "--target-rate", str(RATE), "--num-requests", "120",
                "--ray", ray_cluster)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["scale"]["backend"] == "ray" and manifest["scale"]["workers"] == 2
    records = read_run_records(out)
    pf = read_prompts(path)
    assert sorted(x["prompt_id"] for x in records) == sorted(p.id for p in pf.records[:120])
    bound_us = manifest["scale"]["clock_error_bound_ns"] / 1e3
    err = _schedule_error_us(records, {p.id: p.arrival_s for p in pf.records},
                             manifest["config"]["time_scale"])
    assert err < 2 + 2 * bound_us
