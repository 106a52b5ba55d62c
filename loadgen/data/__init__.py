"""Dataset building: text prompt sets, the qualitative and throughput builders, the random-token
control, tokenization into the pre-tokenized prompt format (loadgen.data.prompts) and the
SPEED-Bench import. See docs/DATASETS.md.

Nothing heavy is imported here: torch, transformers and sentence-transformers are imported inside
the functions that need them.
"""
