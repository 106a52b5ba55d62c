"""The open files a run needs: one socket per request in flight."""

from __future__ import annotations

import resource

from loadgen.config import RunConfig

FD_MARGIN = 64  # files the process needs besides one socket per request in flight


def ensure_open_files(cfg: RunConfig) -> str | None:
    """One socket per request in flight: raise the soft open-file limit up to the hard one when
    the load needs more, or refuse up front (instead of failing requests with EMFILE). An open
    loop without --max-concurrency is not refused: a warning is returned instead."""
    in_flight = cfg.load.concurrency or cfg.load.max_concurrency
    if in_flight is None:  # an open loop without a cap: as many as could be in flight at once
        n = cfg.load.num_requests or float("inf")
        in_flight = int(min(n, (cfg.load.request_rate or 1.0) * cfg.endpoint.timeout_s))
    need = in_flight + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or need <= soft:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(max(need, soft), hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if need > soft and (cfg.load.concurrency or cfg.load.max_concurrency):
        flag = "--concurrency" if cfg.load.concurrency else "--max-concurrency"
        raise ValueError(f"{flag} {in_flight} needs about {need} open files but the limit is "
                         f"{soft} (hard limit {hard}); raise it (ulimit -n) or lower the load")
    if need > soft:
        return (f"up to {in_flight} requests may be in flight but the open-file limit is {soft}: "
                f"requests beyond it fail (give --max-concurrency)")
    return None
