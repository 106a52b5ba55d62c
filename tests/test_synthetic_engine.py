"""The synthetic SD engine over real HTTP on 127.0.0.1: framing, fields, counters, validation,
faults, determinism, timing model. Every expectation is checked against the truth log."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadgen.synthetic.process import read_truth


def sse_events(client: httpx.Client, url: str, body: dict) -> tuple[list[str], httpx.Response]:
    """The data payloads of an SSE response, in order."""
    with client.stream("POST", url, json=body) as resp:
        lines = [ln[len("data: "):] for ln in resp.iter_lines() if ln.startswith("data: ")]
    return lines, resp


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(url, timeout=10).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(samples: dict, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for (n, lab), v in samples.items():
        d = dict(lab)
        if n == name and all(d.get(k) == val for k, val in labels.items()):
            total += v
            found = True
    assert found, f"metric {name} {labels} not exposed"
    return total


PROMPT = [1, 17, 42, 99, 7, 1000]


# -- vLLM -------------------------------------------------------------------------------------

def test_vllm_stream_framing_and_fields(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--accept-rates", "0.9,0.7,0.5",
                    "--truth-log", str(truth), "--step-base-ms", "1")
    body = {"prompt": PROMPT, "max_tokens": 40, "ignore_eos": True, "stream": True,
            "return_token_ids": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.Client(timeout=30) as c:
        events, resp = sse_events(c, eng.url + "/v1/completions", body)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 40,
                                    "total_tokens": len(PROMPT) + 40}
    token_chunks = chunks[:-1]
    assert token_chunks[0]["choices"][0]["prompt_token_ids"] == PROMPT
    ids = [t for ch in token_chunks for t in ch["choices"][0]["token_ids"]]
    assert len(ids) == 40
    # SD puts several tokens in one chunk: chunks are not tokens.
    assert len(token_chunks) < 40
    assert max(len(ch["choices"][0]["token_ids"]) for ch in token_chunks) > 1
    # continuous usage is cumulative and matches the ids seen so far
    seen = 0
    for ch in token_chunks:
        seen += len(ch["choices"][0]["token_ids"])
        assert ch["usage"]["completion_tokens"] == seen
    assert token_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(ch["choices"][0]["finish_reason"] is None for ch in token_chunks[:-1])
    eng.stop()
    (rec,) = read_truth(truth)
    assert rec["output_token_ids"] == ids
    assert rec["chunk_tokens"] == [len(ch["choices"][0]["token_ids"]) for ch in token_chunks]
    assert len(rec["chunk_send_ns"]) == len(token_chunks)
    assert rec["status"] == "ok"
    # each verify step emits accepted + 1 tokens; the prefill emits the first one
    assert 1 + sum(a + 1 for a in rec["accepted_per_step"]) == 40


def test_vllm_counters_equal_emitted_tokens(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "1",
                    "-k", "4", "--accept-rates", "0.9,0.6")
    bodies = [{"prompt": [i + 3, 5, 6], "max_tokens": 10 + i, "ignore_eos": True,
               "stream": bool(i % 2)} for i in range(12)]
    with httpx.Client(timeout=30) as c, ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda b: c.post(eng.url + "/v1/completions", json=b).read(), bodies))
    m = scrape(eng.url + "/metrics")
    eng.stop()
    recs = read_truth(truth)
    assert len(recs) == 12 and all(r["status"] == "ok" for r in recs)
    steps = [(d, a) for r in recs for d, a in zip(r["drafted_per_step"], r["accepted_per_step"],
                                                   strict=True)]
    assert metric(m, "vllm:generation_tokens_total") == sum(r["output_len"] for r in recs)
    assert metric(m, "vllm:prompt_tokens_total") == sum(r["prompt_len"] for r in recs)
    assert metric(m, "vllm:spec_decode_num_drafts_total") == sum(1 for d, _ in steps if d)
    assert metric(m, "vllm:spec_decode_num_draft_tokens_total") == sum(d for d, _ in steps)
    assert metric(m, "vllm:spec_decode_num_accepted_tokens_total") == sum(a for _, a in steps)
    for pos in range(4):
        assert metric(m, "vllm:spec_decode_num_accepted_tokens_per_pos_total",
                      position=str(pos)) == sum(1 for _, a in steps if a > pos)
    # `_created` series must not be mistaken for counters: we expose none.
    assert not any(name.endswith("_created") for name, _ in m)


def test_vllm_no_spec_has_no_draft_counters_and_same_tokens(synthetic):
    body = {"prompt": PROMPT, "max_tokens": 30, "ignore_eos": True, "return_token_ids": True}
    sd = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--seed", "5")
    plain = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--seed", "5", "--no-spec")
    other_seed = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--seed", "6")
    with httpx.Client(timeout=30) as c:
        a = c.post(sd.url + "/v1/completions", json=body).json()["choices"][0]["token_ids"]
        b = c.post(plain.url + "/v1/completions", json=body).json()["choices"][0]["token_ids"]
        a2 = c.post(sd.url + "/v1/completions", json=body).json()["choices"][0]["token_ids"]
        o = c.post(other_seed.url + "/v1/completions", json=body).json()["choices"][0][
            "token_ids"]
        events, _ = sse_events(c, plain.url + "/v1/completions", {**body, "stream": True})
    assert a == b == a2 and len(a) == 30
    assert o != a
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(len(ch["choices"][0]["token_ids"]) == 1 for ch in chunks)  # one token per step
    m = scrape(plain.url + "/metrics")
    assert not any(n.startswith("vllm:spec_decode") for n, _ in m)
    assert metric(m, "vllm:generation_tokens_total") == 60


def test_vllm_validation_errors(synthetic):
    eng = synthetic("--protocol", "vllm", "--max-model-len", "100")
    url = eng.url + "/v1/completions"
    with httpx.Client(timeout=10) as c:
        r = c.post(url, content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = c.post(url, json={"max_tokens": 5})
        assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
        r = c.post(url, json={"prompt": [1, 2], "model": "other"})
        assert r.status_code == 404
        r = c.post(url, json={"prompt": [1, 2], "stream_options": {"include_usage": True}})
        assert r.status_code == 400 and "stream" in r.json()["error"]["message"]
        r = c.post(url, json={"prompt": [1, 2], "max_tokens": 99})
        assert r.status_code == 400 and "context length" in r.json()["error"]["message"]
        r = c.post(url, json={"prompt": [1, 10**9]})
        assert r.status_code == 400
        r = c.post(url, json={"prompt": [1, 2], "max_tokens": 3, "unknown_field": 1})
        assert r.status_code == 200  # vLLM accepts and logs unknown fields
        r = c.get(eng.url + "/no/such/path")
        assert r.status_code == 404
        assert c.get(url).status_code == 405


def test_vllm_natural_stop_without_ignore_eos(synthetic):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "0.5")
    with httpx.Client(timeout=30) as c:
        r = c.post(eng.url + "/v1/completions",
                   json={"prompt": PROMPT, "max_tokens": 2000, "return_token_ids": True}).json()
    n = r["usage"]["completion_tokens"]
    assert 16 <= n <= 512
    assert r["choices"][0]["finish_reason"] == "stop"


def test_vllm_per_request_spec_metrics(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--per-request-spec-metrics", "detailed",
                    "--truth-log", str(truth), "--step-base-ms", "1")
    body = {"prompt": PROMPT, "max_tokens": 25, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=30) as c:
        events, _ = sse_events(c, eng.url + "/v1/completions", body)
    final = json.loads(events[-2])
    sd = final["metrics"]["speculative_decoding"]
    eng.stop()
    (rec,) = read_truth(truth)
    drafted = [d for d in rec["drafted_per_step"] if d]
    accepted = sum(rec["accepted_per_step"])
    assert sd["num_spec_steps"] == len(drafted)
    assert sd["num_accepted_draft_tokens"] == accepted
    assert sd["mean_acceptance_length"] == pytest.approx(1 + accepted / len(drafted))
    assert sd["per_step_drafted"] == drafted


def test_chat_completions_text_stream(synthetic):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1")
    body = {"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 12,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=30) as c:
        events, _ = sse_events(c, eng.url + "/v1/chat/completions", body)
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(ch["choices"][0]["delta"]["content"] for ch in chunks if ch["choices"])
    assert len(text.split()) == 12
    assert chunks[-1]["usage"]["completion_tokens"] == 12


# -- SGLang -----------------------------------------------------------------------------------

@pytest.mark.parametrize("incremental", [False, True])
def test_sglang_generate_stream(synthetic, tmp_path, incremental):
    truth = tmp_path / "t.jsonl"
    args = ["--protocol", "sglang", "--truth-log", str(truth), "--step-base-ms", "1"]
    if incremental:
        args.append("--incremental-streaming")
    eng = synthetic(*args)
    body = {"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 33, "ignore_eos": True},
            "stream": True}
    with httpx.Client(timeout=30) as c:
        events, _ = sse_events(c, eng.url + "/generate", body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    if incremental:
        ids = [t for ch in chunks for t in ch["output_ids"]]
    else:
        # cumulative: each chunk repeats everything so far
        ids = chunks[-1]["output_ids"]
        for a, b in itertools.pairwise(chunks):
            assert b["output_ids"][: len(a["output_ids"])] == a["output_ids"]
    assert len(ids) == 33
    final = chunks[-1]["meta_info"]
    assert final["completion_tokens"] == 33
    assert final["finish_reason"] == {"type": "length", "length": 33}
    eng.stop()
    (rec,) = read_truth(truth)
    assert rec["output_token_ids"] == ids
    assert final["spec_verify_ct"] == len(rec["drafted_per_step"])
    assert final["spec_accept_length"] == pytest.approx(33 / len(rec["drafted_per_step"]))
    assert final["spec_num_correct_drafts"] == sum(rec["accepted_per_step"])
    assert all("spec_accept_length" not in ch["meta_info"] for ch in chunks[:-1])


def test_sglang_validation_and_metrics(synthetic):
    eng = synthetic("--protocol", "sglang", "--step-base-ms", "1")
    with httpx.Client(timeout=30) as c:
        r = c.post(eng.url + "/generate",
                   json={"input_ids": [1, 2], "sampling_params": {"max_tokens": 5}})
        assert r.status_code == 400 and "max_tokens" in r.text
        r = c.post(eng.url + "/generate", json={"sampling_params": {}})
        assert r.status_code == 400
        r = c.post(eng.url + "/generate",
                   json={"input_ids": PROMPT, "sampling_params": {"max_new_tokens": 20,
                                                                  "ignore_eos": True}})
        assert len(r.json()["output_ids"]) == 20
        r = c.post(eng.url + "/v1/completions",
                   json={"prompt": PROMPT, "max_tokens": 7, "ignore_eos": True,
                         "return_token_ids": True})
        assert len(r.json()["choices"][0]["token_ids"]) == 7
        info = c.get(eng.url + "/server_info").json()
    m = scrape(eng.url + "/metrics")
    assert metric(m, "sglang:generation_tokens_total") == 27
    verify = metric(m, "sglang:spec_verify_calls_total")
    assert info["internal_states"][0]["avg_spec_accept_length"] == pytest.approx(27 / verify)
    assert metric(m, "sglang:spec_accept_length") >= 1.0


# -- TensorRT-LLM -----------------------------------------------------------------------------

def test_trtllm_completions_and_iteration_stats(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "trtllm", "--model-name", "m", "--truth-log", str(truth),
                    "--step-base-ms", "1")
    url = eng.url + "/v1/completions"
    with httpx.Client(timeout=30) as c:
        assert c.post(url, json={"prompt": PROMPT}).status_code == 400  # model required
        r = c.post(url, json={"model": "m", "prompt": PROMPT, "return_token_ids": True})
        assert r.status_code == 400 and "return_token_ids" in r.text  # unknown field
        body = {"model": "m", "prompt": PROMPT, "max_tokens": 30, "ignore_eos": True,
                "detokenize": False, "stream": True,
                "stream_options": {"include_usage": True}}
        events, _ = sse_events(c, url, body)
        stats = c.get(eng.url + "/metrics").json()
        again = c.get(eng.url + "/metrics").json()
    chunks = [json.loads(e) for e in events[:-1]]
    ids = [t for ch in chunks if ch["choices"] for t in ch["choices"][0]["token_ids"]]
    assert len(ids) == 30
    assert all(ch["choices"][0]["text"] == "" for ch in chunks if ch["choices"])
    assert "avg_decoded_tokens_per_iter" in chunks[0]["choices"][0]
    assert again == []  # reading consumed the stats
    eng.stop()
    (rec,) = read_truth(truth)
    spec = [s["specDecodingStats"] for s in stats if s["specDecodingStats"]["numDraftTokens"]]
    accepted = sum(s["numAcceptedTokens"] for s in spec)
    reqs = sum(s["numRequestsWithDraftTokens"] for s in spec)
    assert accepted == sum(rec["accepted_per_step"])
    assert sum(s["numDraftTokens"] for s in spec) == sum(rec["drafted_per_step"])
    assert reqs == sum(1 for d in rec["drafted_per_step"] if d)


def test_trtllm_prometheus(synthetic):
    eng = synthetic("--protocol", "trtllm", "--model-name", "m", "--step-base-ms", "1")
    with httpx.Client(timeout=30) as c:
        c.post(eng.url + "/v1/completions",
               json={"model": "m", "prompt": PROMPT, "max_tokens": 12, "ignore_eos": True})
    m = scrape(eng.url + "/prometheus/metrics")
    assert metric(m, "trtllm_generation_tokens_total") == 12
    drafted0 = metric(m, "trtllm_spec_decode_drafted_tokens_total", token_position="0")
    assert drafted0 >= 1
    assert metric(m, "trtllm_spec_decode_num_draft_tokens_total") >= drafted0


# -- llama.cpp --------------------------------------------------------------------------------

def test_llamacpp_one_event_per_token_and_timings(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "llamacpp", "--truth-log", str(truth), "--step-base-ms", "1")
    body = {"prompt": PROMPT, "n_predict": 21, "ignore_eos": True, "stream": True,
            "return_tokens": True, "cache_prompt": False}
    with httpx.Client(timeout=30) as c:
        before = scrape(eng.url + "/metrics")
        events, _ = sse_events(c, eng.url + "/completion", body)
        after = scrape(eng.url + "/metrics")
    assert "[DONE]" not in events
    chunks = [json.loads(e) for e in events]
    assert chunks[-1]["stop"] is True
    token_events = chunks[:-1]
    assert all(len(ev["tokens"]) == 1 and ev["stop"] is False for ev in token_events)
    t = chunks[-1]["timings"]
    assert t["predicted_n"] == 21
    eng.stop()
    (rec,) = read_truth(truth)
    # one event per token, except that ids divisible by 13 (incomplete UTF-8 pieces) get none
    withheld = sum(1 for tok in rec["output_token_ids"][:-1] if tok % 13 == 0)
    assert len(token_events) == 21 - withheld
    assert token_events[-1]["tokens_predicted"] == 21
    assert [ev["tokens"][0] for ev in token_events] == [
        tok for i, tok in enumerate(rec["output_token_ids"]) if tok % 13 or i == 20]
    assert t["draft_n"] == sum(rec["drafted_per_step"])
    assert t["draft_n_accepted"] == sum(rec["accepted_per_step"])
    assert metric(before, "llamacpp:tokens_predicted_total") == 0
    assert metric(after, "llamacpp:tokens_predicted_total") == 21
    assert metric(after, "llamacpp:spec_decode_num_accepted_tokens_total") == t[
        "draft_n_accepted"]
    assert metric(after, "llamacpp:spec_decode_num_drafts_total") == sum(
        1 for d in rec["drafted_per_step"] if d)


def test_health_loading_then_ready(synthetic):
    engines = []  # both loading at once, each checked as soon as it listens
    for protocol in ("vllm", "llamacpp"):
        eng = synthetic("--protocol", protocol, "--load-delay", "1.0")
        assert httpx.get(eng.url + "/health").status_code == 503
        body = {"prompt": [1, 2], "max_tokens": 2, "n_predict": 2}
        path = "/completion" if protocol == "llamacpp" else "/v1/completions"
        assert httpx.post(eng.url + path, json=body).status_code == 503
        engines.append(eng)
    time.sleep(1.1)  # the load delay, from the later start
    for eng in engines:
        assert httpx.get(eng.url + "/health").status_code == 200


# -- per-request acceptance -------------------------------------------------------------------

def test_acceptance_keyed_by_first_token(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "1",
                    "-k", "3", "--accept-rates-for", "7=1.0", "--accept-rates-for", "9=0.0")
    with httpx.Client(timeout=30) as c:
        for first in (7, 9):
            c.post(eng.url + "/v1/completions",
                   json={"prompt": [first, 100, 200], "max_tokens": 41, "ignore_eos": True})
    eng.stop()
    recs = {r["category_key"]: r for r in read_truth(truth)}
    assert recs[7]["accepted_per_step"] == recs[7]["drafted_per_step"]  # all accepted
    assert sum(recs[9]["accepted_per_step"]) == 0
    assert len(recs[7]["drafted_per_step"]) == 10  # 1 + 10 steps x 4 tokens = 41
    assert len(recs[9]["drafted_per_step"]) == 40


# -- faults -----------------------------------------------------------------------------------

def _stream_raw(url: str, body: dict, timeout: float = 30) -> tuple[int, list[str], str | None]:
    """(status, data lines, error) for a stream, keeping whatever arrived before an error."""
    lines: list[str] = []
    try:
        with httpx.Client(timeout=timeout) as c, c.stream("POST", url, json=body) as resp:
            status = resp.status_code
            for ln in resp.iter_lines():
                if ln.startswith("data: "):
                    lines.append(ln[6:])
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        return -1 if not lines else 200, lines, type(exc).__name__
    return status, lines, None


BODY = {"prompt": PROMPT, "max_tokens": 20, "ignore_eos": True, "stream": True,
        "return_token_ids": True, "stream_options": {"include_usage": True}}


def test_fault_http_statuses(synthetic):
    eng = synthetic("--protocol", "vllm", "--fault", "http500:every=3",
                    "--fault", "http429:every=2,retry_after=3", "--fault", "http503:every=5")
    codes = []
    with httpx.Client(timeout=10) as c:
        for _ in range(6):
            r = c.post(eng.url + "/v1/completions", json={"prompt": [1, 2], "max_tokens": 2})
            codes.append(r.status_code)
            if r.status_code == 429:
                assert r.headers["retry-after"] == "3"
            if r.status_code >= 400:
                assert "error" in r.json()
    # rules are tried in order: request n (1-based) gets the first rule with n % every == 0
    assert codes == [200, 429, 500, 429, 503, 500]


def test_fault_close_before_headers(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--fault", "close_before_headers:every=1",
                    "--truth-log", str(truth))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(eng.url + "/v1/completions", json={"prompt": [1, 2]})
    eng.stop()
    assert read_truth(truth)[0]["status"] == "fault:close_before_headers"


def test_fault_reset_mid_stream(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--fault", "reset:every=1,after=5",
                    "--truth-log", str(truth), "--step-base-ms", "1", "--no-spec")
    status, lines, err = _stream_raw(eng.url + "/v1/completions", BODY)
    assert err is not None and status == 200
    got = sum(len(json.loads(x)["choices"][0]["token_ids"]) for x in lines)
    assert got == 5
    eng.stop()
    rec = read_truth(truth)[0]
    assert rec["status"] == "fault:reset" and sum(rec["chunk_tokens"]) == 5


def test_fault_truncate_and_malformed(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--fault", "truncate:every=2,after=4",
                    "--fault", "malformed:every=1,after=3", "--truth-log", str(truth),
                    "--step-base-ms", "1", "--no-spec")
    s1, malformed_lines, err1 = _stream_raw(eng.url + "/v1/completions", BODY)
    s2, trunc_lines, err2 = _stream_raw(eng.url + "/v1/completions", BODY)
    assert err1 is None and err2 is None and s1 == s2 == 200
    bad = []
    for x in malformed_lines[:-1]:
        try:
            json.loads(x)
        except json.JSONDecodeError:
            bad.append(x)
    assert len(bad) == 1 and malformed_lines[-1] == "[DONE]"
    assert "[DONE]" not in trunc_lines
    assert sum(len(json.loads(x)["choices"][0]["token_ids"]) for x in trunc_lines) == 4
    eng.stop()
    statuses = [r["status"] for r in read_truth(truth)]
    assert statuses == ["fault:malformed", "fault:truncate"]


def test_fault_stall(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "llamacpp", "--fault", "stall:every=1,after=3,seconds=0.6",
                    "--truth-log", str(truth), "--step-base-ms", "1")
    body = {"prompt": PROMPT, "n_predict": 10, "ignore_eos": True, "stream": True}
    status, lines, err = _stream_raw(eng.url + "/completion", body)
    assert err is None and status == 200 and json.loads(lines[-1])["stop"] is True
    eng.stop()
    rec = read_truth(truth)[0]
    gaps = [(b - a) / 1e9 for a, b in zip(rec["chunk_send_ns"], rec["chunk_send_ns"][1:],
                                          strict=False)]
    assert max(gaps) >= 0.6
    assert rec["status"] == "ok" and rec["output_len"] == 10


def test_fault_probability_is_seeded(synthetic, tmp_path):
    def run(seed: str) -> list[int]:
        eng = synthetic("--protocol", "vllm", "--fault", "http500:p=0.5", "--seed", seed)
        with httpx.Client(timeout=10) as c:
            codes = [c.post(eng.url + "/v1/completions",
                            json={"prompt": [1, 2], "max_tokens": 1}).status_code
                     for _ in range(20)]
        eng.stop()
        return codes

    a, b = run("1"), run("1")
    assert a == b and 500 in a and 200 in a


def test_client_disconnect_is_recorded_as_cancelled(synthetic, tmp_path):
    truth = tmp_path / "t.jsonl"
    eng = synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "20")
    host, port = eng.url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": [1, 2, 3], "max_tokens": 500, "stream": True,
                       "ignore_eos": True}).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json"
                  b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        s.recv(4096)
    time.sleep(0.3)
    m = scrape(eng.url + "/metrics")
    assert metric(m, "vllm:num_requests_running") == 0
    eng.stop()
    (rec,) = read_truth(truth)
    assert rec["status"] == "cancelled" and rec["output_len"] < 500


# -- timing model -----------------------------------------------------------------------------

def _ttft_s(url: str, prompt_len: int) -> float:
    body = {"prompt": [5] * prompt_len, "max_tokens": 2, "ignore_eos": True, "stream": True}
    t0 = time.monotonic()
    with httpx.Client(timeout=30) as c, c.stream("POST", url + "/v1/completions",
                                                 json=body) as r:
        for ln in r.iter_lines():
            if ln.startswith("data: "):
                return time.monotonic() - t0
    raise AssertionError("no chunk")


def test_ttft_grows_with_prompt_length(synthetic):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "2", "--per-token-ms", "0.05",
                    "--max-prefill-tokens", "100000")
    short = min(_ttft_s(eng.url, 10) for _ in range(3))
    long = min(_ttft_s(eng.url, 8000) for _ in range(3))
    # the model says 8000 tokens x 0.05 ms = 400 ms more
    assert long - short > 0.3


def _decode_rate(url: str, concurrency: int, truth_path, tokens: int = 40) -> float:
    body = {"prompt": [11, 12, 13], "max_tokens": tokens, "ignore_eos": True, "stream": True}
    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as c, \
            ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: c.post(url + "/v1/completions", json=body).read(),
                      range(concurrency)))
    recs = read_truth(truth_path)[-concurrency:]
    start = min(r["chunk_send_ns"][0] for r in recs)
    end = max(r["chunk_send_ns"][-1] for r in recs)
    return sum(r["output_len"] - 1 for r in recs) / ((end - start) / 1e9)


def test_sd_pays_at_low_load_and_costs_at_high_load(synthetic, tmp_path):
    """The timing model's central property: with the same acceptance, SD raises throughput at
    concurrency 1 and lowers it at high concurrency (verify cost dominates). Decode rates, SD
    over off: (5 + 0.2)/((5 + 4 x 0.2 + 3 x 0.25)/AL) = 1.5 at 1, (5 + 48 x 0.2)/((5 + 192 x
    0.2 + 0.75)/AL) = 0.62 at 48, AL = 1.888."""
    common = ["--protocol", "vllm", "--step-base-ms", "5", "--per-token-ms", "0.2",
              "--draft-ms", "0.25", "--accept-rates", "0.6,0.4,0.2"]
    sd_t, off_t = tmp_path / "sd.jsonl", tmp_path / "off.jsonl"
    sd = synthetic(*common, "--truth-log", str(sd_t))
    off = synthetic(*common, "--no-spec", "--truth-log", str(off_t))
    low_sd, low_off = _decode_rate(sd.url, 1, sd_t), _decode_rate(off.url, 1, off_t)
    high_sd, high_off = _decode_rate(sd.url, 48, sd_t), _decode_rate(off.url, 48, off_t)
    assert low_sd > 1.2 * low_off
    assert high_sd < high_off


@pytest.mark.parametrize("how", ["stdin", "script"])
def test_engine_starts_under_a_main_script_too(tmp_path, how):
    """Under ``python -`` or ``python script.py`` (no fork server there: its child would import
    the main script by path) the engine starts, answers and stops cleanly."""
    code = ("from loadgen.synthetic.process import SyntheticProcess\n"
            "import httpx\n"
            "if __name__ == '__main__':\n"
            "    with SyntheticProcess(['--protocol', 'vllm', '--fast']) as eng:\n"
            "        print(httpx.get(eng.url + '/health').status_code, type(eng.proc).__name__)\n"
            "    print(eng.proc.returncode)\n")
    script = tmp_path / "main.py"
    script.write_text(code)
    argv = [sys.executable, "-" if how == "stdin" else str(script)]
    r = subprocess.run(argv, input=code if how == "stdin" else None, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["200", "Popen", "0"], r.stdout + r.stderr
