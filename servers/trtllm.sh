#!/usr/bin/env sh
# Start trtllm with speculative decoding through loadgen's launcher (see servers/README.md).
# Example: servers/trtllm.sh --preset ngram --print-command
exec loadgen serve trtllm "$@"
