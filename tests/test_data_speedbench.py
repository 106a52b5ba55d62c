"""``loadgen data import speed-bench`` on every form the dataset circulates in (the HF parquet, a
config folder, the snapshot root, the messages JSONL), through the real CLI, and on broken
files: one line per problem (file, row, column), exit status 2, no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loadgen.cli import main
from loadgen.data import sources as src_mod
from loadgen.data.textfmt import read_text_prompts

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

FIX = Path(__file__).resolve().parent / "fixtures" / "data"
QUAL_CATS = ("coding", "math", "roleplay", "writing")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(src_mod, "_HUB_STATE", {})


def _row(qid: str, cat: str, turns, **kw):
    return {"question_id": qid, "category": cat, "sub_category": "s", "turns": turns,
            "source": "local", "src_id": qid, "difficulty": "easy",
            "multiturn": isinstance(turns, list) and len(turns) > 1, **kw}


def _write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def snapshot(tmp_path):
    """A downloaded nvidia/SPEED-Bench: <config>/test-00000-of-00001.parquet per config."""
    root = tmp_path / "SPEED-Bench"
    _write(root / "qualitative" / "test-00000-of-00001.parquet",
           [_row(f"q{i}", QUAL_CATS[i % 4], [f"Question {i}?", "And then?"][: 1 + i % 2])
            for i in range(8)])
    for cfg in ("throughput_1k", "throughput_16k"):
        _write(root / cfg / "test-00000-of-00001.parquet",
               [_row(f"{cfg}-{i}", ("low_entropy", "mixed", "high_entropy")[i % 3],
                     [f"Long prompt {i}"]) for i in range(6)])
    return root


def _import(src: Path, config: str, out: Path) -> int:
    return main(["data", "import", "speed-bench", "--config", config, "--file", str(src),
                 "--out", str(out)])


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("loadgen data: error:")]


def test_parquet_folder_and_snapshot_root(snapshot, tmp_path, capsys):
    for src in (snapshot / "qualitative" / "test-00000-of-00001.parquet",
                snapshot / "qualitative", snapshot):
        out = tmp_path / "sb.jsonl"
        assert _import(src, "qualitative", out) == 0, capsys.readouterr().err
        _, prompts = read_text_prompts(out)
        assert len(prompts) == 8  # the root holds 20 rows; only qualitative's are read
        assert prompts[1].turns == ["Question 1?", "And then?"]
    assert _import(snapshot, "throughput_16k", tmp_path / "t.jsonl") == 0
    _, tp = read_text_prompts(tmp_path / "t.jsonl")
    assert {p.id for p in tp} == {f"throughput_16k-{i}" for i in range(6)}
    assert _import(snapshot, "throughput_32k", tmp_path / "x.jsonl") == 2
    assert "no files of config 'throughput_32k'" in _errors(capsys)[0]


def test_messages_jsonl(tmp_path):
    out = tmp_path / "m.jsonl"
    assert _import(FIX / "speedbench_messages.jsonl", "qualitative", out) == 0
    _, prompts = read_text_prompts(out)
    assert [p.turns for p in prompts] == [
        ["Write a Python function that reverses a string."],
        ["You are a knight. Introduce yourself.", "What is your quest?"]]  # reply dropped


def test_config_is_checked_against_categories(snapshot, tmp_path, capsys):
    tp = snapshot / "throughput_1k" / "test-00000-of-00001.parquet"
    assert _import(tp, "qualitative", tmp_path / "o.jsonl") == 2
    line = _errors(capsys)[0]
    assert "--config qualitative expects categories" in line and "a throughput config" in line
    assert not (tmp_path / "o.jsonl").exists()


def test_every_schema_problem_is_named(tmp_path, capsys):
    assert _import(FIX / "speedbench_bad.jsonl", "qualitative", tmp_path / "o.jsonl") == 2
    errs = _errors(capsys)
    assert len(errs) == 4
    assert "speedbench_bad.jsonl:row 1: column 'turns': missing" in errs[0]
    assert "row 2: column 'turns': is a string, not a list of user turns" in errs[1]
    assert "row 3: column 'question_id': missing" in errs[2]
    assert "row 4: column 'category': missing" in errs[3]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("x.parquet", b"PAR1 not really", "not a readable parquet file"),
    ("x.jsonl", b"\x00\x01\x02binary", "binary data"),
    ("x.jsonl.gz", b"plain text", "not a valid gzip file"),
    ("x.jsonl", b"", "holds no rows"),
    ("x.jsonl", b'{"question_id": "a"', "not valid JSON"),
    ("x.csv", b"a,b\n", "not a SPEED-Bench file"),
])
def test_bad_files(tmp_path, capsys, name, content, message):
    f = tmp_path / name
    f.write_bytes(content)
    assert _import(f, "qualitative", tmp_path / "o.jsonl") == 2
    errs = _errors(capsys)
    assert len(errs) == 1 and message in errs[0], errs


def test_missing_and_empty_folder(tmp_path, capsys):
    assert _import(tmp_path / "nope", "qualitative", tmp_path / "o.jsonl") == 2
    assert "no such file or directory" in _errors(capsys)[0]
    (tmp_path / "empty").mkdir()
    assert _import(tmp_path / "empty", "qualitative", tmp_path / "o.jsonl") == 2
    assert "holds no .parquet or .jsonl file" in _errors(capsys)[0]


def test_placeholder_rows_offline(tmp_path, capsys):
    from loadgen.data.speedbench import PLACEHOLDER

    f = _write(tmp_path / "q.parquet", [
        _row("q1", "math", ["2+2?"]),
        _row("q2", "summarization", [PLACEHOLDER + "\n\n{article}"],
             source="abisee/cnn_dailymail")])
    assert _import(f, "qualitative", tmp_path / "o.jsonl") == 2
    assert any("abisee/cnn_dailymail" in e for e in _errors(capsys))
    assert main(["data", "import", "speed-bench", "--config", "qualitative", "--file", str(f),
                 "--out", str(tmp_path / "o.jsonl"), "--allow-unresolved"]) == 0
    _, prompts = read_text_prompts(tmp_path / "o.jsonl")
    assert [p.id for p in prompts] == ["q1"]


def test_copy_of_folder_with_neutral_names(snapshot, tmp_path):
    """Model-Optimizer's data/speed/<config>/test.parquet: the folder names the config."""
    dst = tmp_path / "data" / "speed" / "qualitative"
    dst.mkdir(parents=True)
    shutil.copy(snapshot / "qualitative" / "test-00000-of-00001.parquet", dst / "test.parquet")
    assert _import(tmp_path / "data" / "speed", "qualitative", tmp_path / "o.jsonl") == 0
    assert len(read_text_prompts(tmp_path / "o.jsonl")[1]) == 8
