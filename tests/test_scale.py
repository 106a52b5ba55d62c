"""Scale-out (loadgen/run): worker processes and a local 2-node Ray cluster against the
synthetic engine. The merged summary equals the engine's truth log exactly; the merged rate-mode
schedule is the planned one; a worker killed mid-run is accounted for; 10,000 streams complete
with every request accounted for."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from loadgen.client.plan import share_count
from loadgen.client.schedule import arrival_offsets
from loadgen.config import RunConfig
from loadgen.data.prompts import read_prompts
from loadgen.results.records import iter_records, read_run_records, record_files
from loadgen.results.summary import Summary
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.process import read_truth
from tests.synthetic_data import CATEGORIES, make_dataset
from tests.test_client_synthetic import engine_args, truth_al


def _run_argv(url: str, ds: Path, out: Path, *flags: str) -> list[str]:
    """`loadgen run` against the synthetic vLLM at ``url`` (model "m"), quiet, with ``flags``."""
    return [sys.executable, "-m", "loadgen", "run", "--endpoint", url, "--engine", "vllm",
            "--model", "m", "--dataset", str(ds), *flags, "--out", str(out), "--quiet"]


def _check_against_truth(s: Summary, truth: Path, n: int) -> None:
    """Counts, run-wide counters, AL and per-category AL equal the truth log (no warm-up)."""
    recs = read_truth(truth)
    assert s.requests.total == s.requests.ok == len(recs) == n
    assert s.server_counters.run_delta["generation_tokens"] == sum(r["output_len"] for r in recs)
    steps = [(d, a) for r in recs
             for d, a in zip(r["drafted_per_step"], r["accepted_per_step"], strict=True)]
    assert s.server_counters.run_delta["accepted"] == sum(a for _, a in steps)
    assert s.acceptance.per_request.token_weighted == pytest.approx(truth_al("vllm", recs),
                                                                    rel=1e-12)
    by_key = defaultdict(list)
    for r in recs:
        by_key[r["category_key"]].append(r)
    for cat, (marker, _) in CATEGORIES.items():
        assert s.categories[cat].requests == len(by_key[marker])
        assert s.categories[cat].acceptance_length == pytest.approx(
            truth_al("vllm", by_key[marker]), rel=1e-12)


def test_two_workers_equal_truth_and_the_planned_schedule(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl", n=30)
    eng = synthetic(*engine_args("vllm", truth))
    out = tmp_path / "closed"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=16,
                          concurrency=6, num_requests=30, warmup_requests=0, workers=2)
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["test"])
    assert [p.name for p in record_files(out)] == ["requests.0.jsonl", "requests.1.jsonl"]
    assert not (out / "requests.jsonl").exists()
    _check_against_truth(s, truth, 30)
    assert sorted(r["index"] for r in read_run_records(out)) == list(range(30))
    assert [w.requests for w in s.client.workers] == [15, 15]
    assert all(w.cpu_us_per_event for w in s.client.workers)
    # the exact recomputation from the shards gives the very same numbers
    rc = subprocess.run([sys.executable, "-m", "loadgen", "summarize", str(out), "--quiet"],
                        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    assert json.loads((out / "summary.recomputed.json").read_text()) == s.to_dict()

    # rate mode: each worker sends its share of one arrival process from one start time
    out = tmp_path / "rate"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=8,
                          request_rate=60.0, num_requests=40, warmup_requests=2, workers=2, seed=5)
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["test"])
    recs = [r for r in read_run_records(out) if not r["warmup"]]
    assert sorted(r["index"] for r in recs) == list(range(2, 42))
    offsets = arrival_offsets(60.0, "poisson", 1.0, 5)
    planned = [s.window.start_ns + int(next(offsets) * 1e9) for _ in range(40)]
    for r in recs:
        assert r["scheduled_ns"] == planned[r["index"] - 2]
        assert r["send_ns"] >= r["scheduled_ns"]
    for k, shard in enumerate(record_files(out)):
        assert {r["index"] % 2 for r in iter_records(shard)} == {k}  # worker k's share


def _wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_worker_is_accounted_for(synthetic, tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    eng = synthetic(*engine_args("vllm", tmp_path / "truth.jsonl", "--step-base-ms", "5"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _run_argv(eng.url, ds, out, "--output-len", "16", "--concurrency", "8", "--num-requests",
                  "200", "--warmup-requests", "0", "--workers", "2", "--max-error-rate", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def victim() -> int | None:
            try:
                detail = json.loads((out / "manifest.json").read_text())["scale"]["detail"]
                lines = (out / "requests.1.jsonl").read_text().count("\n")
            except (OSError, KeyError, ValueError):
                return None
            return detail[1]["pid"] if lines >= 3 else None

        os.kill(_wait_for(victim, 120, "worker 1's first records"), signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "worker 1" in err and "died" in err
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    recs = read_run_records(out)
    mine = sorted(r["index"] for r in recs if r["index"] % 2 == 1)
    died = [r for r in recs if r["error"] and "worker 1 died" in r["error"]]
    # worker 0 went on and did its whole share; worker 1's records are exactly the
    # conversations it had started (a prefix of its share), each once
    assert sorted(r["index"] for r in recs if r["index"] % 2 == 0) == list(range(0, 200, 2))
    assert mine == list(range(1, 2 * len(mine), 2))
    assert 1 <= len(died) <= 4  # its 4 streams in flight at most
    assert s.requests.total == len(recs) and s.requests.error == len(died)
    assert s.client.workers[1].status == "died" and s.client.workers[0].status == "ok"
    assert any("accounted as errors" in w for w in s.warnings)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["scale"]["detail"][1]["died"] and manifest["status"] == "complete"


def test_ten_thousand_streams_over_four_workers(synthetic, tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=50)
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m", "--truth-log",
                    str(truth))
    out = tmp_path / "out"
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=out, model="m", output_len=4,
                          concurrency=10_000, num_requests=10_000, warmup_requests=0, workers=4,
                          timeout_s=120)
    s = run_benchmark(cfg, read_prompts(ds), ds, argv=["test"])
    recs = read_run_records(out)
    # every request asked for is exactly one record, and the summary counts them all
    assert sorted(r["index"] for r in recs) == list(range(10_000))
    assert s.requests.total == 10_000
    assert s.requests.ok + s.requests.error == 10_000
    # the engine's own word: every request it served to the end is an ok record, and only
    # requests that never reached it (a connect the host refused) failed
    eng.stop()
    served = [t for t in read_truth(truth) if t["status"] == "ok"]
    assert s.requests.ok == len(served) == len(read_truth(truth))
    assert [w.requests for w in s.client.workers] == [2500] * 4
    assert set(s.error_reasons) <= {k for k in s.error_reasons if "connect" in k}


@pytest.fixture
def ray_cluster(tmp_path_factory):
    pytest.importorskip("ray")
    from loadgen.run.raycluster import LocalRayCluster

    cluster = LocalRayCluster(nodes=2, cpus_per_node=1,
                              temp_dir=tmp_path_factory.mktemp("ray"))
    try:
        cluster.start()
        yield cluster.address
    finally:
        cluster.stop()


def test_ray_two_nodes_equal_truth(synthetic, tmp_path, ray_cluster):
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl", n=30)
    eng = synthetic(*engine_args("vllm", truth))
    out = tmp_path / "out"
    rc = subprocess.run(
        _run_argv(eng.url, ds, out, "--output-len", "16", "--concurrency", "6", "--num-requests",
                                    "30", "--warmup-requests", "0", "--ray", ray_cluster),
        capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    _check_against_truth(s, truth, 30)
    scale = json.loads((out / "manifest.json").read_text())["scale"]
    assert scale["backend"] == "ray" and scale["workers"] == 2
    assert len({d["node"] for d in scale["detail"]}) == 2  # one worker on each node
    assert all(d["clock"] == "probe" and d["clock_error_ns"] > 0 for d in scale["detail"])
    assert scale["clock_error_bound_ns"] == max(d["clock_error_ns"] for d in scale["detail"])
    assert sorted(r["index"] for r in read_run_records(out)) == list(range(30))
    assert share_count(30, 0, 2) == sum(1 for r in read_run_records(out) if r["index"] % 2 == 0)


def _ray_run_killing(synthetic, tmp_path, ray_address: str, victim, what: str):
    """A --ray run of 80 requests (2 workers, 3 streams each) in which ``victim(done)`` (the
    number of requests the engine has completed) names a PID to SIGKILL once it returns one.
    Returns (exit code, stderr, summary, records, the dead worker's index, the engine's truth)."""
    truth = tmp_path / "truth.jsonl"
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    eng = synthetic(*engine_args("vllm", truth, "--step-base-ms", "20"))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        # the dead worker's in-flight requests are errors, their share not fixed: the exit
        # code of --max-error-rate is test_reliability's, accounting is this test's
        _run_argv(eng.url, ds, out, "--output-len", "16", "--concurrency", "6", "--num-requests",
                  "80", "--warmup-requests", "0", "--ray", ray_address, "--max-error-rate", "1"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def pid() -> int | None:
            try:
                done = truth.read_text().count("\n")
            except OSError:
                return None
            return victim(done)

        os.kill(_wait_for(pid, 180, what), signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    dead = [w.index for w in s.client.workers if w.status == "died"]
    assert len(dead) == 1 and len(s.client.workers) == 2
    k = dead[0]
    recs = read_run_records(out)
    # the live worker did its whole share, each request once
    assert sorted(r["index"] for r in recs if r["index"] % 2 != k) == list(range(1 - k, 80, 2))
    assert s.requests.total == len(recs)
    return err, s, recs, k, read_truth(truth)


def test_a_killed_ray_actor_is_accounted_for(synthetic, tmp_path, ray_cluster):
    """An actor killed mid-run: its records up to its death come back from its node, and the
    conversations it had in flight (from its count kept on that node) become error records."""
    before = set(Path(tempfile.gettempdir()).glob("loadgen-shard-*"))

    def actor(done: int) -> int | None:
        pids = subprocess.run(["pgrep", "-f", "ray::RayActor"], capture_output=True,
                              text=True).stdout.split()
        return int(pids[0]) if done >= 12 and len(pids) == 2 else None

    err, s, recs, k, truth = _ray_run_killing(synthetic, tmp_path, ray_cluster, actor,
                                              "12 requests done and two actors")
    assert "died" in err
    mine = sorted(r["index"] for r in recs if r["index"] % 2 == k)
    died = [r for r in recs if r["error"] and f"worker {k} died" in r["error"]]
    # the dead worker's records are exactly the conversations it had started (a prefix of its
    # share), each once: the finished ones fetched from its node, the ones in flight as errors
    assert mine == list(range(k, k + 2 * len(mine), 2))
    assert 1 <= len(died) <= 3  # its 3 streams in flight at most
    assert len(mine) - len(died) >= 1  # finished records came back from the dead actor's node
    assert s.requests.error == len(died)
    # every ok record is a request the engine completed (none invented, none counted twice)
    served = [r for r in truth if r["status"] == "ok"]
    assert s.requests.ok == len(recs) - len(died) <= len(served)
    assert any("fetched from its node" in w and "accounted as errors" in w for w in s.warnings)
    # what the actors left on their nodes (shards, counters) is removed, the dead one's too
    assert set(Path(tempfile.gettempdir()).glob("loadgen-shard-*")) <= before


def test_a_lost_ray_node_is_accounted_for(synthetic, tmp_path, ray_cluster):
    """The second node's raylet killed mid-run: its actor and its shard go with it; every
    conversation that worker had started by its last report is an error record, none missing."""
    def second_raylet(done: int) -> int | None:
        rows = subprocess.run(["pgrep", "-a", "raylet"], capture_output=True,
                              text=True).stdout.splitlines()
        other = [int(r.split()[0]) for r in rows if "--head" not in r.split()]
        return other[0] if done >= 12 and len(other) == 1 else None

    _, s, recs, k, _ = _ray_run_killing(synthetic, tmp_path, ray_cluster, second_raylet,
                                        "12 requests done")
    mine = sorted(r["index"] for r in recs if r["index"] % 2 == k)
    lost = [r for r in recs if r["error"] and "its record was lost" in r["error"]]
    # the lost worker's records are the conversations it had started by its last report, all
    # errors, in its share's order; it had finished some before the kill (12 done in all)
    assert mine == list(range(k, k + 2 * len(mine), 2)) == sorted(r["index"] for r in lost)
    assert len(mine) >= 3
    assert s.requests.error == len(lost)
    assert any("records are lost" in w and "started accounted as errors" in w
               for w in s.warnings)


def test_workers_protect_the_prefix_cache_and_watch_the_host(synthetic, tmp_path):
    """--workers N does what a single process does around the window: the run's prefix-cache
    salt (a new one at the window's opening, so the warm-up's prefill is not reused), the
    prefix-cache figures over the window, and the host monitor over all its processes."""
    eng = synthetic("--protocol", "vllm", "--model-name", "m")
    prompts = read_prompts(make_dataset(tmp_path / "ds.jsonl", n=12))

    def run(name: str, keep: bool) -> Summary:
        cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / name, model="m",
                              output_len=4, concurrency=4, num_requests=12, shuffle=False,
                              keep_prefix_cache=keep, warmup_requests=12, workers=2,
                              category_windows=False)
        return run_benchmark(cfg, prompts, None, argv=["test"])

    kept, salted = run("kept", True), run("salted", False)
    for s in (kept, salted):
        assert s.requests.warmup == 12 and s.requests.ok == 12
        assert s.prefix_cache.source == "server_counters:vllm" and s.prefix_cache.queries > 0
    # the warm-up sent the same 12 prompts: without a salt the window is served from cache
    assert kept.prefix_cache.policy == "kept" and kept.prefix_cache.hit_rate > 0.5
    assert salted.prefix_cache.policy == "salted" and salted.prefix_cache.hit_rate == 0.0
    host = salted.host
    assert host is not None and host.client_processes == 2 and host.samples >= 2
    # the workers' CPU is the client's: at least what the workers measured on themselves over
    # the window (the monitor's 0.5 s samples span it, so they see no less)
    workers_cores = sum(w.cpu_s for w in salted.client.workers) / host.duration_s
    assert host.client_cores is not None and host.client_cores >= 0.9 * workers_cores > 0
    assert host.engine_pid == eng.proc.pid and host.engine_cores is not None


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_stops_worker_processes_with_a_summary(synthetic, tmp_path, signals):
    """Ctrl-C once: the workers stop, the run ends with its summary (counters included);
    twice: the summary of the shards as they are, at once. Every record counted either way."""
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "20", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _run_argv(eng.url, ds, out, "--output-len", "32", "--concurrency", "8", "--num-requests",
                                    "400", "--warmup-requests", "0", "--workers", "2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def records() -> int:
            try:
                return sum(p.read_text().count("\n") for p in out.glob("requests.*.jsonl"))
            except OSError:
                return 0

        _wait_for(lambda: records() >= 8, 120, "8 records")
        proc.send_signal(signal.SIGINT)
        head = ""
        if signals == 2:  # the second once the first is being handled (signals coalesce)
            assert proc.stderr is not None
            while "stopping" not in head and proc.poll() is None:
                head += proc.stderr.readline()
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        err = head + err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    recs = read_run_records(out)
    assert s.interrupted and json.loads((out / "manifest.json").read_text())["status"] == \
        "interrupted"
    assert s.requests.total == len(recs) >= 8
    if signals == 2:
        assert any("partial summary" in w for w in s.warnings)
    else:
        assert s.requests.cancelled >= 1 and s.server_counters.run_delta


def test_a_worker_that_cannot_write_its_records_stops_the_run_loudly(synthetic, tmp_path):
    """A full disk, as the per-file size limit (EFBIG) the worker processes inherit: the worker
    stops, the coordinator stops the others; one line, exit 1, manifest ``failed``, a summary
    of every request whose record was written."""
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    out = tmp_path / "out"
    proc = subprocess.run(
        _run_argv(eng.url, ds, out, "--output-len", "64", "--concurrency", "4", "--num-requests",
                                    "400", "--workers", "2"),
        capture_output=True, text=True, timeout=180,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000)))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("loadgen run: worker ") and "cannot write a record" in last
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "cannot write a record" in manifest["error"]
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    assert 0 < s.requests.total + s.requests.warmup == len(read_run_records(out)) < 400
    assert any("cannot write a record" in w for w in s.warnings)


def test_workers_auto_says_what_it_picked(synthetic, tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=12)
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m")
    out = tmp_path / "out"
    rc = subprocess.run(
        _run_argv(eng.url, ds, out, "--output-len", "4", "--concurrency", "6", "--num-requests",
                                    "12", "--warmup-requests", "0", "--workers", "auto"),
        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    assert "--workers auto: 1 worker(s) (6 streams at" in rc.stderr
    scale = json.loads((out / "manifest.json").read_text())["scale"]
    assert scale["workers"] == 1 and scale["note"] in rc.stderr
    # compare and the other readers take the shards
    rc = subprocess.run([sys.executable, "-m", "loadgen", "compare", str(out), str(out),
                         "--json", str(tmp_path / "c.json"), "--quiet"],
                        capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    assert json.loads((tmp_path / "c.json").read_text())["a"]["ok_requests"] == 12


def test_bad_scale_options_are_one_line_errors(tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=4)
    for extra, msg in ((["--workers", "0"], "--workers must be"),
                       (["--workers", "2", "--ray", "local"], "not both"),
                       (["--workers", "two"], "expected a number or 'auto'"),
                       # fewer streams than workers would leave a share unsent
                       (["--workers", "2", "--concurrency", "1"],
                        "--concurrency 1 is below the 2 workers"),
                       (["--workers", "3", "--request-rate", "5", "--max-concurrency", "2"],
                        "--max-concurrency 2 is below the 3 workers")):
        rc = subprocess.run([sys.executable, "-m", "loadgen", "run", "--endpoint",
                             "http://127.0.0.1:9", "--dataset", str(ds), *extra,
                             "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=60)
        assert rc.returncode == 2 and msg in rc.stderr, rc.stderr
        assert "Traceback" not in rc.stderr
        assert msg in rc.stderr.strip().splitlines()[-1]  # the error is the last line
        assert not (tmp_path / "o").exists()  # refused before anything is written
