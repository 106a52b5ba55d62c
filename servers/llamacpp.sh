#!/usr/bin/env sh
# Start llamacpp with speculative decoding through loadgen's launcher (see servers/README.md).
# Example: servers/llamacpp.sh --preset ngram --print-command
exec loadgen serve llamacpp "$@"
