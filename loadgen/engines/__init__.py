"""Engine adapters: one module per engine behind ``EngineAdapter``, each engine registered once.

``REGISTRY`` names, per engine: its adapter class (imported when first used), whether
``loadgen serve`` / ``--serve`` can start it (its command builders: loadgen/launch/commands.py),
the synthetic engine's protocol that serves its surface (the synthetic engine keeps its own
list, loadgen/synthetic/protocols, and shares no code with the client: a test holds the two
together), and what it offers. Its capabilities are the adapter class's own attributes
(``capabilities``): token ids (``accepts_text`` False), per-request SD numbers
(``per_request_sd_support``), prefix-cache reset (``supports_cache_salt``, ``flush_path``).
Every list of engines (CLI choices, launchable engines) derives from it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loadgen.engines.base import EngineAdapter
from loadgen.engines.sampling import Sampling

if TYPE_CHECKING:
    from loadgen.config import RunConfig


@dataclass(frozen=True, slots=True)
class EngineEntry:
    name: str
    adapter: str  # "module:Class"
    launchable: bool  # loadgen serve / --serve starts it
    synthetic_protocol: str  # the synthetic engine's protocol serving this surface
    what: str

    def adapter_class(self) -> type[EngineAdapter]:
        module, cls = self.adapter.split(":")
        return getattr(importlib.import_module(module), cls)

    def capabilities(self) -> dict[str, Any]:
        cls = self.adapter_class()
        reset = ("salt" if cls.supports_cache_salt else
                 "flush" if cls.flush_path else "none")
        return {"token_ids": not cls.accepts_text or self.name == "openai",
                "text": cls.accepts_text, "per_request_sd": cls.per_request_sd_support,
                "prefix_cache_reset": reset}


REGISTRY: dict[str, EngineEntry] = {e.name: e for e in (
    EngineEntry("vllm", "loadgen.engines.vllm:VllmAdapter", True, "vllm",
                "/v1/completions with token ids"),
    EngineEntry("sglang", "loadgen.engines.sglang:SglangAdapter", True, "sglang",
                "/generate with input_ids"),
    EngineEntry("trtllm", "loadgen.engines.trtllm:TrtllmAdapter", True, "trtllm",
                "/v1/completions, iteration stats polled"),
    EngineEntry("llamacpp", "loadgen.engines.llamacpp:LlamacppAdapter", True, "llamacpp",
                "/completion"),
    EngineEntry("openai", "loadgen.engines.openai:OpenAIAdapter", False, "vllm",
                "an OpenAI-compatible vendor endpoint: token ids or text, completions or chat"),
)}
ENGINES = tuple(REGISTRY)
LAUNCHABLE_ENGINES = tuple(n for n, e in REGISTRY.items() if e.launchable)


def make_adapter(name: str, model: str | None = None, keep_token_ids: bool = False,
                 sampling: Sampling | None = None, **options: object) -> EngineAdapter:
    cls = adapter_class(name)
    return cls(model=model, keep_token_ids=keep_token_ids, sampling=sampling, **options)


def adapter_for(cfg: RunConfig) -> EngineAdapter:
    """The one place a run's adapter is built from its configuration: engine, model, sampling,
    the options of the engine's surface. Every worker and the coordinator call this."""
    s, ep = cfg.sampling, cfg.endpoint
    sampling = Sampling(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                        seed_per_request=s.seed_per_request, run_seed=cfg.load.seed)
    options: dict[str, object] = {"mode": ep.openai_mode} if ep.engine == "openai" else {}
    return make_adapter(ep.engine, model=ep.model, keep_token_ids=cfg.measurement.keep_token_ids,
                        sampling=sampling, **options)


def adapter_class(name: str) -> type[EngineAdapter]:
    entry = REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown engine {name!r} (choose from {', '.join(ENGINES)})")
    return entry.adapter_class()
