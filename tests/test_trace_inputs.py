"""Trace inputs a user gets wrong: files in other encodings, rows out of range, flag values at
the edges, outputs that would overwrite the trace or cannot be written, time scales beyond a
schedule, and a secret in a malformed --header. Each case is one line and exit 2 (or a build
that works), never a traceback or a lost file. The builds use a 6-row trace and one category."""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from loadgen.data.trace_build import MAX_RATE_ROWS, rate_over_time
from loadgen.data.trace_fill import parse_mix
from loadgen.data.trace_read import (
    MAX_LENGTH,
    TraceError,
    TraceSpec,
    parse_mapping,
    parse_window,
    read_trace,
)

AZURE_HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens"
AZURE_ROWS = ["2023-11-16 18:15:46.6805900,374,44", "2023-11-16 18:15:50.9951690,396,109",
              "2023-11-16 18:15:51.2468340,879,55", "2023-11-16 18:15:52.0000000,91,16"]
MOONCAKE_ROWS = ['{"timestamp": 0, "input_length": 700, "output_length": 5, "hash_ids": [0, 1]}',
                 '{"timestamp": 250, "input_length": 600, "output_length": 7, "hash_ids": [0, 2]}']


def _rows(path: Path, **kw) -> tuple[str, list[tuple]]:
    fmt, rows = read_trace(TraceSpec(path, **kw))
    return fmt, [(r.arrival_s, r.input_len, r.output_len, r.hash_ids) for r in rows]


@pytest.mark.parametrize("encoding, newline", [("utf-16", "\n"), ("utf-16-be", "\n"),
                                               ("utf-8-sig", "\n"), ("utf-8", "\r\n")])
def test_utf16_bom_and_crlf_traces_read_as_their_utf8_form(tmp_path, encoding, newline):
    """A spreadsheet's "Unicode text" (UTF-16 with its byte-order mark), a UTF-8 BOM and CRLF
    line ends: the same rows, the same format detected, as the plain UTF-8 file."""
    bom = codecs.BOM_UTF16_BE if encoding == "utf-16-be" else b""
    for name, lines in (("azure", [AZURE_HEAD, *AZURE_ROWS]), ("mooncake", MOONCAKE_ROWS)):
        plain = tmp_path / f"{name}.plain"
        plain.write_text("\n".join(lines) + "\n")
        odd = tmp_path / f"{name}.{encoding}"
        odd.write_bytes(bom + (newline.join(lines) + newline).encode(encoding))
        assert _rows(odd) == _rows(plain) and _rows(odd)[0] == name


def test_a_file_not_in_utf8_is_one_line_naming_the_line(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(("\n".join([AZURE_HEAD, *AZURE_ROWS[:2]]) + "\n").encode()
                       + "2023-11-16 18:15:53.0,5,5,café\n".encode("latin-1"))
    with pytest.raises(TraceError, match=r"latin1.csv: line 4 is not UTF-8 text \(byte 0xe9"):
        read_trace(TraceSpec(latin1))
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(128, 256)) * 8)
    with pytest.raises(TraceError, match="line 1 is not UTF-8 text"):
        read_trace(TraceSpec(binary, fmt="mooncake"))


@pytest.mark.parametrize("row, message", [
    ("nan,5,5", "arrival 'nan' is not a finite time"),
    ("inf,5,5", "arrival 'inf' is not a finite time"),
    (f"1,{MAX_LENGTH + 1},5", f"input length is {MAX_LENGTH + 1}, above {MAX_LENGTH}"),
    ("1,5,99999999999999999999999", f"output length is 99999999999999999999999, above "
                                    f"{MAX_LENGTH}"),
])
def test_rows_out_of_range_are_refused_by_row(tmp_path, row, message):
    """A non-finite arrival (a numpy error later) and lengths no model has (gigabytes of ids,
    or an integer JSON cannot write) are refused, naming the row."""
    path = tmp_path / "t.csv"
    path.write_text(f"t,i,o\n0,5,5\n{row}\n")
    with pytest.raises(TraceError, match=f"row 2: {message}"):
        read_trace(TraceSpec(path, fmt="generic", mapping=parse_mapping("arrival=t,input=i,"
                                                                        "output=o")))


