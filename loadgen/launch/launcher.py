"""From "engine + model + SD method" to a ready-to-start :class:`EngineProcess`.

This is the layer ``loadgen serve <engine>`` and ``loadgen run --serve`` share: it fills in
defaults (llama.cpp binary and SmolLM2 model, free port), resolves llama.cpp draft specs
(``self``, ``smollm2:layers=N``), writes the TensorRT-LLM YAML and builds the argv with
:mod:`loadgen.launch.commands`.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from loadgen.cache import cache_dir
from loadgen.launch import commands as C
from loadgen.launch.process import DEFAULT_HEALTH_TIMEOUT_S, EngineProcess
from loadgen.results.files import write_text_atomic


def free_port(host: str = C.DEFAULT_HOST) -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LaunchPlan:
    """Everything needed to start an engine; ``argv`` is exactly what will be executed."""

    engine: str
    model: str
    spec: C.SpecConfig
    host: str
    port: int
    argv: list[str]
    health_path: str
    config_files: dict[str, str] = field(default_factory=dict)  # path -> contents
    env: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # static facts (binary, build version)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_config_files(self) -> None:
        for path, text in self.config_files.items():
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            if not p.exists() or p.read_text() != text:
                write_text_atomic(p, text)

    def process(self, log_path: str | Path | None = None,
                health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
                grace_s: float = 10.0) -> EngineProcess:
        """An :class:`EngineProcess` for this plan (config files written, not started)."""
        self.write_config_files()
        if log_path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            log_path = cache_dir("logs") / f"{self.engine}-{self.port}-{stamp}.log"
        return EngineProcess(
            self.argv, engine=self.engine, base_url=self.base_url,
            health_path=self.health_path, log_path=log_path, env=self.env or None,
            sd=self.spec.as_dict(), model=self.model, config_files=self.config_files,
            info=self.info,
            grace_s=grace_s, health_timeout_s=health_timeout_s,
        )


def _vllm_cpu_defaults(extra: list[str],
                       info: dict[str, Any]) -> tuple[str | None, dict[str, str], list[str]]:
    """No `vllm` on PATH: use the vLLM-CPU venv (scripts/setup_vllm_cpu.sh) when it exists,
    with the environment and flags vLLM needs on a CPU; the caller's extra args come last, so
    they win."""
    from loadgen.launch import vllm_cpu

    venv = vllm_cpu.vllm_cpu_venv()
    if venv is None:
        return None, {}, extra
    info["vllm_cpu_venv"] = str(venv)
    python = vllm_cpu.vllm_cpu_python(venv)
    return (str(python) if python else None, vllm_cpu.vllm_cpu_env(venv),
            [*vllm_cpu.vllm_cpu_extra_args(), *extra])


def _trtllm_config_file(spec: C.SpecConfig) -> tuple[str, str]:
    text = yaml.safe_dump(C.trtllm_config(spec), sort_keys=False)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    path = cache_dir("launch", "trtllm") / f"extra-llm-api-options-{digest}.yaml"
    return str(path), text


def plan_launch(
    engine: str,
    model: str | None = None,
    spec: C.SpecConfig | None = None,
    *,
    host: str = C.DEFAULT_HOST,
    port: int | None = None,
    python: str | None = None,
    binary: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    prepare: bool = True,
) -> LaunchPlan:
    """Resolve defaults and build the argv.

    ``port=0`` picks a free port; ``None`` uses the engine's usual port. ``env`` is added to the
    child's environment (e.g. ``loadgen.launch.vllm_cpu.vllm_cpu_env(venv)``). With
    ``prepare=False`` nothing is downloaded or built (``--print-command``): paths are where things
    would be.
    """
    spec = spec or C.SpecConfig()
    C.validate(engine, spec)
    if port is None:
        port = C.DEFAULT_PORTS[engine]
    elif port == 0:
        port = free_port(host)
    extra = [str(a) for a in extra_args]
    config_files: dict[str, str] = {}
    info: dict[str, Any] = {}

    if engine == "llamacpp":
        from loadgen.launch import llamacpp_build as B
        from loadgen.models import gguf_draft

        if model is None:
            model = str(gguf_draft._smollm2_path(create=prepare))
        if binary is None:
            if prepare:
                binary = str(B.llama_server_path(build=True))
            else:
                binary = str(B.find_llama_server() or B.cached_binary())
        if spec.draft:
            draft_path = gguf_draft.resolve_draft(spec.draft, model, create=prepare)
            spec = replace(spec, extra={**spec.extra, "draft_path": str(draft_path),
                                        "draft_spec": spec.draft}, draft=str(draft_path))
        info["binary"] = binary
        if Path(binary) == B.cached_binary():
            # The server reports build_info "b0-unknown" (no git in the sdist): record the source.
            info["source"] = f"{B.LLAMACPP_SDIST}=={B.LLAMACPP_VERSION} (sdist, built locally)"
        argv = C.llamacpp_command(model, spec, binary=binary, host=host, port=port, extra=extra)
    else:
        if model is None and engine == "vllm" and shutil.which("vllm") is None:
            from loadgen.launch.vllm_cpu import smollm2_hf_dir

            hf = smollm2_hf_dir()  # the CPU default: SmolLM2 converted for vLLM-CPU
            model = str(hf) if hf else None
        if model is None:
            raise C.LaunchConfigError(f"--model is required for {engine}")
        if engine == "vllm":
            if python is None and shutil.which("vllm") is None:
                python, cpu_env, extra = _vllm_cpu_defaults(extra, info)
                env = {**cpu_env, **(env or {})}
            argv = C.vllm_command(model, spec, host=host, port=port, python=python, extra=extra)
        elif engine == "sglang":
            argv = C.sglang_command(model, spec, host=host, port=port, python=python,
                                    extra=extra)
        else:
            path, text = _trtllm_config_file(spec)
            config_files[path] = text
            argv = C.trtllm_command(model, spec, path, host=host, port=port, extra=extra)
    plan = LaunchPlan(engine=engine, model=model, spec=spec, host=host, port=port, argv=argv,
                      health_path=C.HEALTH_PATHS[engine], config_files=config_files,
                      env=dict(env or {}), info=info)
    # Small and cheap: written even for --print-command, so the printed command runs as is.
    plan.write_config_files()
    return plan


def start_engine(engine: str, model: str | None = None, spec: C.SpecConfig | None = None, *,
                 log_path: str | Path | None = None,
                 health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
                 **kwargs: Any) -> EngineProcess:
    """Plan, start and wait until healthy. Use the result as a context manager to stop it::

        with start_engine("llamacpp", spec=SpecConfig("ngram"), port=0) as eng:
            run(eng.base_url); manifest["engine"] = eng.describe()
    """
    plan = plan_launch(engine, model, spec, **kwargs)
    proc = plan.process(log_path=log_path, health_timeout_s=health_timeout_s)
    proc.start()
    try:
        proc.wait_healthy()
        proc.probe_version()
    except BaseException:
        proc.stop()
        raise
    return proc
