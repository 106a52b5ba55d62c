"""A slice of Azure's conversation trace replayed on its schedule against the real llama-server
(SmolLM2-135M, n-gram SD): exact lengths (the server's prompt token count equals the ids sent,
its output count the trace's output length) and every request accounted for. Skipped when
llama-server is not built, the model is not cached or the data kit is absent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from loadgen.data.prompts import read_prompts
from loadgen.results.records import read_run_records
from tests.test_trace import AZURE, DATA

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(600)]

N = 8  # the first rows of the trace's first two minutes (SmolLM2 on one thread: ~50 tokens/s)


def test_azure_slice_on_llamacpp_with_ngram_sd(tmp_path, llama_server):
    eng = llama_server("ngram", slots=2)
    ds = tmp_path / "azure.jsonl"
    r = subprocess.run([sys.executable, "-m", "loadgen", "data", "build", "trace", str(AZURE),
                        "--tokenizer", "smollm2", "--out", str(ds), "--window", "0:2m",
                        "--limit", str(N), "--data-root", str(DATA)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    pf = read_prompts(ds)
    assert len(pf.records) == N
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "loadgen", "run", "--endpoint", eng.base_url,
                        "--engine", "llamacpp", "--dataset", str(ds), "--arrival", "trace",
                        "--time-scale", "4", "--timeout", "300", "--out", str(out),
                        "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    records = read_run_records(out)
    by_id = {p.id: p for p in pf.records}
    assert sorted(x["prompt_id"] for x in records) == sorted(by_id)  # every request, once
    for x in records:
        p = by_id[x["prompt_id"]]
        assert x["status"] == "ok", x["error"]
        assert x["input_tokens"] == len(p.prompt_token_ids)
        assert x["usage_prompt_tokens"] == len(p.prompt_token_ids)  # what the server counted
        assert x["output_tokens"] == p.max_tokens
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["ok"] == N
    assert summary["acceptance"]["acceptance_length"] is not None  # n-gram SD ran
    assert not any("prompt_tokens differ" in w for w in summary["warnings"])
