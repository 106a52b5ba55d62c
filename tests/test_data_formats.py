"""Data layer pieces that need no heavy dependency: text format, sources, recipes, selection,
deduplication, the SPEED-Bench import and the CLI's import cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from loadgen.data import sources as src_mod
from loadgen.data.builtin import builtin_prompts_path
from loadgen.data.recipe import (
    CATEGORIES,
    load_recipe,
    resolve_recipe,
    source_categories,
    source_prompts,
)
from loadgen.data.select import (
    exact_duplicates,
    mean_pairwise,
    near_duplicates,
    random_baseline,
    select_diverse,
)
from loadgen.data.sources import default_data_root, read_file_records
from loadgen.data.template import render
from loadgen.data.textfmt import (
    TextPrompt,
    TextPromptError,
    read_text_prompts,
    write_text_prompts,
)

REPO = Path(__file__).resolve().parents[1]
DATA = default_data_root()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data is not present")


def test_text_format_roundtrip(tmp_path):
    ps = [TextPrompt(id="a", category="qa", turns=["hi", "more"], system="sys", max_tokens=9,
                     meta={"source": "s"}),
          TextPrompt(id="b", category="rag", turns=["line\u2028sep"])]
    f = write_text_prompts(tmp_path / "p.jsonl.gz", ps, header={"name": "t"})
    header, back = read_text_prompts(f)
    assert header["name"] == "t"
    assert [p.to_dict() for p in back] == [p.to_dict() for p in ps]
    assert back[0].messages()[0] == {"role": "system", "content": "sys"}


def test_text_format_errors(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a", "category": "qa", "turns": []}\n')
    with pytest.raises(TextPromptError, match=r"bad\.jsonl:1"):
        read_text_prompts(f)
    f.write_text('{"id": "a", "category": "qa", "prompt": "x"}\n{"id": "a", "category": "qa", '
                 '"prompt": "y"}\n')
    with pytest.raises(TextPromptError, match="duplicate id"):
        read_text_prompts(f)


def test_builtin_text_set_is_complete():
    _, ps = read_text_prompts(builtin_prompts_path())
    cats = {c: sum(p.category == c for p in ps) for c in CATEGORIES}
    assert cats == {c: 4 for c in CATEGORIES}
    assert all(p.meta.get("source") and p.meta.get("license") for p in ps)
    assert any(len(p.turns) > 1 for p in ps)
    assert all(sum(len(t) for t in p.turns) < 1500 for p in ps)  # short: well under 300 tokens


def test_data_cli_imports_nothing_heavy():
    code = ("import sys, loadgen.data.cli, loadgen.cli; loadgen.cli.build_parser(); "
            "print([m for m in ('torch', 'transformers', 'sentence_transformers', 'datasets') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_selection_beats_random_and_is_deterministic():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 32))
    E = centers[rng.integers(6, size=600)] + 0.4 * rng.normal(size=(600, 32))
    E = (E / np.linalg.norm(E, axis=1, keepdims=True)).astype(np.float32)
    a = select_diverse(E, 20, seed=3)
    assert a == select_diverse(E, 20, seed=3)
    assert len(set(a)) == 20
    rnd, _ = random_baseline(E, 20, seed=1)
    assert mean_pairwise(E, a) < rnd - 0.1
    # the sum-vector identity behind the algorithm
    sims = E[a] @ E[a].T
    direct = (sims.sum() - np.trace(sims)) / (20 * 19)
    assert abs(direct - mean_pairwise(E, a)) < 1e-5


def test_selection_is_locally_optimal_on_small_case():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(12, 4))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    sel = select_diverse(E, 4, seed=0)
    best = mean_pairwise(E, sel)
    for j in sel:  # no single swap improves
        for i in set(range(12)) - set(sel):
            trial = sorted([*(set(sel) - {j}), i])
            assert mean_pairwise(E, trial) >= best - 1e-9


def test_duplicates():
    texts = ["What is 2+2?", "what is 2 + 2 ?", "Another question", "WHAT IS 2+2"]
    assert exact_duplicates(texts) == [None, 0, None, 0]  # case, spacing, punctuation
    E = np.eye(4, dtype=np.float32)
    E = np.vstack([E, E[1] * 0.99 + E[2] * 0.01])
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    assert near_duplicates(E, 0.95) == [None, None, None, None, 1]


def _parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)


def test_speed_bench_import_local_and_offline(tmp_path, monkeypatch):
    from loadgen.data import speedbench

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(src_mod, "_HUB_STATE", {})
    row = {"question_id": "q1", "category": "math", "sub_category": "gsm", "turns": ["2+2?", "x3?"],
           "source": "local", "src_id": "s1", "difficulty": "easy", "multiturn": True}
    ph = dict(row, question_id="q2", turns=[speedbench.PLACEHOLDER + "\n\n{article}"],
              source="abisee/cnn_dailymail", src_id="abc")
    f = tmp_path / "q.parquet"
    _parquet(f, [row, ph])
    with pytest.raises(speedbench.SpeedBenchError, match="abisee/cnn_dailymail"):
        speedbench.import_speed_bench("qualitative", f)
    prompts, rep = speedbench.import_speed_bench("qualitative", f, allow_unresolved=True)
    assert [p.id for p in prompts] == ["q1"] and prompts[0].turns == ["2+2?", "x3?"]
    assert rep["unresolved"] == {"abisee/cnn_dailymail": 1}
    with pytest.raises(speedbench.SpeedBenchError, match="--file"):
        speedbench.import_speed_bench("throughput_1k")


@needs_data
def test_sources_read_every_format_quirk():
    moral = list(read_file_records(DATA / "prompts/mmlu_redux/mmlu_moral_scenarios.csv", "m", {}))
    assert len(moral) == 100 and "question" in moral[0]  # cp1252, ',' delimiter
    anat = list(read_file_records(DATA / "prompts/mmlu_redux/mmlu_anatomy.csv", "a", {}))
    assert "choices" in anat[0]  # ';' delimiter
    stats: dict[str, int] = {}
    paper = list(read_file_records(DATA / "long/bamboo/paperqa_16k.jsonl", "p",
                                   {"skip_bad_lines": True}, stats))
    assert len(paper) == 99 and stats["bad_lines"] == 1
    mgsm = list(read_file_records(DATA / "prompts/mgsm/mgsm_de.tsv", "g",
                                  {"columns": ["question", "answer"]}))
    assert len(mgsm) == 250 and mgsm[0]["answer"] == "18"
    xq = list(read_file_records(DATA / "prompts/xquad/xquad.de.json", "x",
                                {"explode": "data[].paragraphs[].qas[]"}))
    assert len(xq) == 1190 and xq[0]["context"] and xq[0]["question"]
    he = list(read_file_records(DATA / "prompts/HumanEval.jsonl.gz", "h", {}))
    assert len(he) == 164


@pytest.fixture(scope="module")
def shipped_sources():
    """The shipped qualitative recipe and every local source's (prompts, stats), read once."""
    if DATA is None:
        pytest.skip("../shared/data is not present")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(src_mod, "_HUB_STATE", {})
        recipe = load_recipe(resolve_recipe("qualitative"))
        read = {s["name"]: source_prompts(s, DATA, recipe.defaults) for s in recipe.sources
                if not s.get("hub")}
    return recipe, read


