"""The SD policy and the lossless check of a sweep, against the synthetic engine's closed forms
(docs/SYNTHETIC.md, "Closed forms"): where per-user speedup crosses 1, which K to run per band of
load, and SD outputs that differ from SD off's exactly where the engine was told to make them."""

from __future__ import annotations

import json

import pytest
import yaml

from loadgen.analysis.lossless import first_divergence
from loadgen.analysis.sdpolicy import crossing
from loadgen.cli import main as cli_main
from loadgen.data.prompts import PromptRecord, write_prompts
from loadgen.results.sweepdir import load_sweep
from tests.closed_forms import Timing

# Steps of tens of ms (client noise small beside them) and a deterministic acceptance (the first
# two drafts always accepted, the third never: AL = 3 with K = 3, 2 with K = 1), so every request
# takes the same number of steps and a closed loop holds its concurrency to the last request:
# the closed forms hold without a drain at lower load. The per-token cost is large beside the
# engine's and client's CPU per sequence and step (which favours SD: it takes a third of the
# steps). K = 3 crosses at c* = 7.3 (N = 16); K = 1 never.
T = Timing(base=15.0, per_token=5.0, draft=0.25, rates=(1.0, 1.0, 0.0))
LEVELS = [1, 3, 12]
N = 16  # output tokens: the last verify step drafts fewer (d = min(K, remaining - 1))


def speedup(c: float, k: int) -> float:
    return T.tpot_exact(c, 0, N) / T.tpot_exact(c, k, N)
DIVERGE_AT, MARKER_A, MARKER_B = 5, 7, 9


def prompts(path, n=48):
    """Two categories, told apart by their first token (the divergence fault's filter)."""
    recs = [PromptRecord(id=f"p{i}", category="a" if i % 2 == 0 else "b",
                         prompt_token_ids=[MARKER_A if i % 2 == 0 else MARKER_B, 100 + i])
            for i in range(n)]
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


@pytest.fixture
def policy_sweep(synthetic, tmp_path, capsys):
    off = synthetic(*T.args(), "--no-spec")
    k1 = synthetic(*T.args(), "--num-spec-tokens", "1")
    # K = 3, and a lossless fault: category a's SD output differs at token DIVERGE_AT
    k3 = synthetic(*T.args(), "--diverge-at", f"{DIVERGE_AT}@{MARKER_A}")
    prompts(tmp_path / "ds.jsonl")
    cfg = {
        "engine": "vllm",
        "sd_configs": [{"label": "off", "baseline": True, "endpoint": off.url},
                       {"label": "sd-k1", "endpoint": k1.url, "spec": "ngram",
                        "num_spec_tokens": 1},
                       {"label": "sd-k3", "endpoint": k3.url, "spec": "ngram",
                        "num_spec_tokens": 3}],
        "datasets": [{"name": "synth", "path": "ds.jsonl"}],
        "loads": {"concurrency": LEVELS},
        # a whole number of waves at every level: no request runs beside fewer than the level
        "run": {"output_len": N, "num_requests": 12, "warmup_requests": 0},
        "repeats": 3,
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    rc = cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out", str(out),
                   "--quiet"])
    assert rc == 0
    return out, capsys.readouterr().err


