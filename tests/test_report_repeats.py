"""The report's comparisons understand repetitions: random vs real is one row per pair of
datasets with an interval (repetition k against repetition k, not the cross product), and every
speedup verdict in the report is the console's (loadgen/analysis/repeats.py, one rule)."""

from __future__ import annotations

import re

import yaml

from loadgen.analysis.repeats import SLOWER, speedup_verdict
from loadgen.cli import main as cli_main
from loadgen.results.sweepdir import load_sweep
from tests.test_report import CATEGORIES, RANDOM_RATES, _dataset


def test_random_vs_real_with_repetitions_and_one_verdict_rule(synthetic, tmp_path):
    common = ["--protocol", "vllm", "--step-base-ms", "2", "--draft-ms", "0.2",
              "--model-name", "m"]
    for marker, rates in CATEGORIES.values():
        common += ["--accept-rates-for", f"{marker}={rates}"]
    sd = synthetic(*common, "-k", "3", "--accept-rates", RANDOM_RATES,
                   "--per-request-spec-metrics", "summary")
    off = synthetic(*common, "--no-spec")
    _dataset(tmp_path / "qual.jsonl", False, 0)
    _dataset(tmp_path / "random.jsonl", True, 1)
    cfg = {"engine": "vllm",
           "sd_configs": [{"label": "off", "baseline": True, "endpoint": off.url},
                          {"label": "ngram-k3", "endpoint": sd.url}],
           "datasets": [{"name": "qual", "path": "qual.jsonl"},
                        {"name": "random-qual", "path": "random.jsonl"}],
           "loads": {"concurrency": [2]},
           "run": {"output_len": 16, "num_requests": 8, "warmup_requests": 0, "model": "m"},
           "repeats": 2}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    assert cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out", str(out),
                     "--quiet"]) == 0
    assert cli_main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()

    # one row per (SD configuration, load, pair of datasets): 2, not 2 x 2 x 2
    sec = html.split('<section id="random_vs_real">')[1].split("</section>")[0]
    assert sec.count("<tr>") == 1 + 2
    rows = [r for r in md.split("## Random vs real prompts")[1].split("##")[0].splitlines()
            if r.startswith("| ngram-k3") or r.startswith("| off")]
    assert len(rows) == 2
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert cells[3] == "2"  # repetitions
        assert re.fullmatch(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\]", cells[6]), cells

    # every speedup cell of the report carries the verdict of the sweep's own intervals
    sweep = load_sweep(out)
    checked = 0
    for r in sweep.analysis["speedup_intervals"]:
        if r["category"] != "all":
            continue
        assert r["repeats"] == 2 and r["speedup_low"] is not None
        cell = f"{r['speedup']:.2f}× [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]"
        assert cell in md, (cell, r)
        line = next(x for x in md.splitlines()
                    if "output tokens/s (whole run)" in x and cell in x)
        verdict = speedup_verdict({"mean": r["speedup"], "low": r["speedup_low"],
                                   "high": r["speedup_high"]})
        assert verdict == r["verdict"]  # the console prints r["verdict"]
        assert ("▼" in line) == (verdict in SLOWER)
        assert ("no clear gain" in line) == (verdict == "no clear gain")
        checked += 1
    assert checked == 2  # ngram-k3 on each dataset


def test_single_run_verdict_is_the_point_estimate():
    assert speedup_verdict({"mean": 0.98, "low": None, "high": None}) == "slower (single run)"
    assert speedup_verdict({"mean": 1.2, "low": None, "high": None}) == "faster (single run)"
    assert speedup_verdict({"mean": 0.98, "low": 0.9, "high": 1.05}) == "no clear gain"
    assert speedup_verdict({"mean": 0.9, "low": 0.85, "high": 0.95}) == "loss"
