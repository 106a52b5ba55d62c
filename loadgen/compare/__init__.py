"""``loadgen compare A B``: two runs side by side, B − A with bootstrap confidence intervals.

docs/COMPARE.md defines every statistic, the resampling methods and what "significant" means.
In short:

- Per-request statistics (means, percentiles, per-request AL) are recomputed from each run's
  ``requests.jsonl`` (ok, measured requests, as in ``loadgen/analysis/metrics.py``) and bootstrapped
  by resampling requests with replacement. A resample is a vector of counts (how many times each
  request was drawn), so every statistic of one resample is a weighted statistic of the original
  values: means are matrix products, percentiles are exact weighted order statistics (numpy's linear
  interpolation on the resampled values), the pooled per-token ITL percentiles use the per-request
  histograms of ITL on a fine grid of the pooled distribution's quantiles.
- Window throughput (output tokens/s, requests/s) is not a per-request quantity: the window is
  cut into K equal time blocks at least one median request long, and blocks are resampled with
  replacement (a non-overlapping block bootstrap of the token arrival process).
- A and B are resampled independently (different streams of one seed). The CI of B − A is the
  percentile interval of the replicate differences; a difference is significant when it excludes
  0. Counter-based numbers (the server's AL over the window) are one aggregate each: compared,
  never given a CI.

Modules, one job each: ``load`` (reading a run directory), ``resample`` (bootstrap primitives),
``estimates`` (every statistic of one run, with replicates), ``comparability`` (whether two runs
measure the same thing), ``core`` (the comparison itself), ``render`` (table, Markdown, JSON).
"""

from loadgen.compare.comparability import LOAD_KEYS, comparability
from loadgen.compare.core import (
    DEFAULT_CONFIDENCE,
    DEFAULT_MIN_REQUESTS,
    DEFAULT_RESAMPLES,
    Spec,
    compare_dirs,
    compare_runs,
)
from loadgen.compare.estimates import Estimate, run_estimates, throughput_estimates
from loadgen.compare.load import CompareError, RunData, load_run
from loadgen.compare.render import fmt, fmt_ci, print_result, table_rows, to_json, to_markdown
from loadgen.compare.resample import PooledQuantiles, resample_counts, weighted_quantiles

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIN_REQUESTS",
    "DEFAULT_RESAMPLES",
    "LOAD_KEYS",
    "CompareError",
    "Estimate",
    "PooledQuantiles",
    "RunData",
    "Spec",
    "comparability",
    "compare_dirs",
    "compare_runs",
    "fmt",
    "fmt_ci",
    "load_run",
    "print_result",
    "resample_counts",
    "run_estimates",
    "table_rows",
    "throughput_estimates",
    "to_json",
    "to_markdown",
    "weighted_quantiles",
]
