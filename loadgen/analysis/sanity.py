"""Sanity bounds: when a result should not be believed, and why (docs/METRICS.md, "Sanity").

Two kinds of check, each with its threshold defined here and in METRICS.md:

- **Host causes** of one run (``host_causes``): whether the client, other processes, the
  hypervisor (steal) or a saturated host (engine starved) disturbed the window.
- **Suspect comparisons** (``comparison_suspects``): an SD configuration against its baseline
  at one dataset and load, over one or more repetitions. Each reason is one sentence; a result
  with reasons is *suspect*.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from loadgen.results.summary import ClientStats, HostStats, Summary

# A Python event loop runs on one core: at this share of a core the client is the bottleneck.
CLIENT_BUSY_CORES = 0.8
# Other processes using this much of a core (mean over the window) disturb the run.
OTHERS_CORES = 0.25
# The hypervisor taking this much of a core (steal) disturbs the run.
STEAL_CORES = 0.10
# Host busy at this share of all its cores: the engine could not get more CPU (starved),
# provided someone other than the engine took at least OTHERS_CORES of it.
SATURATED_SHARE = 0.90
# Per-user speedup may exceed the AL by this much before it is impossible (timing noise).
AL_TOLERANCE = 0.10
# Halves whose "others" differ by this many cores ran under different contention.
CONTENTION_DIFF_CORES = 0.25
# Repetitions whose output tokens/s spread (sample std / mean) exceeds this are unstable.
SPREAD_CV = 0.10
# TTFT compared between runs whose prefix-cache hit rates differ by more than this.
PREFIX_HIT_DIFF = 0.10


def host_causes(host: HostStats | None, client: ClientStats | None) -> list[tuple[str, str]]:
    """(cause, sentence) pairs for one run's window; causes are ``client``, ``engine_starved``,
    ``others``, ``steal``. Empty on a quiet window or without a host monitor."""
    if host is None or host.busy_cores is None:
        return []
    out: list[tuple[str, str]] = []
    lag = client.loop_lag_ms.p99 if client is not None else None
    procs = max(1, host.client_processes)
    if (host.client_cores or 0.0) / procs >= CLIENT_BUSY_CORES:
        where = f" in each of its {procs} processes" if procs > 1 else ""
        out.append(("client", f"the client used {(host.client_cores or 0.0) / procs:.2f} of a "
                              f"core{where} (limit {CLIENT_BUSY_CORES}): it was overloaded; "
                              f"lower the load per process"
                              + (f" (event-loop lag p99 {lag:.1f} ms)" if lag else "")))
    others = host.others_cores or 0.0
    if others >= OTHERS_CORES:
        out.append(("others", f"other processes took {others * 100:.0f}% of a core during "
                              f"the window (peak {(host.others_cores_peak or others) * 100:.0f}%"
                              f"; host busy {host.busy_cores:.2f} of {host.cpus} cores)"))
    if (host.steal_cores or 0.0) >= STEAL_CORES:
        out.append(("steal", f"the hypervisor took {host.steal_cores * 100:.0f}% of a core "
                             f"(steal time)"))
    contended = others + (host.client_cores or 0.0) + (host.steal_cores or 0.0)
    if (host.busy_cores + (host.steal_cores or 0.0) >= SATURATED_SHARE * host.cpus
            and contended >= OTHERS_CORES):
        eng = (f"the engine got {host.engine_cores:.2f} cores"
               if host.engine_cores is not None else "the engine's share is unknown")
        out.append(("engine_starved", f"the host was saturated ({host.busy_cores:.2f} of "
                                      f"{host.cpus} cores busy) and {eng}: engine starved"))
    return out


def client_lag_sentence(host: HostStats | None, client: ClientStats,
                        causes: Sequence[str]) -> str | None:
    """The lag warning, only when the client's own CPU explains it; otherwise the lag is
    attributed to what the host monitor saw."""
    thr = client.lag_threshold_ms
    if thr is None or (client.loop_lag_ms.p99 or 0.0) <= thr:
        return None
    lag = f"client event-loop lag p99 {client.loop_lag_ms.p99:.2f} ms"
    if host is None or host.client_cores is None:
        return (f"{lag} is above {client.lag_threshold_ms} ms: timings may include client "
                f"delay (no host monitor to tell the cause)")
    if "client" in causes:
        return None  # host_causes already says the client was overloaded
    blamed = [c for c in causes if c != "client"]
    why = (", ".join(blamed) if blamed else "none found: a short stall")
    return (f"{lag} is above {client.lag_threshold_ms} ms while the client used only "
            f"{host.client_cores:.2f} of a core: not the client's own load (host causes: {why})")


def _others(s: Summary) -> float | None:
    return s.host.others_cores if s.host is not None else None


def _hit_rate(s: Summary) -> float | None:
    return s.prefix_cache.hit_rate if s.prefix_cache is not None else None


def comparison_suspects(sd: Sequence[Summary], base: Sequence[Summary], *,
                        per_user_speedup: float | None, acceptance_length: float | None,
                        compares_ttft: bool = True,
                        names: tuple[str, str] = ("SD", "baseline")) -> list[str]:
    """Why a comparison of SD runs ``sd`` with baseline runs ``base`` (one per repetition) is
    suspect; [] when none of the bounds is crossed."""
    reasons: list[str] = []
    if (per_user_speedup is not None and acceptance_length
            and per_user_speedup > acceptance_length * (1 + AL_TOLERANCE)):
        reasons.append(f"per-user speedup {per_user_speedup:.2f}x exceeds the SD runs' AL "
                       f"{acceptance_length:.2f} (+{AL_TOLERANCE:.0%}): impossible for one "
                       f"stream, so the halves ran under different conditions")
    a = [v for s in sd if (v := _others(s)) is not None]
    b = [v for s in base if (v := _others(s)) is not None]
    if a and b and abs(float(np.mean(a)) - float(np.mean(b))) >= CONTENTION_DIFF_CORES:
        reasons.append(f"different host contention: other processes took "
                       f"{np.mean(a) * 100:.0f}% of a core in the {names[0]} runs and "
                       f"{np.mean(b) * 100:.0f}% in the {names[1]} runs")
    disturbed = [s for s in [*sd, *base] if s.host is not None and s.host.causes]
    if disturbed:
        kinds = sorted({c for s in disturbed for c in s.host.causes})  # type: ignore[union-attr]
        reasons.append(f"{len(disturbed)} of {len(sd) + len(base)} runs had a disturbed "
                       f"window ({', '.join(kinds)}; see each run's warnings)")
    for name, runs in ((names[0], sd), (names[1], base)):
        tps = [s.throughput.output_tokens_per_s for s in runs
               if s.throughput.output_tokens_per_s]
        if len(tps) >= 2:
            cv = float(np.std(tps, ddof=1) / np.mean(tps))
            if cv > SPREAD_CV:
                reasons.append(f"the {name} repetitions' output tokens/s spread {cv:.0%} "
                               f"(above {SPREAD_CV:.0%}): the conditions were not stable")
    if compares_ttft:
        ha = [v for s in sd if (v := _hit_rate(s)) is not None]
        hb = [v for s in base if (v := _hit_rate(s)) is not None]
        if ha and hb and abs(float(np.mean(ha)) - float(np.mean(hb))) > PREFIX_HIT_DIFF:
            reasons.append(f"TTFT compared at different prefix-cache hit rates "
                           f"({np.mean(ha):.0%} {names[0]} vs {np.mean(hb):.0%} {names[1]})")
    return reasons
