"""The synthetic speculative-decoding engine: loadgen's ground truth (docs/SYNTHETIC.md)."""
