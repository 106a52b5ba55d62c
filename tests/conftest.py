"""Shared fixtures: real servers on 127.0.0.1, each a process of its own (the synthetic engine
forked from a fork server that has imported it: loadgen/synthetic/process.py), and the CLI run
in this process (``loadgen_cli``).

The fast lane, ``python3 -m pytest -q -m "not slow"`` (its time on 2 quiet cores: README.md),
runs one pytest-xdist worker per core (tests/lanes.py); its heaviest tests are the data
builders' (the recipe formats and the qualitative build import sentence-transformers, about 9 s
of CPU, and embed a pool; the throughput builder tokenizes long documents), the report's twelve
runs and plots, and the bootstrap's coverage trials. The whole suite (CI,
``.ci/run``) runs in one process and adds the slow lane below. Line coverage of a lane, child
processes included (pyproject's ``[tool.coverage.run]``): ``python3 -m coverage run -m pytest
-q -m "not slow" -n 0; python3 -m coverage combine -q; python3 -m coverage report``."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.synthetic.process import SyntheticProcess

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# The slow lane: modules that start real engines (llama.cpp, vLLM-CPU), nginx, Prometheus, Ray
# or worker processes, Chromium, build the wheel, or drive hundreds of streams. Everything else
# is the fast lane, `python3 -m pytest -q -m "not slow"`: every module's logic on the synthetic
# engine. Tests elsewhere that start nginx or long real builds carry @pytest.mark.slow
# themselves (test_compare_unlike, test_engine_behind_proxy, test_wire_secrets, ...).
SLOW_MODULES = frozenset({
    "test_llamacpp_real", "test_real_engines_e2e", "test_real_windows_sampling",
    "test_vllm_cpu_real", "test_vllm_prefix_cache", "test_wire_llamacpp", "test_wire_tls_proxy",
    "test_wheel", "test_scale", "test_fleet", "test_ttft_wire", "test_comparisons",
    "test_trace", "test_trace_llamacpp_real", "test_answers_llamacpp_real", "test_vendor_recipe",
    "test_capacity", "test_sd_policy", "test_launch_gguf_draft",
    "test_report_repeats", "test_telemetry",
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


@pytest.fixture
def loadgen_cli(capsys):
    """``loadgen_cli("run", "--endpoint", ...)`` -> a ``CompletedProcess`` (returncode, stdout,
    stderr) of the command run in this process through ``loadgen.cli.main``: what a subprocess
    would print and return, without an interpreter's start-up. Exit codes on signals and
    process limits need a real subprocess (each command keeps one such test)."""
    import subprocess

    from loadgen.cli import main

    def call(*args: object) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals and --help
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["loadgen", *argv], code, out, err)

    return call


@pytest.fixture(scope="session")
def llama_server():
    """Factory: ``llama_server("ngram", slots=1)`` -> the running llama-server (our cached
    build) with SmolLM2-135M: one thread (two llama.cpp threads spin-wait on each other on a
    shared 2-core machine), 8k of context per slot, started once per (SD mode, slots) for the
    whole session and stopped at its end. Skips where llama-server or the model is not set up
    (scripts/setup.sh)."""
    from contextlib import ExitStack

    from loadgen.launch import SpecConfig, start_engine
    from loadgen.launch.llamacpp_build import find_llama_server

    stack = ExitStack()
    started: dict[tuple[str, int], object] = {}

    def get(mode: str = "ngram", slots: int = 1):
        if find_llama_server() is None:
            pytest.skip("llama-server is not built (bash scripts/setup_llamacpp.sh)")
        from loadgen.models.smollm2 import smollm2_gguf_path

        try:
            smollm2_gguf_path()
        except Exception as exc:  # the model's wheel is missing
            pytest.skip(f"SmolLM2 GGUF is not available: {exc}")
        key = (mode, slots)
        if key not in started:
            started[key] = stack.enter_context(start_engine(
                "llamacpp", spec=SpecConfig(mode), port=0,
                extra_args=["-np", str(slots), "-c", str(8192 * slots), "-t", "1"],
                health_timeout_s=180))
        return started[key]

    yield get
    stack.close()


@pytest.fixture(scope="session")
def vllm_server():
    """Factory: ``vllm_server("ngram", per_request=False)`` -> the running vLLM-CPU server
    with SmolLM2 (tests/vllm_cpu.py), K = 3 with SD, started once per configuration for the
    whole session. Skips where the vLLM-CPU venv is not set up."""
    from contextlib import ExitStack

    from loadgen.launch import SpecConfig
    from tests.vllm_cpu import start_vllm_cpu

    stack = ExitStack()
    started: dict[tuple[str, bool], object] = {}

    def get(mode: str = "ngram", per_request: bool = False):
        key = (mode, per_request)
        if key not in started:
            spec = SpecConfig(mode, num_spec_tokens=3 if mode != "none" else None)
            # vLLM refuses the per-request flag without SD
            extra = ["--per-request-spec-decode-metrics", "summary"] if per_request else []
            started[key] = stack.enter_context(start_vllm_cpu(spec, extra))
        return started[key]

    yield get
    stack.close()