def test_flag_values_at_the_edges():
    cats = ["coding", "rag"]
    with pytest.raises(ValueError, match="coding is given twice"):
        parse_mix("coding=0.5,coding=0.5", cats)
    # weights near the float maximum: their sum would overflow to infinity
    assert parse_mix("coding=1e308,rag=1e308", cats) == {"coding": 0.5, "rag": 0.5}
    assert parse_mix("coding=3,rag=1", cats) == {"coding": 0.75, "rag": 0.25}
    with pytest.raises(TraceError, match="arrival is given twice"):
        parse_mapping("arrival=t,input=i,output=o,arrival=x")
    with pytest.raises(TraceError, match="too large a time"):
        parse_window("9" * 400 + "h:")


def test_rate_over_time_of_a_span_of_ages_stays_a_dozen_rows():
    import numpy as np

    buckets = rate_over_time(np.array([0.0, 5.0, 1e12]))
    assert len(buckets) <= MAX_RATE_ROWS + 1 and sum(b.requests for b in buckets) == 3


# -- the builder's command line: outputs and flags (a real build: the data kit and SmolLM2) --

def _data_root() -> Path | None:
    from loadgen.data.sources import default_data_root

    here = Path(__file__).resolve()
    for cand in (default_data_root(), here.parents[2] / "shared" / "data",
                 here.parents[3] / "shared" / "data"):
        if cand is not None and (cand / "prompts").is_dir():
            return cand
    return None


@pytest.fixture(scope="module")
def tok():
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from loadgen.data.tokenizer import load_tokenizer

    try:
        return load_tokenizer("smollm2")
    except Exception as exc:  # no cached GGUF and no package index
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")


COLS = ("--columns", "arrival=t,input=i,output=o")  # the 6-row trace's columns


@pytest.fixture
def build(tok, tmp_path, loadgen_cli, monkeypatch):
    """``build(trace, *flags)``: ``loadgen data build trace`` in this process, the module's
    tokenizer reused; a 6-row generic trace (out of order) in ``tmp_path / "t.csv"``."""
    root = _data_root()
    if root is None:
        pytest.skip("the data kit (../shared/data) is not present")
    monkeypatch.setattr("loadgen.data.cli._load_tok", lambda spec: tok)
    (tmp_path / "t.csv").write_text("t,i,o\n0,12,3\n2,9,4\n1,15,5\n3,7,2\n4,20,6\n5,11,3\n")

    def run(*flags: object):
        r = loadgen_cli("data", "build", "trace", "--tokenizer", "smollm2", "--data-root", root,
                        *flags)
        assert "Traceback" not in r.stderr
        return r

    return run


def _one_error(r, message: str) -> None:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("loadgen data: error:")]
    assert r.returncode == 2 and len(errors) == 1 and message in errors[0], r.stderr


