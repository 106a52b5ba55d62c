"""Whether a run measures one window or one per category (``--category-windows``; the default
when the engine gives no per-request SD numbers and the server has SD counters).

Category windows run the categories one after another, each with its own warm-up and window,
with a counter scrape at each edge taken once the window's requests have drained, so each
category's counter delta covers exactly its own requests (docs/METRICS.md). vLLM sends
per-request SD numbers only with a server flag, so for it the first warm-up request that
succeeds tells.
"""

from __future__ import annotations

from loadgen.config import RunConfig
from loadgen.engines.base import EngineAdapter

SD_COUNTERS = ("drafts", "verify_calls")  # an engine registers them only with SD on


def windows_possible(categories: int, run_start: dict[str, float] | None) -> bool:
    """Several categories, and SD counters on the server at run start."""
    return categories > 1 and any(k in (run_start or {}) for k in SD_COUNTERS)


def needs_first_request(cfg: RunConfig, adapter: EngineAdapter, categories: int,
                        run_start: dict[str, float] | None) -> bool:
    """Whether the first warm-up requests go one at a time until one tells whether the engine
    sends per-request SD numbers."""
    return (cfg.measurement.category_windows is None
            and adapter.per_request_sd_support == "optional"
            and windows_possible(categories, run_start))


def category_windows(cfg: RunConfig, adapter: EngineAdapter, categories: int,
                     run_start: dict[str, float] | None, first_ok_has_sd: bool | None) -> bool:
    """The decision: as asked, else on when the engine can give no per-request SD numbers, or
    the first successful request had none."""
    if cfg.measurement.category_windows is not None:
        return cfg.measurement.category_windows
    support = adapter.per_request_sd_support
    if support == "always" or not windows_possible(categories, run_start):
        return False
    if support == "optional":
        # --warmup-requests 0, or no warm-up request succeeded: no way to tell
        return first_ok_has_sd is False
    return True
