"""`loadgen capacity --arrival trace`: the time scale at which the SLOs still hold, against the
synthetic engine's fixed timing. An evenly spaced trace's capacity, as a mean rate, is the
full server's service rate (the constant-arrival rate capacity of tests/test_capacity.py); a
trace of the same mean rate whose requests come in on/off phases holds far less. The probes'
length in whole passes of the slice, bad inputs, and sweeps refusing traces."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from loadgen.analysis.metrics import ttft_ms
from loadgen.capacity.probe import MIN_REQUESTS, RATE_SECONDS
from loadgen.capacity.slo import decided_failure, over_needed, parse_slo_set
from loadgen.capacity.trace import trace_slice
from loadgen.cli import main as cli_main
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.results.records import iter_run_records
from tests.closed_forms import Timing

T = Timing(base=20.0, per_token=2.0, draft=0.5, rates=(0.9, 0.8, 0.7))
SEQS = 4  # --max-num-seqs
OUT = 16  # output tokens per request (each row's max_tokens)
# the full server's completion rate: SEQS requests every OUT steps of base + per_token x SEQS
MU = SEQS / (OUT * (T.base + T.per_token * SEQS) / 1000)  # 8.93 requests/s
ROWS = 32
RATE = 8.0  # the traces' native mean rate: (ROWS - 1) / span


def trace_file(path: Path, arrivals: list[float]) -> Path:
    """A trace prompt file as `loadgen data build trace` writes it: one-token prompts, each
    row's output length and arrival offset."""
    recs = [PromptRecord(id=f"t{i}", category="c", prompt_token_ids=[100 + i], max_tokens=OUT,
                         arrival_s=round(a, 6)) for i, a in enumerate(arrivals)]
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


def even() -> list[float]:
    return [i / RATE for i in range(ROWS)]


def on_off() -> list[float]:
    """The span (and so the mean rate) of ``even``, its rows in two blocks at twice the mean
    rate: the first ROWS/2 rows in the first second, the last ROWS/2 in the last, silence
    between (over 1 s of the trace's time)."""
    half, span = ROWS // 2, (ROWS - 1) / RATE
    first = [i / (2 * RATE) for i in range(half)]
    return first + [span - (half - 1 - i) / (2 * RATE) for i in range(half)]


def search(eng, ds: Path, out: Path) -> dict:
    rc = cli_main(["capacity", "--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds),
                   "--arrival", "trace", "--duration", "4", "--slo", "ttft_p99_ms=200",
                   "--precision", "0.1", "--confirm", "1",
                   "--target-rate", "20", "--out", str(out), "--quiet"])
    assert rc == 0
    return json.loads((out / "capacity.json").read_text())


