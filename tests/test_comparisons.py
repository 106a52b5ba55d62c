"""Comparisons that hold: interleaved repetitions with intervals, the host monitor's causes, and
sanity bounds, on two synthetic engines (SD on, SD off) as fixed loopback endpoints.

The CPU burner is a test-controlled process per core, started when a cell of the SD
configuration starts (the sweep's own cell callback) and stopped when it ends; the test waits
for every burner to report that it spins before the cell runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadgen.analysis.sanity import OTHERS_CORES, SPREAD_CV
from loadgen.cli.compare import main as compare_main
from loadgen.results.sweepdir import Cell, Sweep
from loadgen.sweep.runner import run_sweep
from tests.synthetic_data import make_dataset

TIMING = ["--step-base-ms", "10", "--per-token-ms", "0.4", "--draft-ms", "0.5",
          "--accept-rates", "0.6,0.4,0.2", "--model-name", "m"]
BURN = "import sys\nprint('spinning', flush=True)\nwhile True:\n    pass\n"


class Burner:
    """One spinning process per core while a chosen cell runs."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.procs: list[subprocess.Popen] = []
        self.burned: list[str] = []

    def __call__(self, cell: Cell, phase: str) -> None:
        if cell.sd != self.label:
            return
        if phase == "start":
            self.procs = [subprocess.Popen([sys.executable, "-c", BURN], stdout=subprocess.PIPE,
                                           text=True) for _ in range(os.cpu_count() or 1)]
            for p in self.procs:
                assert p.stdout is not None and p.stdout.readline().strip() == "spinning"
            self.burned.append(cell.id)
        else:
            self.stop()

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []


def _config(synthetic, tmp_path: Path) -> dict:
    sd = synthetic("--protocol", "vllm", *TIMING, "--per-request-spec-metrics", "summary")
    off = synthetic("--protocol", "vllm", *TIMING, "--no-spec")
    make_dataset(tmp_path / "ds.jsonl", n=24)
    return {
        "engine": "vllm",
        "sd_configs": [{"label": "off", "baseline": True, "endpoint": off.url},
                       {"label": "sd", "endpoint": sd.url}],
        "datasets": [{"name": "synth", "path": "ds.jsonl"}],
        "loads": {"concurrency": [2]},
        "run": {"output_len": 24, "num_requests": 24, "warmup_requests": 2},
        "repeats": 2,
    }


def _overall(sweep: Sweep) -> dict:
    return next(r for r in sweep.analysis["speedup_intervals"] if r["category"] == "all")


def test_interleaved_repeats_quiet_comparison_raises_no_flag(synthetic, tmp_path):
    cfg = _config(synthetic, tmp_path)
    sweep = run_sweep(cfg, tmp_path / "quiet", config_dir=tmp_path, progress=False)
    # alternation: off, sd, off, sd; each repetition a complete run with its own window
    assert [(c.sd, c.repeat) for c in sweep.cells] == [("off", 0), ("sd", 0), ("off", 1),
                                                        ("sd", 1)]
    assert all(c.status == "complete" and c.id.endswith(f"__r{c.repeat}") for c in sweep.cells)
    summaries = [sweep.summary(c) for c in sweep.cells]
    for s in summaries:
        assert s is not None and s.host is not None and s.host.samples >= 2
        # the synthetic engine listens on loopback: found by its port, counted as the engine
        assert s.host.engine_pid is not None and s.host.engine_cores is not None
        assert s.prefix_cache is not None and s.prefix_cache.policy == "salted"
    row = _overall(sweep)
    assert row["repeats"] == 2 and row["speedup_low"] <= row["speedup"] <= row["speedup_high"]
    # the closed form (docs/SYNTHETIC.md) gives SD 1.39x here; the verdict is the interval's
    assert row["speedup"] > 1.0
    lo, hi = row["speedup_low"], row["speedup_high"]
    assert row["verdict"] == ("gain" if lo > 1 else "loss" if hi < 1 else "no clear gain")
    head = sweep.analysis["headline_intervals"]
    assert {h["sd"] for h in head} == {"off", "sd"} and all(h["repeats"] == 2 for h in head)
    # `loadgen compare` with the repetitions on each side: across-run intervals next to the
    # within-run ones
    off0, sd0, off1, sd1 = (str(sweep.cell_dir(c)) for c in sweep.cells)
    js, md = tmp_path / "cmp.json", tmp_path / "cmp.md"
    assert compare_main([off0, sd0, "--a", off1, "--b", sd1, "--resamples", "200",
                         "--json", str(js), "--markdown", str(md), "--quiet"]) == 0
    across = json.loads(js.read_text())["across_runs"]
    assert across["runs"] == {"a": [off0, off1], "b": [sd0, sd1]}
    tps = next(r for r in across["rows"] if r["key"] == "output_tokens_per_s")
    lo, hi = tps["ci_diff_across"]
    assert lo <= tps["diff"] <= hi and tps["ci_diff_within"] is not None
    assert tps["b_mean"] == pytest.approx(
        (sweep.summary(sweep.cells[1]).throughput.output_tokens_per_s
         + sweep.summary(sweep.cells[3]).throughput.output_tokens_per_s) / 2)
    assert "## Across runs" in md.read_text()
    # Nothing was done to disturb this sweep: every reason it is flagged suspect for is a
    # condition its runs recorded (other processes on a shared machine, a spread between
    # repetitions), and with none recorded it is not flagged.
    reasons = row["suspect"]
    disturbed = [s for s in summaries if s.host.causes]
    assert any("disturbed window" in r for r in reasons) == bool(disturbed), reasons
    for s in summaries:  # a run's host causes are what its host figures say
        assert ("others" in s.host.causes) == ((s.host.others_cores or 0.0) >= OTHERS_CORES)
    spread = [float(np.std(v, ddof=1) / np.mean(v)) for v in (
        [s.throughput.output_tokens_per_s for s in summaries[1::2]],
        [s.throughput.output_tokens_per_s for s in summaries[0::2]])]
    assert any("spread" in r for r in reasons) == any(cv > SPREAD_CV for cv in spread)
    assert not any("impossible for one stream" in r for r in reasons), reasons
    if not disturbed and all(cv <= SPREAD_CV for cv in spread):
        assert reasons == []


