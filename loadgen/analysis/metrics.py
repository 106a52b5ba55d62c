"""Every number in summary.json, computed from per-request records (docs/METRICS.md defines each).

Pure functions over the dicts in requests.jsonl, so a summary can be recomputed from a run
directory at any time and tests can check each formula against known truth.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from loadgen.analysis.sanity import client_lag_sentence, host_causes
from loadgen.results.summary import (
    AcceptanceSummary,
    CategoryStats,
    ChunkRatio,
    ClientStats,
    ConnectionStats,
    CounterDeltas,
    HostStats,
    Latency,
    PerRequestAL,
    RequestCounts,
    Stats,
    Summary,
    Throughput,
    Window,
)

QUANTILES = {"p50": 50, "p90": 90, "p99": 99}


def stats(values: Sequence[float] | np.ndarray) -> Stats:
    """mean, p50, p90, p99 and max; percentiles by linear interpolation between order
    statistics (numpy's default). None when there are no values."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return Stats()
    p50, p90, p99 = (float(v) for v in np.percentile(arr, list(QUANTILES.values())))
    return Stats(mean=float(arr.mean()), p50=p50, p90=p90, p99=p99, max=float(arr.max()),
                 count=int(arr.size))


def reference_ns(r: dict[str, Any]) -> int:
    """Latency counts from the scheduled send time (equal to the send time in closed loop)."""
    return r["scheduled_ns"] or r["send_ns"]


def ttft_ms(r: dict[str, Any]) -> float:
    return (r["first_token_ns"] - reference_ns(r)) / 1e6


def e2e_ms(r: dict[str, Any]) -> float:
    return (r["end_ns"] - reference_ns(r)) / 1e6


def tpot_ms(r: dict[str, Any]) -> float | None:
    n = r["output_tokens"]
    if n < 2:
        return None
    return (e2e_ms(r) - ttft_ms(r)) / (n - 1)


def per_user_tokens_per_s(r: dict[str, Any]) -> float | None:
    """Decode speed one user sees: (tokens - 1) / (last token arrival - first token arrival)."""
    arr = r["arrivals_ns"]
    if r["output_tokens"] < 2 or len(arr) < 2 or arr[-1] <= arr[0]:
        return None
    return (r["output_tokens"] - r["event_tokens"][0]) / ((arr[-1] - arr[0]) / 1e9)


def itl_values_ms(r: dict[str, Any]) -> tuple[list[float], list[float]]:
    """(per-token ITL, inter-chunk latency). An event that brings n tokens after a gap g adds n
    values g/n to the per-token ITL (its tokens arrived together, so each cost g/n of waiting)
    and one value g to the inter-chunk latency."""
    arr = r["arrivals_ns"]
    ntok = r["event_tokens"]
    per_token: list[float] = []
    per_chunk: list[float] = []
    for i in range(1, len(arr)):
        gap = (arr[i] - arr[i - 1]) / 1e6
        per_chunk.append(gap)
        n = ntok[i]
        per_token.extend([gap / n] * n)
    return per_token, per_chunk


def tokens_in_window(r: dict[str, Any], start_ns: int, end_ns: int) -> tuple[int, int]:
    """(tokens, events) of a request that arrived within [start_ns, end_ns]."""
    toks = events = 0
    for t, n in zip(r["arrivals_ns"], r["event_tokens"], strict=True):
        if start_ns <= t <= end_ns:
            toks += n
            events += 1
    return toks, events


def per_request_al(records: Iterable[dict[str, Any]]) -> PerRequestAL:
    """Request-weighted mean of per-request AL, and token-weighted (total tokens / total target
    steps, where a request's steps are tokens / AL)."""
    als, toks, steps = [], 0.0, 0.0
    for r in records:
        al = r.get("acceptance_length")
        if al:
            als.append(al)
            toks += r["output_tokens"]
            steps += r["output_tokens"] / al
    if not als:
        return PerRequestAL()
    return PerRequestAL(request_weighted=float(np.mean(als)), token_weighted=toks / steps,
                        requests=len(als))


def connection_stats(records: Sequence[dict[str, Any]]) -> ConnectionStats:
    """Connections opened (a record with ``connect_ns`` > 0 opened one), per request, and
    connect durations, over every record that has the field (warm-up included: connections
    opened in warm-up serve the measured requests)."""
    known = [r["connect_ns"] for r in records if "connect_ns" in r]
    if not known:
        return ConnectionStats()
    opened = [ns / 1e6 for ns in known if ns > 0]
    return ConnectionStats(opened=len(opened), per_request=len(opened) / len(known),
                           connect_ms=stats(opened))


def window_totals(records: list[dict[str, Any]], window: dict[str, Any]
                  ) -> tuple[int, int, int, float]:
    """(tokens, events, ok requests ended) within one window, and its duration in s. A
    category window counts only its category's records (the others ran outside it)."""
    start_ns, end_ns = window["start_ns"], window["end_ns"]
    cat = window.get("category")
    toks = events = done = 0
    for r in records:
        if cat is not None and r["category"] != cat:
            continue
        t, e = tokens_in_window(r, start_ns, end_ns)
        toks += t
        events += e
        if r["status"] == "ok" and not r["warmup"] and start_ns <= r["end_ns"] <= end_ns:
            done += 1
    return toks, events, done, max((end_ns - start_ns) / 1e9, 1e-9)


def summarize(records: list[dict[str, Any]], window: dict[str, int], *,
              acceptance: AcceptanceSummary | None, counter_delta: dict[str, float] | None,
              run_counter_delta: dict[str, float] | None, rate_mode: bool,
              client: ClientStats | None = None,
              windows: list[dict[str, Any]] | None = None,
              category_acceptance: dict[str, AcceptanceSummary] | None = None,
              window_counters: dict[str, dict[str, float]] | None = None,
              sampling: dict[str, Any] | None = None,
              host: HostStats | None = None) -> Summary:
    """Every number of summary.json from the run's records (docs/METRICS.md). ``windows``:
    the category windows of a --category-windows run (throughput sums over them), with each
    category's acceptance from its own counter delta in ``category_acceptance``."""
    measured = [r for r in records if not r["warmup"]]
    ok = [r for r in measured if r["status"] == "ok"]
    counts = RequestCounts(total=len(measured), ok=len(ok),
                           error=sum(r["status"] == "error" for r in measured),
                           cancelled=sum(r["status"] == "cancelled" for r in measured),
                           warmup=len(records) - len(measured),
                           retries=sum(r.get("retries", 0) for r in measured),
                           retried=sum(1 for r in measured if r.get("retries")),
                           rate_limited=sum(1 for r in measured
                                            if r.get("http_status") == 429))
    start_ns, end_ns = window["start_ns"], window["end_ns"]
    per_window = {w.get("category"): window_totals(records, w) for w in (windows or [window])}
    win_tokens = sum(t for t, _, _, _ in per_window.values())
    win_events = sum(e for _, e, _, _ in per_window.values())
    done_in_window = sum(d for _, _, d, _ in per_window.values())
    duration = sum(s for _, _, _, s in per_window.values())

    itl: list[float] = []
    ichunk: list[float] = []
    for r in ok:
        a, b = itl_values_ms(r)
        itl.extend(a)
        ichunk.extend(b)
    tpots = [v for r in ok if (v := tpot_ms(r)) is not None]
    users = [v for r in ok if (v := per_user_tokens_per_s(r)) is not None]
    latency = Latency(ttft=stats([ttft_ms(r) for r in ok]), tpot=stats(tpots), itl=stats(itl),
                      inter_chunk=stats(ichunk), e2e=stats([e2e_ms(r) for r in ok]))
    if rate_mode:
        latency.schedule_lag = stats([(r["send_ns"] - r["scheduled_ns"]) / 1e6
                                      for r in measured if r["send_ns"]])
    acc = acceptance if acceptance is not None else AcceptanceSummary()
    acc.client_tokens_per_chunk = ChunkRatio(
        value=win_tokens / win_events if win_events else None,
        note="tokens per stream event seen by this client in the window; a cross-check, "
             "not an acceptance length (engines may merge or split steps into events)")
    acc.per_request = per_request_al(ok)

    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by_cat[r["category"]].append(r)
    categories = {}
    for cat in sorted(by_cat):
        rs = by_cat[cat]
        al = per_request_al(rs)
        cat_tpot = [v for r in rs if (v := tpot_ms(r)) is not None]
        cat_users = [v for r in rs if (v := per_user_tokens_per_s(r)) is not None]
        cs = CategoryStats(
            requests=len(rs),
            acceptance_length=al.token_weighted,
            acceptance_length_request_weighted=al.request_weighted,
            acceptance_source="per_request" if al.token_weighted is not None else None,
            output_tokens=sum(r["output_tokens"] for r in rs),
            ttft_ms_p50=float(np.percentile([ttft_ms(r) for r in rs], 50)),
            tpot_ms_p50=float(np.percentile(cat_tpot, 50)) if cat_tpot else None,
            per_user_tokens_per_s_mean=float(np.mean(cat_users)) if cat_users else None,
        )
        cacc = (category_acceptance or {}).get(cat)
        if cacc is not None:
            cs.window_acceptance_length = cacc.acceptance_length
            cs.acceptance_rate = cacc.acceptance_rate
            cs.per_position_rate = cacc.per_position_rate
            if cs.acceptance_length is None:
                cs.acceptance_length = cacc.acceptance_length
                cs.acceptance_source = f"{cacc.source} (category window)"
        if window_counters and cat in window_counters:
            cs.window_counters = window_counters[cat]
        if windows and cat in per_window:
            toks, _, _, secs = per_window[cat]
            cs.window_s = secs
            cs.output_tokens_per_s = toks / secs
        categories[cat] = cs

    warnings: list[str] = []
    resent = sum(1 for r in records if r.get("resent"))
    if resent:
        warnings.append(f"{resent} request(s) were sent again on a new connection: the server "
                        f"closed the kept-alive connection they were written to before "
                        f"answering (it may close every connection: nothing was reused after; "
                        f"or it dropped them: a server fault)")
    mismatched = [r for r in measured if r.get("usage_prompt_tokens") is not None
                  and r["usage_prompt_tokens"] != r["input_tokens"]]
    if mismatched:
        warnings.append(f"{len(mismatched)} request(s): the server's prompt_tokens differ from "
                        f"the ids sent (e.g. {mismatched[0]['usage_prompt_tokens']} vs "
                        f"{mismatched[0]['input_tokens']}): the engine did not see the same input")
    if run_counter_delta and "generation_tokens" in run_counter_delta:
        server = run_counter_delta["generation_tokens"]
        mine = sum(r["output_tokens"] for r in records)
        # cancelled/errored requests may have generated tokens this client never received
        slack = sum(r["expected_tokens"] - r["output_tokens"] for r in records
                    if r["status"] != "ok") + 0.01 * mine + 16
        if server > mine + slack:
            warnings.append(f"the server generated {server:.0f} tokens during the run but this "
                            f"client received {mine}: other traffic shares the server, so "
                            f"server-wide counters (acceptance) include it")
    if window.get("includes_drain"):
        warnings.append("the window includes the drain (too few requests for a steady state: "
                        "all were sent at once); throughput is a lower bound")
    found = host_causes(host, client)
    if host is not None:
        host.causes = [c for c, _ in found]
    warnings.extend(sentence for _, sentence in found)
    if client:
        # the lag is the client's fault only when its own CPU explains it (analysis/sanity.py)
        client.overloaded = client.overloaded and (
            host is None or host.client_cores is None or "client" in host.causes)
        lag_sentence = client_lag_sentence(host, client, host.causes if host else [])
        if lag_sentence:
            warnings.append(lag_sentence)
    if any(r.get("reasoning_tokens") is not None for r in ok):
        rt = sum(r.get("reasoning_tokens") or 0 for r in ok)
        counts.reasoning_tokens = rt
        counts.reasoning_share = rt / max(1, sum(r["output_tokens"] for r in ok))
    throughput = Throughput(output_tokens_per_s=win_tokens / duration,
                            requests_per_s=done_in_window / duration,
                            window_output_tokens=win_tokens)
    neutral = [r for r in ok if r.get("neutral_output_tokens") is not None]
    if neutral:
        # the engine's tokens/s rescaled by how many neutral-encoding tokens its text holds
        ratio = (sum(r["neutral_output_tokens"] for r in neutral)
                 / max(1, sum(r["output_tokens"] for r in neutral)))
        throughput.neutral_tokens_per_engine_token = ratio
        throughput.neutral_output_tokens_per_s = ratio * win_tokens / duration
    return Summary(
        requests=counts,
        window=Window(start_s=0.0, end_s=duration, duration_s=duration, start_ns=start_ns,
                      end_ns=end_ns, includes_drain=bool(window.get("includes_drain")),
                      category_windows=len(windows) if windows else None),
        throughput=throughput,
        latency_ms=latency,
        per_user_tokens_per_s=stats(users),
        acceptance=acc,
        server_counters=CounterDeltas(window_delta=counter_delta, run_delta=run_counter_delta),
        categories=categories,
        client=client or ClientStats(),
        connections=connection_stats(records),
        warnings=warnings,
        sampling=sampling,
        host=host,
    )