@pytest.mark.parametrize("flag", ["--out", "--report"])
def test_an_output_that_is_the_trace_is_refused_and_the_trace_kept(build, tmp_path, flag):
    """Before: the trace was read, then replaced by its own prompt file (or by the report)."""
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 5, "output_length": 2}\n'
                     '{"timestamp": 10, "input_length": 6, "output_length": 2}\n')
    before = trace.read_bytes()
    argv = ["--out", tmp_path / "o.jsonl", "--report", trace] if flag == "--report" else \
        ["--out", trace]
    r = build(trace, "--format", "mooncake", *argv)
    _one_error(r, f"{flag} {trace} is the trace file itself")
    assert trace.read_bytes() == before and not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["--out", "{file}/o.jsonl"], "--out {file}/o.jsonl: {file} is a file, not a folder"),
    (["--report", "{dir}"], "--report {dir} is a directory"),
    (["--report", "{file}/r.json"], "--report {file}/r.json: {file} is a file, not a folder"),
    (["--seed", "-1"], "--seed must be a whole number from 0 to 2^63 - 1 (got -1)"),
    (["--seed", str(2**64)], f"--seed must be a whole number from 0 to 2^63 - 1 (got {2**64})"),
])
def test_outputs_and_seed_are_checked_before_the_build(build, tmp_path, argv, message):
    """Before: an unwritable --report was a traceback after the whole build, --out's folder an
    OSError without the flag, a seed beyond 64 bits a traceback."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    subst = {"{file}": str(tmp_path / "f"), "{dir}": str(tmp_path / "d")}

    def fill(text: str) -> str:
        for k, v in subst.items():
            text = text.replace(k, v)
        return text

    argv = [fill(a) for a in argv]
    out = [] if "--out" in argv else ["--out", tmp_path / "o.jsonl"]
    _one_error(build(tmp_path / "t.csv", *COLS, *out, *argv), fill(message))
    assert not (tmp_path / "o.jsonl").exists()


def test_huge_limit_and_weights_unordered_rows_replace_an_existing_file_whole(build, tmp_path):
    """A --limit beyond the trace (before: a 64-bit overflow traceback) keeps every row; weights
    near the float maximum (before: numpy's "probabilities do not sum to 1") are a mix; rows
    out of order are sorted, with a warning; an existing --out is replaced whole and no
    .partial file is left behind."""
    out = tmp_path / "o.jsonl"
    out.write_text("an older prompt file\n")
    r = build(tmp_path / "t.csv", *COLS, "--out", out, "--limit", 10**20,
              "--category-mix", "coding=1e308,rag=1e308")
    assert r.returncode == 0, r.stderr
    assert "t.csv: 1 row arrives before the row above" in r.stderr
    lines = out.read_text().splitlines()
    header, recs = json.loads(lines[0]), [json.loads(ln) for ln in lines[1:]]
    assert header["trace"]["limit"] == 6 and header["trace"]["category_mix"] == {
        "coding": 0.5, "rag": 0.5}
    assert [r["arrival_s"] for r in recs] == [0, 1, 2, 3, 4, 5]
    assert [len(r["prompt_token_ids"]) for r in recs] == [12, 15, 9, 7, 20, 11]
    assert {r["category"] for r in recs} <= {"coding", "rag"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "t.csv"]


# -- replay and capacity: time scales a schedule cannot hold, a secret in a bad --header --

def _trace_prompts(tmp_path: Path) -> Path:
    from loadgen.data.prompts import PromptRecord, write_prompts

    recs = [PromptRecord(id=f"t{i}", category="c", prompt_token_ids=[100 + i], max_tokens=4,
                         arrival_s=i * 0.1) for i in range(8)]
    return write_prompts(tmp_path / "trace.jsonl", recs, {"tokenizer": "synthetic"})


@pytest.mark.parametrize("flags, message", [
    (["--time-scale", "1e-308"], "--time-scale must be from 1e-06 to 1e+06"),
    (["--time-scale", "1e308"], "--time-scale must be from 1e-06 to 1e+06"),
    (["--target-rate", "1e-300"], "the time scale must be from 1e-06 to 1e+06"),
])
def test_run_time_scale_beyond_a_schedule_is_one_line(tmp_path, loadgen_cli, flags, message):
    """Before: 1e-308 ran and sent nothing ("no request was sent", exit 1: nanoseconds per trace
    second overflowed); 1e308 was refused as an infinite --request-rate, a flag not given."""
    r = loadgen_cli("run", "--endpoint", "http://127.0.0.1:9", "--engine", "vllm", "--dataset",
                    _trace_prompts(tmp_path), "--arrival", "trace", "--out", tmp_path / "o",
                    *flags)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "loadgen run: ") and message in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, message", [
    (["--num-requests", "0"], "--num-requests must be >= 1, not 0"),
    (["--target-rate", "inf"], "--target-rate must be a finite number > 0, not inf"),
    (["--start", "1e-9"], "--start must be from 1e-06 to 1e+06"),
    (["--max-level", "1e9"], "--max-level must be from 1e-06 to 1e+06"),
])
def test_capacity_trace_flags_at_the_edges(tmp_path, loadgen_cli, flags, message):
    """Before: --num-requests 0 was an IndexError traceback, --target-rate inf an OverflowError
    after the whole search, --start 1e-9 a probe that sent nothing."""
    r = loadgen_cli("capacity", "--endpoint", "http://127.0.0.1:9", "--engine", "vllm",
                    "--dataset", _trace_prompts(tmp_path), "--arrival", "trace", "--slo",
                    "ttft_p99_ms=200", "--out", tmp_path / "o", *flags)
    err = r.stderr.strip()
    assert r.returncode == 2 and err == f"loadgen capacity: {err.split(': ', 1)[1]}", err
    assert message in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec", ["Authorization Bearer sk-SECRET-1", "sk-SECRET-1",
                                  "Authorization=Bearer sk-SECRET-1"])
def test_a_malformed_header_is_refused_without_echoing_it(tmp_path, loadgen_cli, spec):
    """Before: the message quoted the first 40 characters of the header: its key when the colon
    was missing."""
    r = loadgen_cli("run", "--endpoint", "http://127.0.0.1:9", "--engine", "vllm", "--dataset",
                    _trace_prompts(tmp_path), "--arrival", "trace", "--header", spec,
                    "--out", tmp_path / "o")
    assert r.returncode == 2 and "expected 'Name: value'" in r.stderr, r.stderr
    assert "SECRET" not in r.stderr + r.stdout


def test_ctrl_c_during_a_replay_says_how_many_of_the_trace_were_measured(synthetic, tmp_path):
    """Ctrl-C mid-replay: exit 130, no traceback, and a last line counting the requests measured
    against the trace's planned ones (before: the summary table's "of N" was the measured count
    alone, so a cut replay read like a whole one)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    eng = synthetic("--step-base-ms", "2")
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "run", "--endpoint", eng.url, "--engine", "vllm",
         "--dataset", str(_trace_prompts(tmp_path)), "--arrival", "trace", "--time-scale",
         "0.05", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    deadline = time.monotonic() + 60
    records = out / "requests.jsonl"
    while not (records.exists() and len(records.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    summary = json.loads((out / "summary.json").read_text())
    total = summary["requests"]["total"]
    assert proc.returncode == 130 and "Traceback" not in err and 2 <= total < 8, err
    assert err.strip().splitlines()[-1] == (f"loadgen run: interrupted: {total} requests "
                                            f"measured of the 8 planned; what was measured is "
                                            f"in {out}")


def test_columns_are_never_ignored(build, tmp_path):
    """--columns on a trace whose columns are Azure's: the mapping is used (before: the format
    was detected as Azure and the mapping, here its category column, silently dropped); with
    --format azure or mooncake it is refused."""
    trace = tmp_path / "az.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens,kind\n"
                     "2023-11-16 18:15:46.68,12,3,cooking\n2023-11-16 18:15:47.0,9,4,coding\n")
    cols = "arrival=TIMESTAMP,input=ContextTokens,output=GeneratedTokens,category=kind"
    out = tmp_path / "o.jsonl"
    r = build(trace, "--out", out, "--columns", cols)
    _one_error(r, "row 1: category 'cooking' is not in the mix")
    _one_error(build(trace, "--out", out, "--columns", cols, "--format", "azure"),
               "--columns maps a generic trace's columns: not with --format azure")
    assert not out.exists()