def test_cpu_burner_during_one_half_is_flagged_with_its_cause(synthetic, tmp_path):
    cfg = _config(synthetic, tmp_path)
    burner = Burner("sd")
    try:
        sweep = run_sweep(cfg, tmp_path / "burnt", config_dir=tmp_path, progress=False,
                          on_cell=burner)
    finally:
        burner.stop()
    assert burner.burned == ["sd__c2__synth__r0", "sd__c2__synth__r1"]
    by_sd = {c.id: (c, sweep.summary(c)) for c in sweep.cells}
    for cid in burner.burned:
        _, s = by_sd[cid]
        assert s is not None and s.host is not None
        assert "others" in s.host.causes, s.host
        assert any("other processes took" in w for w in s.warnings)
        # the burner, not the client: no advice to lower the client's load unless the
        # client's own CPU says so
        if "client" not in s.host.causes:
            assert not any("lower the load per process" in w for w in s.warnings)
    row = _overall(sweep)
    # the burner ran during every SD repetition and no baseline one: the result is flagged,
    # and the reason names other processes
    assert any("other processes" in r or "others" in r for r in row["suspect"]), row["suspect"]


def test_prefix_cache_salt_keep_and_counters_on_the_synthetic_engine(synthetic, tmp_path):
    """The synthetic vLLM counts prefix-cache queries and hits as vLLM does: a second identical
    run that keeps the cache is served from it; a salted run (the default) is not."""
    from loadgen.config import RunConfig
    from loadgen.data.prompts import read_prompts
    from loadgen.run.benchmark import run_benchmark

    eng = synthetic("--protocol", "vllm", *TIMING)
    prompts = read_prompts(make_dataset(tmp_path / "ds.jsonl", n=12))

    def run(name: str, keep: bool, warmup: int | None):
        cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / name, output_len=4,
                              concurrency=4, num_requests=12, shuffle=False, keep_prefix_cache=keep,
                              warmup_requests=warmup)
        return run_benchmark(cfg, prompts, None, argv=["test"], use_uvloop=False)

    first, warm = run("first", True, 0), run("warm", True, 0)
    # salted, with the default warm-up over the same prompts: the window gets its own salt,
    # so neither earlier runs nor its own warm-up serve its prefill from cache
    salted = run("salted", False, None)
    assert salted.requests.warmup > 0
    for s in (first, warm, salted):
        assert s.prefix_cache.source == "server_counters:vllm" and s.prefix_cache.queries > 0
    assert first.prefix_cache.hit_rate == 0.0  # random prompts share no block
    assert warm.prefix_cache.policy == "kept" and warm.prefix_cache.hit_rate > 0.5
    assert salted.prefix_cache.policy == "salted" and salted.prefix_cache.hit_rate == 0.0
    # the sanity bound: TTFT of the warm run against the salted one is a suspect comparison
    from loadgen.analysis.sanity import comparison_suspects

    why = comparison_suspects([warm], [salted], per_user_speedup=None, acceptance_length=None)
    assert any("prefix-cache hit rates" in w for w in why)
    assert not any("prefix-cache" in w for w in comparison_suspects(
        [salted], [first], per_user_speedup=None, acceptance_length=None))


def test_sanity_bound_on_per_user_speedup_against_al():
    """The issue's case: a per-user speedup of 6.01x at AL 1.79 is impossible for one stream."""
    from loadgen.analysis.sanity import AL_TOLERANCE, comparison_suspects

    why = comparison_suspects([], [], per_user_speedup=6.01, acceptance_length=1.79)
    assert len(why) == 1 and "exceeds the SD runs' AL 1.79" in why[0]
    at_bound = 1.79 * (1 + AL_TOLERANCE)
    assert comparison_suspects([], [], per_user_speedup=at_bound * 0.999,
                               acceptance_length=1.79) == []
