"""``loadgen compare`` names every unlike condition beside the verdicts it affects
(compare/unlike.py), on real runs against the synthetic engine: a vendor-style run (chat text
through nginx TLS, sampled, no cache protection) against a self-hosted-style one (token ids,
direct, salted cache, greedy); two runs alike; and EOS honoured on one side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wire_servers import make_certs, start_nginx

pytestmark = pytest.mark.timeout(240)

CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@pytest.fixture
def cli(loadgen_cli, monkeypatch):
    """``loadgen`` in this process, without proxy variables, the console 250 columns wide."""
    for k in os.environ:
        if "proxy" in k.lower():
            monkeypatch.delenv(k)
    monkeypatch.setenv("COLUMNS", "250")
    return loadgen_cli


def run(cli, endpoint: str, out: Path, *extra: str, dataset: str = "builtin",
        output_len: int = 16) -> None:
    r = cli("run", "--endpoint", endpoint, "--dataset", dataset,
            "--output-len", str(output_len), "--num-requests", "12", "--concurrency", "2",
            "--warmup-requests", "0", "--no-multi-turn", "--out", str(out), "--quiet", *extra)
    assert r.returncode == 0, r.stderr


def compare(cli, a: Path, b: Path, tmp: Path) -> tuple[dict, str, str]:
    """``loadgen compare`` (``cli=None``: as a subprocess, as a user runs it)."""
    args = ["compare", str(a), str(b), "--resamples", "200", "--json", str(tmp / "c.json"),
            "--markdown", str(tmp / "c.md")]
    if cli is None:
        r = subprocess.run([sys.executable, "-m", "loadgen", *args], capture_output=True,
                           text=True, timeout=120, env={**CLEAN_ENV, "COLUMNS": "250"})
    else:
        r = cli(*args)
    assert r.returncode == 0, r.stderr
    return json.loads((tmp / "c.json").read_text()), r.stdout, (tmp / "c.md").read_text()


@pytest.fixture
def nginx_servers():
    started = []
    yield started
    for s in started:
        s.stop()


def assert_unlike_statistics(res: dict) -> None:
    """The vendor-style pair's statistics: every one affected by the prompts and the sampling;
    TTFT by the cache and the transport too, throughput by the token counts, TPOT not by the
    cache."""
    rows = {r["key"]: r for r in res["statistics"]}
    assert rows["ttft_ms.p50"]["unlike"] == ["prefix_cache", "prompts", "sampling", "transport"]
    assert rows["output_tokens_per_s"]["unlike"] == [
        "prefix_cache", "prompts", "sampling", "token_counts"]
    assert "prefix_cache" not in rows["tpot_ms.p50"]["unlike"]


@pytest.mark.slow  # nginx
def test_vendor_against_self_hosted_names_every_unlike_condition(synthetic, tmp_path,
                                                                  nginx_servers, cli):
    eng = synthetic("--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2")
    certs = make_certs(tmp_path)
    ng = start_nginx(tmp_path / "ng", certs, eng.url, buffering=False)
    nginx_servers.append(ng)
    run(cli, eng.url, tmp_path / "self", "--engine", "vllm")
    run(cli, f"https://127.0.0.1:{ng.port}", tmp_path / "vendor", "--engine", "openai",
        "--openai-mode", "chat", "--model", "m", "--ca-bundle", str(certs.ca),
        "--temperature", "0.5")
    res, console, md = compare(cli, tmp_path / "self", tmp_path / "vendor", tmp_path)
    kinds = {c["kind"]: c["text"] for c in res["conditions"]}
    assert set(kinds) == {"prefix_cache", "prompts", "sampling", "transport", "token_counts"}
    rate = json.loads((tmp_path / "self" / "summary.json").read_text())["prefix_cache"][
        "hit_rate"]  # the workload's own reuse of the chat template's prefix, inside the run
    assert kinds["prefix_cache"] == (f"prefix cache: A salted ({rate:.0%} hits), "
                                     f"B unprotected (no hit counters)")
    assert "B sends text" in kinds["prompts"]
    assert kinds["sampling"] == "sampling: A greedy, B T=0.5"
    assert kinds["transport"].startswith("transport: A plain HTTP; B TLS, a local reverse "
                                         "proxy in front (pid ")
    assert "A counts the engine's token ids or counts" in kinds["token_counts"]
    assert_unlike_statistics(res)
    line = next(x for x in md.splitlines() if "TTFT p50" in x)
    assert line.endswith("(not like for like: prefix cache differs; unlike prompts, sampling, "
                         "transport) |")
    # the console's verdict cell wraps where its width says: the TTFT row's cells, read back
    # without the table's borders and line breaks
    lines = console.splitlines()
    start = next(i for i, x in enumerate(lines) if "TTFT p50" in x)
    verdict = []
    for k, x in enumerate(lines[start:]):
        cells = x.split("│")
        if len(cells) < 3 or (k and cells[1].strip()):  # the table's end, or the next row
            break
        verdict.append(cells[-2].strip())
    assert "(not like for like: prefix cache differs;" in " ".join(verdict)
    assert sum("(unlike: " in x for x in md.splitlines()) >= 20
    assert "## Unlike conditions" in md
    assert all(f"unlike: {t}" in console for t in kinds.values())


def test_vendor_style_over_tls_names_every_unlike_condition(synthetic, tmp_path, cli):
    """The vendor-style run (chat text over TLS, sampled, no cache protection) against an
    engine serving TLS itself, no proxy: the unlike conditions of the test above."""
    args = ["--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2"]
    certs = make_certs(tmp_path)
    eng = synthetic(*args)
    tls = synthetic(*args, "--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    run(cli, eng.url, tmp_path / "self", "--engine", "vllm")
    run(cli, tls.url, tmp_path / "vendor", "--engine", "openai", "--openai-mode", "chat",
        "--model", "m", "--temperature", "0.5", "--ca-bundle", str(certs.ca))
    res, console, md = compare(cli, tmp_path / "self", tmp_path / "vendor", tmp_path)
    kinds = {c["kind"]: c["text"] for c in res["conditions"]}
    assert set(kinds) == {"prefix_cache", "prompts", "sampling", "transport", "token_counts"}
    assert kinds["transport"] == "transport: A plain HTTP; B TLS", kinds["transport"]
    assert kinds["prefix_cache"].startswith("prefix cache: A salted (")
    assert "B sends text" in kinds["prompts"]
    assert kinds["sampling"] == "sampling: A greedy, B T=0.5"
    assert "A counts the engine's token ids or counts" in kinds["token_counts"]
    assert_unlike_statistics(res)
    assert "## Unlike conditions" in md
    assert all(f"unlike: {t}" in console for t in kinds.values())


def test_alike_runs_have_no_unlike_condition(synthetic, tmp_path, cli):
    eng = synthetic("--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2")
    run(cli, eng.url, tmp_path / "a", "--engine", "vllm")
    run(cli, eng.url, tmp_path / "b", "--engine", "vllm")
    res, console, md = compare(None, tmp_path / "a", tmp_path / "b", tmp_path)  # a subprocess
    assert res["conditions"] == []
    assert all(r["unlike"] == [] for r in res["statistics"])
    assert "(unlike: " not in console and "unlike: " not in console.replace("(unlike: ", "")
    assert "Unlike conditions" not in md and "not like for like" not in md


def test_eos_honoured_on_one_side_is_named(synthetic, tmp_path, cli):
    # output lengths, not timing: engines without step time (--fast)
    plain = synthetic("--protocol", "vllm", "--model-name", "m", "--fast")
    eos = synthetic("--protocol", "vllm", "--model-name", "m", "--fast", "--honour-eos")
    run(cli, plain.url, tmp_path / "a", "--engine", "vllm", output_len=300)
    # a request that stops before its length is a failed one: half of them here, accepted
    run(cli, eos.url, tmp_path / "b", "--engine", "vllm", "--max-error-rate", "1",
        output_len=300)
    res, _, _ = compare(cli, tmp_path / "a", tmp_path / "b", tmp_path)
    cond = next(c for c in res["conditions"] if c["kind"] == "output_lengths")
    recs = [json.loads(x) for x in (tmp_path / "b" / "requests.jsonl").read_text().splitlines()]
    early = sum(r["output_tokens"] < 300 for r in recs)
    assert early > 0  # the synthetic engine's natural lengths: 16 + hash % 497
    assert cond["text"].startswith(
        f"output lengths: A every request ran to its length, 300.0 output tokens per ok "
        f"request; B {early} of 12 requests stopped before their length (EOS honoured)")


@pytest.mark.slow  # nginx
def test_like_for_like_recipe_leaves_only_the_vendors_hop(synthetic, tmp_path, nginx_servers,
                                                          cli, monkeypatch):
    """The recipe of docs/GUIDE.md on the synthetic engine (tests/test_vendor_recipe.py runs it on
    llama-server): the vendor behind nginx TLS with a bearer key, the self-hosted server's own
    chat endpoint direct, the same text workload: only the TLS and proxy hop is unlike."""
    key = "sk-test-7d2a"
    eng = synthetic("--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2")
    certs = make_certs(tmp_path)
    ng = start_nginx(tmp_path / "ng", certs, eng.url, buffering=False,
                     guard=f'if ($http_authorization != "Bearer {key}") {{ return 401; }}')
    nginx_servers.append(ng)
    w = ["--engine", "openai", "--openai-mode", "chat", "--model", "m", "--dataset", "builtin",
         "--output-len", "16", "--concurrency", "2", "--num-requests", "12",
         "--warmup-requests", "2", "--quiet"]
    monkeypatch.setenv("VK", key)
    for name, url, extra in (
            ("vendor", f"https://127.0.0.1:{ng.port}",
             ["--api-key-env", "VK", "--ca-bundle", str(certs.ca)]),
            ("self", eng.url, [])):
        r = cli("run", "--endpoint", url, *w, *extra, "--out", str(tmp_path / name))
        assert r.returncode == 0, r.stderr
        assert key not in r.stderr + "".join(p.read_text() for p in (tmp_path / name).iterdir())
    res, _, _ = compare(cli, tmp_path / "vendor", tmp_path / "self", tmp_path)
    assert [c["kind"] for c in res["conditions"]] == ["transport"]
    assert res["conditions"][0]["text"] == (
        f"transport: A TLS, a local reverse proxy in front (pid {ng.proc.pid}); B plain HTTP")
    rows = {r["key"]: r for r in res["statistics"]}
    assert rows["output_tokens_per_s"]["unlike"] == []
    assert rows["ttft_ms.p50"]["unlike"] == ["transport"]
    for name in ("vendor", "self"):
        host = json.loads((tmp_path / name / "summary.json").read_text())["host"]
        assert host["engine_pid"] == eng.proc.pid  # through nginx too
