#!/usr/bin/env sh
# Start sglang with speculative decoding through loadgen's launcher (see servers/README.md).
# Example: servers/sglang.sh --preset ngram --print-command
exec loadgen serve sglang "$@"