def test_recipe_covers_every_category(shipped_sources):
    recipe, read = shipped_sources
    counts: dict[str, int] = {}
    multi = 0
    for s in recipe.sources:
        if s.get("hub"):
            continue
        ps, stats = read[s["name"]]
        assert stats["bad_template"] == 0, s["name"]
        # a build for some categories skips the sources that cannot give them
        assert {p.category for p in ps} <= source_categories(s), s["name"]
        for p in ps:
            counts[p.category] = counts.get(p.category, 0) + 1
            multi += len(p.turns) > 1
            assert p.meta["license"] and p.meta["original_id"] and p.meta["source"]
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 80
    assert multi > 500  # mt_bench and mtbench101 keep their user turns
    assert 15000 < sum(counts.values()) < 30000


def test_render_is_format_map_with_the_recipe_specs():
    rec = {"q": "  Hi {there}  ", "n": 3.5, "opts": ["x", "y"], "_file_stem": "f",
           "long": "Ab-c " * 100}
    for tpl in ("{q}", "{{lit}} {n:.2f}", "{n!r}|{q!s:>16}", "{opts[1]}", "x{opts}y"):
        assert render(tpl, rec) == tpl.format_map(rec), tpl
    specs = {"{q:strip}!": "Hi {there}!", "{opts:letters}": "A. x\nB. y",
             "{opts:lines}": "x\ny", "{long:head}": "abc" * 40}
    for tpl, want in specs.items():
        assert render(tpl, rec) == want, tpl
    with pytest.raises(IndexError):  # positional fields: refused as str.format refuses them
        render("{_file_stem}:{0}", rec)
    with pytest.raises(KeyError):
        render("{missing}", rec)
    with pytest.raises(ValueError):
        render("{q", rec)


def test_recipe_errors(tmp_path):
    from loadgen.data.recipe import RecipeError

    f = tmp_path / "r.yaml"
    f.write_text("categories: [coding]\nsources:\n  - name: x\n    path: a.jsonl\n"
                 "    category: coding\n    turns: ['{q}']\n")
    with pytest.raises(RecipeError, match="license"):
        load_recipe(f)
    f.write_text("sources:\n  - name: x\n    path: a.jsonl\n    license: MIT\n"
                 "    category: coding\n    turns: ['{q}']\n")
    with pytest.raises(RecipeError, match="needs 'categories'"):
        load_recipe(f)


def test_jsonl_split_on_newline_only(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"q": "a\u2028b\u000bc"}) + "\n" + json.dumps({"q": "d"}) + "\n",
                 encoding="utf-8")
    recs = list(read_file_records(f, "x.jsonl", {}))
    assert [r["q"] for r in recs] == ["a\u2028b\u000bc", "d"]


def test_shipped_recipe_categories_hold(shipped_sources):
    """Roleplay is role-play (no MT-Bench-101 'Are you sure?' dialogues, no act-as
    tools), writing takes self-instruct only from writing apps and at most a quarter, every
    category has descriptions, and the hub sources are optional."""
    recipe, read = shipped_sources
    assert set(recipe.descriptions) == set(CATEGORIES)
    assert recipe.defaults["require_fit"] is True
    feeds: dict[str, set[str]] = {}
    for s in recipe.sources:
        if s.get("hub"):
            assert s.get("optional") is True
            continue
        ps, _ = read[s["name"]]
        for p in ps:
            feeds.setdefault(p.category, set()).add(s["name"])
            if p.category == "roleplay":
                assert p.meta["original_id"] not in ("Synonym Finder", "Plagiarism Checker")
    assert feeds["roleplay"] == {"awesome_chatgpt_prompts", "mt_bench", "vicuna_bench"}
    assert not any(n.startswith("mtbench101") for n in feeds["writing"] | feeds["roleplay"])
    si = next(s for s in recipe.sources if s["name"] == "self_instruct")
    assert si["max_share"] <= 0.25
    ps, stats = read["self_instruct"]
    assert stats["filtered"] > 150 and not any("sudoku" in p.turns[0].lower() for p in ps)