@pytest.mark.slow
def test_time_scale_capacity_even_equals_the_service_rate_bursty_is_lower(synthetic,
                                                                           tmp_path):
    """Even arrivals: below MU every request finds a free sequence (TTFT about a step); above
    it the queue grows through the probe, so the time scale x 8 requests/s found is MU, within
    the 20% that test_rate_search_finds_the_service_rate_of_a_full_server allows the constant-
    arrival rate search. On/off arrivals at the same mean rate offer 2 x the mean for 2 s of
    the trace's time, over MU as soon as the mean passes MU / 2: their capacity is about half.
    """
    eng = synthetic(*T.args(), "--no-spec", "--max-num-seqs", str(SEQS))
    ev = search(eng, trace_file(tmp_path / "even.jsonl", even()), tmp_path / "even")
    bu = search(eng, trace_file(tmp_path / "onoff.jsonl", on_off()), tmp_path / "onoff")
    for doc in (ev, bu):
        assert doc["unit"] == "time scale" and doc["converged"], doc["stopped_by"]
        assert doc["trace"]["rows"] == ROWS
        assert doc["trace"]["mean_rate"] == pytest.approx(RATE)
        lo, hi = doc["interval"]
        assert lo <= doc["value"] <= hi and (hi - lo) / lo <= 0.1
        eq = doc["rate_equivalent"]
        assert eq["value"] == pytest.approx(doc["value"] * RATE)
        assert eq["interval"] == pytest.approx([lo * RATE, hi * RATE])
        # replicas for 20 requests/s of this shape: against the rate, not the time scale
        assert doc["replicas"]["replicas"] == math.ceil(20 * 1.2 / eq["value"])
        for p in doc["probes"]:
            # every probe: whole passes of the 32 rows, at least 4 s of schedule
            run = Path(p["summary"]).parent
            s = json.loads(Path(p["summary"]).read_text())
            assert p["schedule_s"] >= 4.0 - 1e-9
            assert p["offered_rate"] == pytest.approx(p["level"] * RATE)
            manifest = json.loads((run / "manifest.json").read_text())
            assert manifest["config"]["time_scale"] == p["level"]
            assert manifest["config"]["num_requests"] == p["passes"] * ROWS
            if p["cut"] is None:
                assert s["requests"]["total"] == s["requests"]["ok"] == p["passes"] * ROWS
                continue
            # cut only once the p99 had failed for certain: never an over-saturation guess
            assert p["cut"].startswith("decided:") and not p["meets_slos"]
            over = sum(ttft_ms(r) > 200 for r in iter_run_records(run) if r["status"] == "ok")
            assert over >= over_needed(p["passes"] * ROWS, 99)
    assert abs(ev["rate_equivalent"]["value"] - MU) <= 0.2 * MU, (ev["rate_equivalent"], MU)
    assert bu["rate_equivalent"]["value"] < 0.75 * ev["rate_equivalent"]["value"], (
        bu["rate_equivalent"], ev["rate_equivalent"])
    assert bu["rate_equivalent"]["value"] > 0.4 * MU
    png = (tmp_path / "even" / "capacity.png")
    assert png.stat().st_size > 0
    assert cli_main(["report", str(tmp_path / "even")]) == 0
    md = (tmp_path / "even" / "report.md").read_text()
    assert f"capacity {ev['value']:.4g} time scale" in md
    assert f"= {ev['rate_equivalent']['value']:.4g} requests/s mean" in md
    assert "| requests/s (mean) |" in md  # each probe's offered mean rate


@pytest.mark.parametrize("q", [50, 90, 99, 100])
def test_over_needed_is_where_the_percentile_crosses_the_limit(q):
    """numpy's linear percentile of n values, k of them just above the limit 1 and the others
    at 0: above the limit exactly when k >= over_needed(n, q) (with fewer, the others decide);
    and over_needed never decreases in n, so it decides for every n' <= n as well."""
    for n in range(1, 210):
        need = over_needed(n, q)
        k = np.arange(n + 1)[:, None]  # row k: k values above the limit
        above = np.arange(n)[None, :] >= n - k
        for rest in (0.0, -1e9):  # with `need` above, no value of the others brings it under
            values = np.where(above, 1.0 + 1e-9, rest)
            got = np.percentile(values, q, axis=1) > 1.0
            assert (got == (k[:, 0] >= need)).all(), (n, q, rest, need)
        assert over_needed(n + 1, q) >= need


def _rec(ttft_ms_: float, status: str = "ok", warmup: bool = False) -> dict:
    return {"warmup": warmup, "status": status, "scheduled_ns": 1_000_000_000,
            "send_ns": 1_000_000_000, "first_token_ns": 1_000_000_000 + int(ttft_ms_ * 1e6),
            "end_ns": 1_000_000_000 + int((ttft_ms_ + 150) * 1e6), "output_tokens": 16}


def test_decided_failure_only_once_no_outcome_of_the_rest_can_pass():
    """p99 of at most 100 requests: over_needed(100, 99) = 100 - 98 = 2 above the limit decide
    it; one is not enough, nor are failed or warm-up requests (they are not in the figure)."""
    slos = parse_slo_set("ttft_p99_ms=200,tpot_p50_ms=1000")
    recs = [_rec(50) for _ in range(40)] + [_rec(900)]
    assert decided_failure(recs, slos, 100) is None
    assert decided_failure([*recs, _rec(900, "error"), _rec(900, warmup=True)], slos,
                           100) is None
    d = decided_failure([*recs, _rec(201)], slos, 100)
    assert d is not None and (d.key, d.over, d.needed) == ("ttft_p99_ms", 2, 2)
    assert decided_failure([*recs, _rec(201)], slos, 300) is None  # 3 needed of 300
    # a mean or good_pct is never decided early
    assert decided_failure([_rec(900)] * 50, parse_slo_set("ttft_mean_ms=200"), 50) is None


