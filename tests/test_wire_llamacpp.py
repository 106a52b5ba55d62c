"""nginx terminating TLS in front of the real llama-server, as a stand-in for a vendor's
OpenAI-compatible endpoint: `--engine openai` on /v1/completions and /v1/chat/completions,
direct and through nginx (proxy_buffering off) give the same counts and tokens. Skipped when
llama-server, SmolLM2, the tokenizer or nginx is absent (scripts/setup.sh sets them up)."""

from __future__ import annotations

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.results.records import read_records
from loadgen.run.benchmark import run_benchmark
from tests.builtin import smollm2_prompts
from tests.wire_servers import NGINX, make_certs, start_nginx

pytestmark = [pytest.mark.real_engine, pytest.mark.timeout(300)]
OUTPUT_LEN = 24


def _prompts() -> PromptFile:
    pf = smollm2_prompts()
    return PromptFile(header=pf.header, records=[r for r in pf.records if not r.turns][:4])


def test_llamacpp_openai_through_nginx_tls(tmp_path, llama_server):
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/setup.sh)")
    prompts = _prompts()
    certs = make_certs(tmp_path)
    eng = llama_server("none")
    ng = start_nginx(tmp_path / "nginx", certs, eng.base_url, buffering=False)
    try:
        for mode in ("completions", "chat"):
            runs = {}
            for how, url in (("direct", eng.base_url),
                             ("nginx", f"https://localhost:{ng.port}")):
                out = tmp_path / f"{mode}-{how}"
                cfg = RunConfig.build(endpoint=url, engine="openai", out=out,
                                      output_len=OUTPUT_LEN, concurrency=1,
                                      num_requests=len(prompts.records), shuffle=False,
                                      openai_mode=mode, ca_bundle=str(certs.ca), timeout_s=200)
                runs[how] = (run_benchmark(cfg, prompts, None, argv=["test"]),
                             read_records(out / "requests.jsonl"))
            (sd, rd), (sn, rn) = runs["direct"], runs["nginx"]
            # Same outcome either way.
            assert sd.requests == sn.requests and sd.requests.total == len(prompts.records)
            assert sd.error_reasons == sn.error_reasons
            assert all(r["http_status"] == 200 for r in rd + rn)
            # every token came through nginx as it came direct: the same lengths and events.
            # (Not the same text: llama-server reuses its prompt cache over the OpenAI
            # surface, and a request served partly from cache may decode greedily to other
            # tokens, so the text is not what the engine guarantees.)
            assert all(r["neutral_output_tokens"] or r["output_tokens"] for r in rd + rn)
            assert [r["output_tokens"] for r in rd] == [r["output_tokens"] for r in rn]
            assert [r["events"] for r in rd] == [r["events"] for r in rn]
            assert sd.acceptance.acceptance_length == sn.acceptance.acceptance_length
            for s in (sd, sn):
                assert not any("buffered" in w for w in s.warnings), s.warnings
    finally:
        ng.stop()
