"""Vendor against self-hosted on the real llama-server (SmolLM2, n-gram SD): the like-for-like
recipe of docs/GUIDE.md end to end, and multi-turn replay over llama-server's OpenAI surface,
which streams text without token ids.

One llama-server stands in for both sides: the "vendor" behind nginx terminating TLS and
refusing any request without its bearer key, the "self-hosted" server's own chat endpoint
direct. Skipped when llama-server, SmolLM2 or nginx is absent (scripts/setup.sh sets them up).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from loadgen.launch import llamacpp_build
from loadgen.results.records import read_records
from tests.wire_servers import NGINX, make_certs, start_nginx

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(600)]

if llamacpp_build.find_llama_server() is None:
    pytest.skip("llama-server not built (scripts/setup_llamacpp.sh)", allow_module_level=True)
if NGINX is None:
    pytest.skip("nginx is not installed (scripts/setup.sh)", allow_module_level=True)

KEY = "sk-vendor-test-4f1c9e"  # the vendor's bearer key: never in any output
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class Sides:
    def __init__(self, engine, ng, certs) -> None:
        self.engine = engine
        self.nginx = ng
        self.certs = certs
        self.vendor = f"https://127.0.0.1:{ng.port}"
        self.self_hosted = engine.base_url


@pytest.fixture(scope="module")
def sides(tmp_path_factory, llama_server) -> Iterator[Sides]:
    eng = llama_server("ngram", slots=2)
    d = tmp_path_factory.mktemp("vendor")
    certs = make_certs(d)
    guard = f'if ($http_authorization != "Bearer {KEY}") {{ return 401; }}'
    ng = start_nginx(d / "nginx", certs, eng.base_url, buffering=False, guard=guard)
    try:
        yield Sides(eng, ng, certs)
    finally:
        ng.stop()


def loadgen(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loadgen", *args], capture_output=True,
                          text=True, timeout=500, env={**CLEAN_ENV, **(env or {})})


# the recipe of docs/GUIDE.md, with this machine's endpoints and a small load
WORKLOAD = ["--engine", "openai", "--openai-mode", "chat", "--dataset", "builtin",
            "--output-len", "24", "--concurrency", "2", "--num-requests", "12",
            "--warmup-requests", "2", "--quiet"]


def test_like_for_like_recipe(sides, tmp_path):
    vendor, self_hosted = tmp_path / "vendor", tmp_path / "self"
    r = loadgen("run", "--endpoint", sides.vendor, *WORKLOAD, "--api-key-env", "VENDOR_KEY",
                "--ca-bundle", str(sides.certs.ca), "--out", str(vendor),
                env={"VENDOR_KEY": KEY})
    assert r.returncode == 0, r.stderr
    r2 = loadgen("run", "--endpoint", sides.self_hosted, *WORKLOAD, "--out", str(self_hosted))
    assert r2.returncode == 0, r2.stderr
    c = loadgen("compare", str(vendor), str(self_hosted), "--json", str(tmp_path / "c.json"))
    assert c.returncode == 0, c.stderr
    res = json.loads((tmp_path / "c.json").read_text())
    # like for like: the only unlike condition left is the vendor's TLS and proxy hop
    kinds = [x["kind"] for x in res["conditions"]]
    assert kinds == ["transport"], res["conditions"]
    assert res["conditions"][0]["text"].startswith("transport: A TLS, a local reverse proxy")
    for run_dir in (vendor, self_hosted):
        recs = read_records(run_dir / "requests.jsonl")
        measured = [x for x in recs if not x["warmup"]]
        assert measured and all(x["status"] == "ok" for x in measured), measured[:2]
        assert all(x["text_prompt"] and x["output_tokens"] == 24 for x in measured)
        assert any(x["turn"] == 1 for x in recs)  # the built-in set's second turns replayed
        s = json.loads((run_dir / "summary.json").read_text())
        assert s["prefix_cache"]["policy"] == "unprotected"
        # the engine is the llama-server behind nginx too, never "others"
        assert s["host"]["engine_pid"] == sides.engine.pid
    host = json.loads((vendor / "summary.json").read_text())["host"]
    assert host["proxy_pid"] == sides.nginx.proc.pid
    blob = "".join(p.read_text() for p in vendor.iterdir()) + r.stdout + r.stderr + c.stdout
    assert KEY not in blob


def test_without_the_key_the_vendor_refuses(sides, tmp_path):
    r = loadgen("run", "--endpoint", sides.vendor, *WORKLOAD, "--ca-bundle",
                str(sides.certs.ca), "--out", str(tmp_path / "o"))
    assert r.returncode == 1
    assert "HTTP 401" in r.stderr


@pytest.mark.parametrize("mode", ["completions", "chat"])
def test_multi_turn_over_llama_servers_openai_surface(sides, tmp_path, mode):
    """The built-in set's two-turn records as SmolLM2 ids. /v1/completions: the stream has no
    ids, so each second turn is built from the reply's text tokenized with SmolLM2
    (llama-server's own prompt count says it received exactly the ids built); chat: the
    record's text, the reply going back as an assistant message."""
    from loadgen.data.builtin import read_dataset
    from loadgen.data.prompts import write_prompts

    pf, _ = read_dataset("builtin")
    ds = write_prompts(tmp_path / "mt.jsonl", [r for r in pf.records if r.turns], pf.header)
    out = tmp_path / mode
    r = loadgen("run", "--endpoint", sides.self_hosted, "--engine", "openai", "--openai-mode",
                mode, "--dataset", str(ds), "--output-len", "16", "--concurrency", "2",
                "--warmup-requests", "0", "--out", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    recs = read_records(out / "requests.jsonl")
    assert len(recs) == 18 and all(x["status"] == "ok" for x in recs), [
        x["error"] for x in recs if x["error"]][:3]
    second = [x for x in recs if x["turn"] == 1]
    assert len(second) == 9
    if mode == "completions":
        assert "tokenized with smollm2" in r.stderr
        for x in second:
            assert x["prompt_ids_from_text"] > 0
            assert x["usage_prompt_tokens"] == x["input_tokens"]
    else:
        assert "tokenized with" not in r.stderr
        assert all(x["text_prompt"] and x["prompt_ids_from_text"] is None for x in recs)