def test_probe_length_in_whole_passes_of_the_slice(tmp_path):
    """32 rows at 8/s: a pass lasts 4 s at time scale 1. A probe holds enough whole passes for
    --duration (default 15 s) of schedule and MIN_REQUESTS requests."""
    pf = read_prompts(trace_file(tmp_path / "t.jsonl", even()))
    sl = trace_slice(pf, None, None, None)
    assert (sl.rows, sl.native_rate, sl.period_s) == (ROWS, pytest.approx(RATE), 4.0)
    p = sl.probe(1.0)
    assert p.passes == 4 and p.schedule_s == 16.0 >= RATE_SECONDS
    assert sl.probe(0.25).passes == 1  # one pass already lasts 16 s
    assert sl.probe(2.0).passes == 8 and sl.probe(2.0).requests == 8 * ROWS
    short = trace_slice(pf, 8, 2, 4.0)  # the first 8 rows, 2 of them warm-up; 4 s at least
    assert short.rows == 8 and short.period_s == pytest.approx(1.0)
    q = short.probe(1.0)
    assert q.passes * 8 - 2 >= MIN_REQUESTS and q.requests == q.passes * 8 - 2
    assert q.passes == 5  # (32 + 2) / 8 rounded up; 4 s needs only 4


@pytest.mark.parametrize("arrivals,argv,msg", [
    (None, [], "has no arrival_s"),
    ([0.0] * 4, [], "all arrive at once"),
    ("even", ["--search", "rate"], "searches the time scale"),
    ("even", ["--search", "concurrency", "--start", "4"], "searches the time scale"),
    ("even", ["--start", "0"], "--start must be a number > 0"),
    ("even", ["--start", "2", "--max-level", "-1"], "--max-level must be a number >= --start"),
    ("even", ["--num-requests", "99"], "the trace holds only 32 requests"),
    ("even", ["--duration", "0"], "--duration"),
])
def test_bad_trace_input_one_line_exit_2(tmp_path, capsys, arrivals, argv, msg):
    if arrivals is None:  # an ordinary prompt file: no arrival offsets
        ds = write_prompts(tmp_path / "p.jsonl", [
            PromptRecord(id=f"p{i}", category="c", prompt_token_ids=[1]) for i in range(4)],
            {"tokenizer": "synthetic"})
    else:
        ds = trace_file(tmp_path / "t.jsonl", even() if arrivals == "even" else arrivals)
    rc = cli_main(["capacity", "--endpoint", "http://127.0.0.1:9", "--engine", "vllm",
                   "--dataset", str(ds), "--arrival", "trace", "--slo", "ttft_p99_ms=200",
                   "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("loadgen capacity: ") and msg in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_time_scale_search_without_a_trace_one_line_exit_2(tmp_path, capsys):
    rc = cli_main(["capacity", "--endpoint", "http://127.0.0.1:9", "--search", "time_scale",
                   "--slo", "ttft_p99_ms=200", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "give --arrival trace" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("run", [{"arrival": "trace"}, {"time_scale": 2.0},
                                 {"target_rate": 5.0}])
def test_sweep_refuses_a_trace_with_one_line(tmp_path, capsys, run):
    cfg = {"sd_configs": [{"label": "a", "endpoint": "http://127.0.0.1:9"}],
           "datasets": [{"name": "t", "path": "t.jsonl"}],
           "loads": {"request_rate": [1.0]}, "run": {"num_requests": 4, **run}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    rc = cli_main(["sweep", "--config", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("loadgen sweep: run: a sweep does not replay traces")
    assert "loadgen capacity --arrival trace" in err and len(err.splitlines()) == 1