def test_crossover_k_per_band_and_lossless_check(policy_sweep):
    out, err = policy_sweep
    sweep = load_sweep(out)
    pol = sweep.analysis["sd_policy"]
    cmp = json.loads((out / "comparison.json").read_text())
    assert cmp["sd_policy"] == pol

    # crossover of K = 3: between 3 and 12, within 25% of the closed form for N-token requests
    # (7.3; the N -> infinity form, the c*, is 5.9)
    c_star = T.crossover_exact(3, N)
    assert LEVELS[1] < c_star < LEVELS[2]
    x = {(c["sd"], c["category"]): c["crossover"] for c in pol["crossover"]}
    k3 = x[("sd-k3", "all")]
    assert k3["between"] == LEVELS[1:], k3
    assert abs(k3["value"] - c_star) <= 0.25 * c_star, (k3, c_star)
    assert k3["repeats_crossing"] == 3
    lo, hi = k3["interval"]
    assert lo <= k3["value"] <= hi
    # K = 1 pays at every level
    assert speedup(LEVELS[-1], 1) > 1
    assert x[("sd-k1", "all")]["value"] is None and x[("sd-k1", "all")]["above"] == LEVELS[-1]

    # K per band: the closed form says K=3 at 1, K=1 at 12 (and above 1); at 3 they are within
    # 5% of each other, so that band is not asserted
    assert speedup(1, 3) > 1.1 * speedup(1, 1)
    assert speedup(12, 1) > 1.1 * speedup(12, 3) and speedup(12, 1) > 1.05
    rec = {(r["dataset"], r["category"]): r["bands"] for r in pol["recommended_k"]}
    bands = rec[("synth", "all")]
    first, last = bands[0], bands[-1]
    assert (first["from"], first["k"]) == (1, 3) and (last["to"], last["k"]) == (None, 1), bands
    assert last["from"] in LEVELS[1:]
    assert first["settings"]["vllm"]["speculative_config"]["num_speculative_tokens"] == 3
    assert last["settings"]["sglang"][-2:] == ["--speculative-num-draft-tokens", "2"]
    assert last["settings"]["trtllm"]["speculative_config"]["max_draft_len"] == 1
    assert "--spec-ngram-simple-size-m" in last["settings"]["llamacpp"]

    # lossless: category a of sd-k3 diverges at the injected position, nothing else does
    rows = {(r["sd"], r["category"]): r for r in sweep.analysis["lossless"]["rows"]}
    a, b = rows[("sd-k3", "a")], rows[("sd-k3", "b")]
    assert a["compared"] > 0 and a["diverged"] == a["compared"]
    assert a["first_divergence_min"] == DIVERGE_AT
    assert {e["position"] for e in a["examples"]} == {DIVERGE_AT}
    assert b["compared"] > 0 and b["diverged"] == 0
    for cat in ("a", "b", "all"):
        r = rows[("sd-k1", cat)]
        assert r["compared"] > 0 and r["diverged"] == 0
    warnings = sweep.analysis["lossless"]["warnings"]
    assert len(warnings) == 1 and "sd-k3" in warnings[0]
    assert "loadgen sweep: warning: lossless check: synth sd-k3" in err

    # the report shows the same answers
    assert cli_main(["report", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "## Where SD stops paying, and which K" in md and "## Lossless check" in md
    assert f"| synth | sd-k3 | all | {k3['value']:,.1f} |" in md
    assert "1-" in md and "K=3 (sd-k3)" in md and "+: K=1 (sd-k1)" in md
    assert f"| synth | sd-k3 | a | {a['compared']} | **{a['diverged']}** | {DIVERGE_AT} |" in md


def test_crossing_of_the_per_token_time_difference():
    # the closed form's TPOTs are linear in c: their difference crosses 0 exactly at c*
    pts = [(c, T.tpot_exact(c, 3, N) - T.tpot_exact(c, 0, N)) for c in LEVELS]
    got = crossing(pts)
    assert got["between"] == LEVELS[1:]
    assert got["value"] == pytest.approx(T.crossover_exact(3, N))
    assert crossing([(1, -0.5), (2, -0.1)]) == {"value": None, "above": 2}
    assert crossing([(1, 0.1), (2, 0.7)]) == {"value": None, "below": 1}
    # the first crossing counts: SD pays again at 8 after losing at 4
    assert crossing([(1, -1.0), (4, 1.0), (8, -1.0)])["between"] == [1, 4]


@pytest.mark.parametrize("a,b,pos", [([1, 2, 3], [1, 2, 3], None), ([1, 2, 3], [1, 9, 3], 1),
                                     ([1, 2], [1, 2, 3], 2), ([], [4], 0)])
def test_first_divergence(a, b, pos):
    assert first_divergence(a, b) == pos
