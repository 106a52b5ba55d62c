#!/usr/bin/env sh
# Start vllm with speculative decoding through loadgen's launcher (see servers/README.md).
# Example: servers/vllm.sh --preset ngram --print-command
exec loadgen serve vllm "$@"
