"""`loadgen capacity` against the synthetic engine's closed forms (docs/SYNTHETIC.md, "Closed
forms"): the search finds the TPOT capacity with and without SD, cuts over-saturated steps past
the server's --max-num-seqs and not below, and the search logic brackets, bisects, repeats the
boundary and stops on its budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loadgen.analysis.metrics import tpot_ms
from loadgen.capacity.probe import Prober, ProbeSignals
from loadgen.capacity.search import ProbeResult, SearchSpec, search
from loadgen.capacity.slo import parse_slo_set
from loadgen.cli import main as cli_main
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.results.records import iter_run_records
from tests.closed_forms import Timing

# large step times: client and scheduler noise (~1 ms) stay small beside them
T = Timing(base=20.0, per_token=2.0, draft=0.5, rates=(0.9, 0.8, 0.7))
K = len(T.rates)
TIMING = T.args()


def one_token_prompts(path: Path, n: int = 64) -> Path:
    """One-token prompts: a request's prefill adds one token to someone's step (negligible)."""
    recs = [PromptRecord(id=f"p{i}", category=("a", "b")[i % 2], prompt_token_ids=[100 + i])
            for i in range(n)]
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


def test_capacity_at_a_tpot_slo_matches_the_closed_form_with_and_without_sd(synthetic,
                                                                              tmp_path):
    off = synthetic(*TIMING, "--no-spec")
    sd = synthetic(*TIMING)
    ds = one_token_prompts(tmp_path / "ds.jsonl")
    limit = 40.0
    out = tmp_path / "cap"
    rc = cli_main(["capacity", "--endpoint", f"off={off.url}", "--endpoint", f"sd={sd.url}",
                   "--baseline", "off", "--engine", "vllm", "--dataset", str(ds),
                   "--output-len", "16", "--warmup-requests", "0", "--duration", "2",
                   "--slo", f"tpot_p50_ms={limit:g}", "--search", "concurrency",
                   "--start", "8", "--target-rate", "50", "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "capacity.json").read_text())
    got = {c["label"]: c for c in doc["configs"]}
    for label, is_sd in (("off", False), ("sd", True)):
        c = got[label]
        truth = T.tpot_capacity(limit, K if is_sd else 0)
        assert c["converged"] and c["unit"] == "concurrency"
        assert abs(c["value"] - truth) <= 0.15 * truth, (label, c["value"], truth)
        lo, hi = c["interval"]
        assert lo <= c["value"] <= hi and hi - lo == 1
        assert c["binding_slo"] == "tpot_p50_ms"
        # the boundary's two levels were repeated; every probe names its run
        assert sum(p["level"] == lo for p in c["probes"]) >= 2
        assert sum(p["level"] == hi for p in c["probes"]) >= 2
        for p in c["probes"]:
            assert Path(p["summary"]).exists()
            assert p["meets_slos"] == (p["values"]["tpot_p50_ms"] <= limit)
        rp = c["replicas"]
        assert rp["replicas"] == math.ceil(50 * 1.2 / c["value"])
    gain = got["sd"]["gain_over_baseline"]
    truth_gain = T.tpot_capacity(limit, K) / T.tpot_capacity(limit)
    assert gain["interval"][0] <= gain["value"] <= gain["interval"][1]
    assert abs(gain["value"] - truth_gain) <= 0.2 * truth_gain
    assert (out / "capacity.png").stat().st_size > 0
    # `loadgen report` on the capacity directory: the answer, the plot, every probe
    assert cli_main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert f"off: capacity {got['off']['value']:.4g} concurrency" in md
    assert md.count("/summary.json |") == len(got["off"]["probes"]) + len(got["sd"]["probes"])
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_saturation_cut_past_max_num_seqs_and_not_below(synthetic, tmp_path):
    """Open loop on a server of 4 sequences: each request takes ~17 steps of ~28 ms, so the
    server completes about 8 requests/s. At 24/s the queue grows by ~16 requests a second and
    the step is cut long before its 12 s; at 2/s (half a sequence busy) it runs to the end."""
    eng = synthetic(*TIMING, "--no-spec", "--max-num-seqs", "4")
    ds = one_token_prompts(tmp_path / "ds.jsonl")
    slos = parse_slo_set("tpot_p50_ms=1000,good_pct=90")
    with ProbeSignals("test") as signals:
        prober = Prober(kind="rate", label="x", endpoint=eng.url, engine="vllm",
                        root=tmp_path / "cap", prompts=read_prompts(ds), dataset_path=ds,
                        slos=slos, signals=signals,
                        run_opts={"output_len": 16, "duration_s": 12.0, "warmup_requests": 0,
                                  "arrival": "constant", "progress": False})
        over = prober(24.0)
        under = prober(2.0)
    assert over.cut and "over-saturated" in over.cut and not over.ok
    s_over = json.loads(Path(over.info["summary"]).read_text())
    assert s_over["window"]["duration_s"] < 8.0
    assert under.cut is None and under.ok
    s_under = json.loads(Path(under.info["summary"]).read_text())
    assert s_under["window"]["duration_s"] >= 11.0
    # good_pct: the share of the window's requests within every limit, from the records
    lo, hi = s_under["window"]["start_ns"], s_under["window"]["end_ns"]
    recs = [r for r in iter_run_records(Path(under.info["summary"]).parent)
            if not r["warmup"] and lo <= r["end_ns"] <= hi]
    within = [r for r in recs if r["status"] == "ok" and tpot_ms(r) <= 1000]
    assert under.info["values"]["good_pct"] == pytest.approx(100 * len(within) / len(recs))
    assert under.info["values"]["good_pct"] == 100.0  # nothing near a 1 s TPOT here


class Threshold:
    """A load-dependent verdict with a known boundary (margin = level / boundary), and a
    level whose first run fails once: the search must repeat it and move the bracket."""

    def __init__(self, boundary: float, flaky: float | None = None) -> None:
        self.boundary, self.flaky, self.seen = boundary, flaky, []

    def __call__(self, level: float) -> ProbeResult:
        self.seen.append(level)
        margin = level / self.boundary
        if level == self.flaky and self.seen.count(level) == 2:
            margin = 1.01
        return ProbeResult(level, ok=margin <= 1, margin=margin, binding="x")


@pytest.mark.parametrize("kind,boundary", [("rate", 7.3), ("concurrency", 37.4)])
def test_search_brackets_bisects_and_interpolates(kind, boundary):
    r = search(SearchSpec(kind=kind, start=1, precision=0.05), Threshold(boundary))
    assert r.converged and r.lo <= boundary < r.hi
    assert (r.hi - r.lo) / r.lo <= 0.05 or r.hi - r.lo == 1
    assert r.value == pytest.approx(boundary, rel=1e-9)  # the margin is linear in the load
    assert [p.level for p in r.probes][:4] == [1, 2, 4, 8]


def test_search_repeats_the_boundary_and_a_flip_moves_the_bracket():
    r = search(SearchSpec(kind="concurrency", start=8, precision=0.05, confirm=2),
               Threshold(10.5, flaky=10))
    assert r.converged
    assert (r.lo, r.hi) == (9, 10)  # 10 passed once, failed on its repetition
    assert sum(p.level == 9 for p in r.probes) >= 2


def test_search_stops_on_its_budget_and_below_the_floor():
    r = search(SearchSpec(kind="rate", start=1, max_runs=3), Threshold(100))
    assert not r.converged and r.stopped_by == "max_runs" and len(r.probes) == 3
    assert (r.lo, r.hi) == (4, None) and r.value == 4
    r = search(SearchSpec(kind="concurrency", start=4), Threshold(0.5))
    assert r.stopped_by == "floor" and r.value is None and r.lo is None


@pytest.mark.parametrize("argv,msg", [
    (["--slo", "tpot_p42_ms=1"], "bad SLO"),
    (["--slo", "good_pct=95"], "at least one latency limit"),
    (["--slo", "tpot_p50_ms=10", "--precision", "2"], "--precision"),
    (["--slo", "tpot_p50_ms=10", "--search", "concurrency", "--start", "1.5"], "--start"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, argv, msg):
    rc = cli_main(["capacity", "--endpoint", "http://127.0.0.1:9", "--out",
                   str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("loadgen capacity: ") and msg in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_endpoint_that_answers_nothing_stops_the_search_with_one_line(tmp_path, capsys):
    ds = one_token_prompts(tmp_path / "ds.jsonl", n=4)
    rc = cli_main(["capacity", "--endpoint", "http://user:pw@127.0.0.1:9", "--engine", "vllm",
                   "--dataset", str(ds), "--output-len", "4", "--num-requests", "4",
                   "--warmup-requests", "0", "--slo", "tpot_p50_ms=10",
                   "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if not x.startswith("loadgen capacity: endpoint at")]
    assert rc == 1 and len(lines) == 1 and "no request succeeded at 1" in lines[0], err
    assert "pw" not in err



def test_rate_search_finds_the_service_rate_of_a_full_server(synthetic, tmp_path):
    """Open loop, constant arrivals, 4 sequences at most: each request holds a slot for 16 steps
    (its prefill and 15 decode steps) of base + per_token x 4 ms, so the server completes
    mu = 4 / (16 x 28 ms) = 8.9 requests/s. Below mu TTFT stays about a step; above it the queue
    grows and TTFT with it. The TTFT capacity is mu (within 20%: TTFT needs a little excess
    to pass 200 ms within a 4 s step); steps far above it are cut."""
    eng = synthetic(*TIMING, "--no-spec", "--max-num-seqs", "4")
    ds = one_token_prompts(tmp_path / "ds.jsonl")
    mu = 4 / (16 * (T.base + T.per_token * 4) / 1000)
    out = tmp_path / "cap"
    rc = cli_main(["capacity", "--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds),
                   "--output-len", "16", "--warmup-requests", "0", "--duration", "4",
                   "--arrival", "constant", "--slo", "ttft_p50_ms=200", "--search", "rate",
                   "--start", "4", "--precision", "0.1", "--confirm", "1",
                   "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "capacity.json").read_text())
    assert doc["unit"] == "requests/s" and doc["converged"]
    assert abs(doc["value"] - mu) <= 0.2 * mu, (doc["value"], mu, doc["interval"])
    for p in doc["probes"]:
        if p["level"] >= 1.5 * mu:
            assert p["cut"] and not p["meets_slos"], p
        if p["level"] <= 0.5 * mu:
            assert p["cut"] is None and p["meets_slos"], p
