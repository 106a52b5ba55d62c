"""loadgen: a benchmark harness for speculative decoding on live LLM servers."""

__version__ = "0.1.0"
