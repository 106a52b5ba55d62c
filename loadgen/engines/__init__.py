"""Engine adapters: one module per engine behind ``EngineAdapter``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from loadgen.engines.base import EngineAdapter
from loadgen.engines.sampling import Sampling

if TYPE_CHECKING:
    from loadgen.results.config import RunConfig

ENGINES = ("vllm", "sglang", "trtllm", "llamacpp", "openai")


def make_adapter(name: str, model: str | None = None, keep_token_ids: bool = False,
                 sampling: Sampling | None = None, **options: object) -> EngineAdapter:
    cls = adapter_class(name)
    return cls(model=model, keep_token_ids=keep_token_ids, sampling=sampling, **options)


def adapter_for(cfg: RunConfig) -> EngineAdapter:
    """The one place a run's adapter is built from its configuration: engine, model, sampling,
    the options of the engine's surface. Every worker and the coordinator call this."""
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                        seed_per_request=cfg.seed_per_request, run_seed=cfg.seed)
    options: dict[str, object] = {"mode": cfg.openai_mode} if cfg.engine == "openai" else {}
    return make_adapter(cfg.engine, model=cfg.model, keep_token_ids=cfg.keep_token_ids,
                        sampling=sampling, **options)


def adapter_class(name: str) -> type[EngineAdapter]:
    cls: type[EngineAdapter]
    if name == "vllm":
        from loadgen.engines.vllm import VllmAdapter as cls
    elif name == "sglang":
        from loadgen.engines.sglang import SglangAdapter as cls
    elif name == "trtllm":
        from loadgen.engines.trtllm import TrtllmAdapter as cls
    elif name == "llamacpp":
        from loadgen.engines.llamacpp import LlamacppAdapter as cls
    elif name == "openai":
        from loadgen.engines.openai import OpenAIAdapter as cls
    else:
        raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    return cls
