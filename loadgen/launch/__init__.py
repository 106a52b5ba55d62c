"""Start real engines (vLLM, SGLang, TensorRT-LLM, llama.cpp) with speculative decoding configured.

API for ``loadgen run --serve`` and scripts (names are imported lazily, so ``import
loadgen.launch`` stays cheap)::

    from loadgen.launch import SpecConfig, start_engine

    with start_engine("llamacpp", spec=SpecConfig("ngram", num_spec_tokens=4), port=0,
                      extra_args=["-t", "1"]) as eng:      # healthy here
        run_benchmark(eng.base_url)
        manifest["engine"] = eng.describe()                   # stopped on exit / error / Ctrl-C

Modules: :mod:`.commands` (pure argv builders), :mod:`.launcher` (defaults, drafts, YAML),
:mod:`.process` (child lifecycle), :mod:`.llamacpp_build` (llama-server from source),
:mod:`.presets` (``--preset`` files); the command is loadgen/cli/serve.py.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SpecConfig": "loadgen.launch.commands",
    "LaunchConfigError": "loadgen.launch.commands",
    "LAUNCHABLE_ENGINES": "loadgen.engines",
    "SPEC_METHODS": "loadgen.launch.commands",
    "LaunchPlan": "loadgen.launch.launcher",
    "plan_launch": "loadgen.launch.launcher",
    "start_engine": "loadgen.launch.launcher",
    "free_port": "loadgen.launch.launcher",
    "EngineProcess": "loadgen.launch.process",
    "EngineError": "loadgen.launch.process",
    "EngineStartError": "loadgen.launch.process",
    "HealthTimeout": "loadgen.launch.process",
    "probe_version": "loadgen.launch.process",
    "llama_server_path": "loadgen.launch.llamacpp_build",
    "BuildError": "loadgen.launch.llamacpp_build",
    "load_preset": "loadgen.launch.presets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loadgen.launch' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
