"""Server telemetry over the measurement window: GPU power, energy per output token, GPU
utilization, node CPU (docs/METRICS.md, "Server telemetry").

Input: every target's samples (loadgen/client/telemetry.py) and the window's edges, i.e. the
names of the opening and closing scrapes of each measured window (one window, or one per
category). Only the samples from an opening edge to its closing edge count.

- A GPU's **mean power** is its energy counter's increase over the windows divided by the time
  it covers (``power_source`` ``energy_counter``; a segment between two samples in which the
  counter went backwards is left out and counted in ``energy_resets``); without an energy
  counter, the time-weighted (trapezoid) mean of its power samples (``power_samples``).
- **Peak power**: the highest power sample (the exporter's reading, itself an average over the
  GPU's short averaging period); a higher peak between two samples is not seen.
- **Energy per output token** = total mean power (sum over the GPUs) / output tokens per second
  of the window, i.e. the window's energy (mean power x its duration) / its output tokens.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

from loadgen.results.summary import Summary
from loadgen.results.telemetry import (
    CPU,
    ENERGY,
    POWER,
    UTIL,
    GpuTelemetry,
    NodeCpuTelemetry,
    TargetSamples,
    TelemetrySample,
    TelemetryStats,
)

IDLE_MODES = ("idle", "iowait")  # node_cpu_seconds_total modes that are not busy


def _segments(target: TargetSamples, edges: Sequence[tuple[str, str]]
              ) -> list[list[TelemetrySample]]:
    """Each window's samples, from its opening edge to its closing edge (a window whose edge
    this target did not answer is left out)."""
    by_name = {s.name: s for s in target.samples}
    out = []
    for a, b in edges:
        sa, sb = by_name.get(a), by_name.get(b)
        if sa is None or sb is None:
            continue
        out.append(sorted((s for s in target.samples if sa.t_ns <= s.t_ns <= sb.t_ns),
                          key=lambda s: s.t_ns))
    return out


def _trapezoid(seg: list[TelemetrySample], key: str, dev: str) -> tuple[float, float]:
    """(integral over time, seconds covered) of a gauge by the trapezoid rule (a sample the
    source read at the same time as the previous one adds nothing)."""
    area = secs = 0.0
    for x, y in itertools.pairwise(seg):
        if key in x.values and key in y.values:
            dt = (y.at(dev) - x.at(dev)) / 1e9
            area += (x.values[key] + y.values[key]) / 2 * dt
            secs += dt
    return area, secs


def _gpu(target: TargetSamples, dev: str, segs: list[list[TelemetrySample]],
         span_s: float, notes: list[str]) -> GpuTelemetry:
    g = GpuTelemetry(target=target.url, device=dev,
                     uuid=target.gpu_info.get(dev, {}).get("UUID"),
                     model=target.gpu_info.get(dev, {}).get("modelName"))
    pk, ek, uk = f"{POWER}|{dev}", f"{ENERGY}|{dev}", f"{UTIL}|{dev}"
    energy_j = covered = p_area = p_secs = u_area = u_secs = 0.0
    powers: list[float] = []
    utils: list[float] = []
    for seg in segs:
        for x, y in itertools.pairwise(seg):
            if ek in x.values and ek in y.values:
                d = y.values[ek] - x.values[ek]
                dt = (y.at(dev) - x.at(dev)) / 1e9
                if dt <= 0:  # the source's same reading again (Prometheus between scrapes)
                    continue
                if d == 0:  # a GPU always draws power: the exporter served an old reading
                    g.repeated_samples += 1
                if d < 0:
                    g.energy_resets += 1
                    continue
                energy_j += d / 1e3  # mJ
                covered += dt
        a, s = _trapezoid(seg, pk, dev)
        p_area, p_secs = p_area + a, p_secs + s
        a, s = _trapezoid(seg, uk, dev)
        u_area, u_secs = u_area + a, u_secs + s
        powers += [x.values[pk] for x in seg if pk in x.values]
        utils += [x.values[uk] for x in seg if uk in x.values]
        g.samples += len(seg)
    if p_secs > 0:
        g.sampled_mean_power_w = p_area / p_secs
    if powers:
        g.peak_power_w = max(powers)
    if covered > 0:
        g.mean_power_w, g.power_source = energy_j / covered, "energy_counter"
    elif g.sampled_mean_power_w is not None:
        g.mean_power_w, g.power_source = g.sampled_mean_power_w, "power_samples"
    if g.mean_power_w is not None:
        g.energy_j = g.mean_power_w * span_s
    if g.repeated_samples:
        notes.append(
            f"{target.url} {dev}: {g.repeated_samples} of {g.samples} samples repeated the "
            f"previous energy reading: the exporter collects less often than every "
            f"--telemetry-interval (dcgm-exporter -c, 30000 ms by default), so its values at the "
            f"window's edges may be that old; run it with -c 1000 or less")
    if u_secs > 0:
        g.utilization_mean_pct = u_area / u_secs
    if utils:
        g.utilization_peak_pct = max(utils)
    return g


def _nodes(target: TargetSamples, segs: list[list[TelemetrySample]],
           span_s: float) -> list[NodeCpuTelemetry]:
    busy: dict[str, float] = defaultdict(float)
    cpus: dict[str, set[str]] = defaultdict(set)
    for seg in segs:
        first, last = seg[0].values, seg[-1].values
        for key, v in last.items():
            if not key.startswith(CPU + "|") or key not in first:
                continue
            node, cpu, mode = key.split("|", 1)[1].rsplit("|", 2)
            cpus[node].add(cpu)
            d = v - first[key]
            if mode not in IDLE_MODES and d > 0:
                busy[node] += d
    return [NodeCpuTelemetry(target=target.url, node=node, cpus=len(c),
                             busy_cores=busy[node] / span_s if span_s else None,
                             utilization=busy[node] / span_s / len(c) if span_s else None)
            for node, c in sorted(cpus.items())]


def telemetry_summary(targets: Sequence[TargetSamples], edges: Sequence[tuple[str, str]],
                      window_s: float, output_tokens_per_s: float | None,
                      interval_s: float | None) -> TelemetryStats:
    """The ``telemetry`` section of summary.json over the windows named by ``edges``."""
    st = TelemetryStats(targets=[t.url for t in targets], interval_s=interval_s,
                        unanswered={t.url: t.error for t in targets if t.error})
    peaks: list[float] = []
    half_rtts: list[float] = []
    for t in targets:
        segs = _segments(t, edges)
        if not segs:
            if t.error is None:
                st.notes.append(f"{t.url}: no sample at the window's edges")
            continue
        span_s = sum((s[-1].t_ns - s[0].t_ns) / 1e9 for s in segs)
        if st.start_ns is None:
            st.span_s, st.start_ns, st.end_ns = span_s, segs[0][0].t_ns, segs[-1][-1].t_ns
        half_rtts += [x.rtt_ns / 2e9 for s in segs for x in (s[0], s[-1])]
        devs = sorted({k.split("|", 1)[1] for s in segs for x in s for k in x.values
                       if k.startswith((POWER, ENERGY, UTIL))})
        gpus = [_gpu(t, d, segs, span_s, st.notes) for d in devs]
        nodes = _nodes(t, segs, span_s)
        st.gpus += gpus
        st.nodes += nodes
        sums = [sum(v for k, v in x.values.items() if k.startswith(POWER + "|"))
                for s in segs for x in s]
        if gpus and any(f"{POWER}|" in k for s in segs for x in s for k in x.values):
            peaks.append(max(sums))
        if not gpus and not nodes:
            st.notes.append(f"{t.url}: none of the DCGM or node exporter series it reads")
    if half_rtts:
        st.edge_uncertainty_s = max(half_rtts)
    with_power = [g for g in st.gpus if g.mean_power_w is not None]
    if with_power:
        st.power_w = sum(g.mean_power_w for g in with_power)  # type: ignore[misc]
        sources = {g.power_source for g in with_power}
        st.energy_source = sources.pop() if len(sources) == 1 else "mixed"
        st.energy_j = st.power_w * window_s
        if output_tokens_per_s:
            st.energy_per_token_j = st.power_w / output_tokens_per_s
    if peaks:
        st.peak_power_w = sum(peaks)
        if len(peaks) > 1:
            st.notes.append("peak power: the sum of each target's peak (their samples are not "
                            "simultaneous): an upper bound")
    utils = [g.utilization_mean_pct for g in st.gpus if g.utilization_mean_pct is not None]
    if utils:
        st.gpu_utilization_pct = sum(utils) / len(utils)
    return st


def window_edges(windows: Sequence[dict], includes_drain: bool) -> list[tuple[str, str]]:
    """The edge scrapes' names of the run's windows: one per category window, else the single
    window's, closing at run_end when the window includes the drain (as the SD counters)."""
    if windows:
        return [(w["start_scrape"], w["end_scrape"]) for w in windows]
    return [("window_start", "run_end" if includes_drain else "window_end")]


def attach_telemetry(summary: Summary, targets: Sequence[TargetSamples],
                     interval_s: float | None, windows: Sequence[dict] = ()) -> None:
    """Set ``summary.telemetry`` from the targets' samples (nothing when no target was given):
    over the same windows as the SD counters, per output token of the summary's window."""
    if not targets:
        return
    edges = window_edges(windows, summary.window.includes_drain)
    summary.telemetry = telemetry_summary(targets, edges, summary.window.duration_s,
                                          summary.throughput.output_tokens_per_s, interval_s)
    summary.warnings.extend(f"telemetry: {n}" for n in summary.telemetry.notes)


def energy_row(sd: Summary, base: Summary) -> dict[str, float | None]:
    """A sweep's SD cell against its baseline cell (analysis/sweeps.py ``speedup_rows``):
    energy per output token of each and their ratio (None where either has no telemetry)."""
    e = sd.telemetry.energy_per_token_j if sd.telemetry else None
    b = base.telemetry.energy_per_token_j if base.telemetry else None
    return {"energy_per_token_j": e, "baseline_energy_per_token_j": b,
            "energy_ratio": e / b if e is not None and b else None}
