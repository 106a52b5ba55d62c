"""Every number of summary.json, fed one record at a time (docs/METRICS.md defines each).

``SummaryAccumulator`` keeps no record: counts, sums and per-category sums exactly, latency
distributions in ``Quantity`` (exact up to ``EXACT_LIMIT`` values each, then a histogram with a
stated relative error). ``loadgen.analysis.metrics.summarize`` is this accumulator fed a list;
a run's summary is this accumulator fed its record files as a stream.

The window must be known before records are fed (summaries are computed after the run, from the
files). A record may be fed with the window edges on its own worker's clock (``edges``), so
shards from several hosts are measured against the same window.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loadgen.analysis.buffering import buffered_stream_warning, events_per_read
from loadgen.analysis.metrics import e2e_ms, per_user_tokens_per_s, tpot_ms, ttft_ms
from loadgen.analysis.sanity import client_lag_sentence, host_causes
from loadgen.analysis.sendlag import send_lag_warning
from loadgen.analysis.streaming import EXACT_LIMIT, Quantity
from loadgen.engines.base import one_line
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
    Summary,
    Throughput,
    Window,
)


@dataclass(slots=True)
class PerRequestALSum:
    """Per-request AL over records: the request-weighted mean of each record's AL and the
    token-weighted ratio (total tokens / total target steps, a request's steps being its
    tokens / its AL)."""

    als: Quantity = field(default_factory=Quantity)
    toks: float = 0.0
    steps: float = 0.0

    def add(self, r: dict[str, Any]) -> None:
        al = r.get("acceptance_length")
        if al:
            self.als.add(al)
            self.toks += r["output_tokens"]
            self.steps += r["output_tokens"] / al

    def result(self) -> PerRequestAL:
        if not self.als.count:
            return PerRequestAL()
        return PerRequestAL(request_weighted=self.als.mean(), token_weighted=self.toks / self.steps,
                            requests=self.als.count)


@dataclass(slots=True)
class _Category:
    requests: int = 0
    output_tokens: int = 0
    al: PerRequestALSum = field(default_factory=PerRequestALSum)
    ttft: Quantity = field(default_factory=Quantity)
    tpot: Quantity = field(default_factory=Quantity)
    users: Quantity = field(default_factory=Quantity)


class SummaryAccumulator:
    def __init__(self, window: dict[str, Any], rate_mode: bool,
                 exact_limit: int | None = EXACT_LIMIT,
                 windows: list[dict[str, Any]] | None = None) -> None:
        self.window = window
        self.rate_mode = rate_mode
        # category windows (--category-windows): each counts only its category's records
        self.windows = windows
        self._wins = windows or [window]
        self._offset = 0  # the window edges' shift onto the clock of the records fed next
        # per window: [tokens, events, ok measured requests ended inside]
        self._per_window = [[0, 0, 0] for _ in self._wins]
        limit = EXACT_LIMIT if exact_limit is None else exact_limit
        q = lambda: Quantity(limit)  # noqa: E731
        self.ttft, self.tpot, self.itl, self.ichunk, self.e2e = q(), q(), q(), q(), q()
        self.users, self.lag, self.send_delay = q(), q(), q()
        self.counts = RequestCounts()
        self.records = 0
        self.retries = self.retried = self.rate_limited = 0
        self.reasoning_seen = False
        self.reasoning_tokens = self.ok_output_tokens = 0
        self.al = PerRequestALSum()
        self.categories: dict[str, _Category] = {}
        self.mismatched = 0
        self.resent = 0  # records sent again on a new connection (warm-up included)
        self.first_mismatch: tuple[int, int] | None = None
        self.output_tokens = 0  # every record's, warm-up included
        self.slack = 0  # tokens asked for but not received by non-ok records
        self.neutral_tokens = self.neutral_engine_tokens = self.neutral_requests = 0
        self.error_reasons: Counter[str] = Counter()
        self.conn_known = 0  # records with connect_ns (warm-up included)
        self.connect = q()  # connect durations (ms) of the records that opened a connection
        self.bursts = q()  # events per read of ok measured requests (buffering.py)
        # prompt tokens of the records whose first token came inside the window: the prefill
        # the window's prefix-cache counters saw (docs/METRICS.md, "Prefix cache")
        self.window_prompt_tokens = 0

    def edges(self, start_ns: int, end_ns: int) -> None:
        """The window's edges on the clock of the records fed next (default: the window's):
        every window is shifted by the same offset."""
        self._offset = start_ns - self.window["start_ns"]

    def add(self, r: dict[str, Any]) -> None:
        self.records += 1
        status = r["status"]
        if "connect_ns" in r:
            self.conn_known += 1
            if r["connect_ns"] > 0:
                self.connect.add(r["connect_ns"] / 1e6)
        self.output_tokens += r["output_tokens"]
        if r.get("resent"):
            self.resent += 1
        if status != "ok":
            self.slack += r["expected_tokens"] - r["output_tokens"]
            self.error_reasons[one_line(r["error"] or "", 120)] += 1
        first = r.get("first_token_ns")
        if first and (self.window["start_ns"] + self._offset <= first
                      <= self.window["end_ns"] + self._offset):
            self.window_prompt_tokens += r["input_tokens"]
        arr = np.asarray(r["arrivals_ns"], dtype=np.int64)
        ntok = np.asarray(r["event_tokens"], dtype=np.int64)
        counted = (status == "ok" and not r["warmup"])
        for w, tally in zip(self._wins, self._per_window, strict=True):
            cat = w.get("category")
            if cat is not None and r["category"] != cat:
                continue
            start, end = w["start_ns"] + self._offset, w["end_ns"] + self._offset
            if arr.size:
                if arr[0] >= start and arr[-1] <= end:
                    tally[0] += int(ntok.sum())
                    tally[1] += int(arr.size)
                else:
                    mask = (arr >= start) & (arr <= end)
                    tally[0] += int(ntok[mask].sum())
                    tally[1] += int(mask.sum())
            if counted and start <= r["end_ns"] <= end:
                tally[2] += 1
        if r["warmup"]:
            self.counts.warmup += 1
            return
        c = self.counts
        c.total += 1
        if status == "error":
            c.error += 1
        elif status == "cancelled":
            c.cancelled += 1
        self.retries += r.get("retries", 0)
        if r.get("retries"):
            self.retried += 1
        if r.get("http_status") == 429:
            self.rate_limited += 1
        up = r.get("usage_prompt_tokens")
        if up is not None and up != r["input_tokens"]:
            self.mismatched += 1
            if self.first_mismatch is None:
                self.first_mismatch = (up, r["input_tokens"])
        if self.rate_mode and r["send_ns"]:
            self.lag.add((r["send_ns"] - r["scheduled_ns"]) / 1e6)
        if status != "ok":
            return
        c.ok += 1
        burst = events_per_read(r)
        if burst is not None:
            self.bursts.add(burst)
        if r.get("reasoning_tokens") is not None:
            self.reasoning_seen = True
        self.reasoning_tokens += r.get("reasoning_tokens") or 0
        self.ok_output_tokens += r["output_tokens"]
        self._add_ok(r, arr, ntok)

    def _add_ok(self, r: dict[str, Any], arr: np.ndarray, ntok: np.ndarray) -> None:
        if arr.size > 1:
            gaps = np.diff(arr) / 1e6
            self.ichunk.add_many(gaps)
            nt = ntok[1:]
            self.itl.add_many(np.repeat(gaps / nt, nt))
        # the per-request definitions of docs/METRICS.md, one implementation (analysis/metrics.py)
        ttft = ttft_ms(r)
        e2e = e2e_ms(r)
        n = r["output_tokens"]
        tpot = tpot_ms(r)
        user = per_user_tokens_per_s(r)
        self.e2e.add(e2e)
        if "send_delay_ns" in r:
            self.send_delay.add(r["send_delay_ns"] / 1e6)
        cat = self.categories.get(r["category"])
        if cat is None:
            cat = self.categories[r["category"]] = _Category()
        cat.requests += 1
        cat.output_tokens += n
        for agg in (self, cat):  # the run's figures and the category's, from the same values
            agg.ttft.add(ttft)
            if tpot is not None:
                agg.tpot.add(tpot)
            if user is not None:
                agg.users.add(user)
            agg.al.add(r)
        if r.get("neutral_output_tokens") is not None:
            self.neutral_requests += 1
            self.neutral_tokens += r["neutral_output_tokens"]
            self.neutral_engine_tokens += n

    def finish(self, *, acceptance: AcceptanceSummary | None,
               counter_delta: dict[str, float] | None,
               run_counter_delta: dict[str, float] | None,
               client: ClientStats | None = None,
               category_acceptance: dict[str, AcceptanceSummary] | None = None,
               window_counters: dict[str, dict[str, float]] | None = None,
               sampling: dict[str, Any] | None = None,
               host: HostStats | None = None) -> Summary:
        window = self.window
        start_ns, end_ns = window["start_ns"], window["end_ns"]
        per_window = {w.get("category"): (t[0], t[1], t[2],
                                          max((w["end_ns"] - w["start_ns"]) / 1e9, 1e-9))
                      for w, t in zip(self._wins, self._per_window, strict=True)}
        win_tokens = sum(t for t, _, _, _ in per_window.values())
        win_events = sum(e for _, e, _, _ in per_window.values())
        done_in_window = sum(d for _, _, d, _ in per_window.values())
        duration = sum(s for _, _, _, s in per_window.values())
        latency = Latency(ttft=self.ttft.stats(), tpot=self.tpot.stats(), itl=self.itl.stats(),
                          inter_chunk=self.ichunk.stats(), e2e=self.e2e.stats())
        if self.rate_mode:
            latency.schedule_lag = self.lag.stats()
        if self.send_delay.count:
            latency.send_delay = self.send_delay.stats()
        acc = acceptance if acceptance is not None else AcceptanceSummary()
        acc.client_tokens_per_chunk = ChunkRatio(
            value=win_tokens / win_events if win_events else None,
            note="tokens per stream event seen by this client in the window; a cross-check, "
                 "not an acceptance length (engines may merge or split steps into events)")
        acc.per_request = self.al.result()
        categories = {}
        for name in sorted(self.categories):
            cat = self.categories[name]
            al = cat.al.result()
            cs = CategoryStats(
                requests=cat.requests, acceptance_length=al.token_weighted,
                acceptance_length_request_weighted=al.request_weighted,
                acceptance_source="per_request" if al.token_weighted is not None else None,
                output_tokens=cat.output_tokens, ttft_ms_p50=cat.ttft.percentile(50),
                tpot_ms_p50=cat.tpot.percentile(50),
                per_user_tokens_per_s_mean=cat.users.mean())
            cacc = (category_acceptance or {}).get(name)
            if cacc is not None:
                cs.window_acceptance_length = cacc.acceptance_length
                cs.acceptance_rate = cacc.acceptance_rate
                cs.per_position_rate = cacc.per_position_rate
                if cs.acceptance_length is None:
                    cs.acceptance_length = cacc.acceptance_length
                    cs.acceptance_source = f"{cacc.source} (category window)"
            if window_counters and name in window_counters:
                cs.window_counters = window_counters[name]
            if self.windows and name in per_window:
                toks, _, _, secs = per_window[name]
                cs.window_s = secs
                cs.output_tokens_per_s = toks / secs
            categories[name] = cs
        counts = self.counts
        counts.retries, counts.retried = self.retries, self.retried
        counts.rate_limited = self.rate_limited
        if self.reasoning_seen:
            counts.reasoning_tokens = self.reasoning_tokens
            counts.reasoning_share = self.reasoning_tokens / max(1, self.ok_output_tokens)
        throughput = Throughput(output_tokens_per_s=win_tokens / duration,
                                requests_per_s=done_in_window / duration,
                                window_output_tokens=win_tokens)
        if self.neutral_requests:
            ratio = self.neutral_tokens / max(1, self.neutral_engine_tokens)
            throughput.neutral_tokens_per_engine_token = ratio
            throughput.neutral_output_tokens_per_s = ratio * win_tokens / duration
        return Summary(
            requests=counts,
            window=Window(start_s=0.0, end_s=duration, duration_s=duration, start_ns=start_ns,
                          end_ns=end_ns, includes_drain=bool(window.get("includes_drain")),
                          category_windows=len(self.windows) if self.windows else None),
            throughput=throughput, latency_ms=latency, per_user_tokens_per_s=self.users.stats(),
            acceptance=acc,
            server_counters=CounterDeltas(window_delta=counter_delta,
                                          run_delta=run_counter_delta),
            categories=categories, client=client or ClientStats(),
            connections=self._connections(),
            warnings=self._warnings(run_counter_delta, client, acc.acceptance_length, host),
            error_reasons=dict(self.error_reasons), sampling=sampling, host=host)

    def _connections(self) -> ConnectionStats:
        """Connections opened (a record with ``connect_ns`` > 0 opened one), per request, and
        connect durations, over every record that has the field (warm-up included:
        connections opened in warm-up serve the measured requests)."""
        if not self.conn_known:
            return ConnectionStats()
        return ConnectionStats(opened=self.connect.count,
                               per_request=self.connect.count / self.conn_known,
                               connect_ms=self.connect.stats())

    def _warnings(self, run_counter_delta: dict[str, float] | None,
                  client: ClientStats | None, acceptance_length: float | None,
                  host: HostStats | None = None) -> list[str]:
        warnings: list[str] = []
        if self.resent:
            warnings.append(f"{self.resent} request(s) were sent again on a new connection: the "
                            f"server closed the kept-alive connection they were written to "
                            f"before answering (it may close every connection: nothing was "
                            f"reused after; or it dropped them: a server fault)")
        if self.first_mismatch is not None:
            up, inp = self.first_mismatch
            warnings.append(f"{self.mismatched} request(s): the server's prompt_tokens differ "
                            f"from the ids sent (e.g. {up} vs {inp}): the engine did not see "
                            f"the same input")
        if run_counter_delta and "generation_tokens" in run_counter_delta:
            server = run_counter_delta["generation_tokens"]
            mine = self.output_tokens
            # cancelled/errored requests may have generated tokens this client never received
            slack = self.slack + 0.01 * mine + 16
            if server > mine + slack:
                warnings.append(f"the server generated {server:.0f} tokens during the run but "
                                f"this client received {mine}: other traffic shares the "
                                f"server, so server-wide counters (acceptance) include it")
        if self.window.get("includes_drain"):
            warnings.append("the window includes the drain (too few requests for a steady "
                            "state: all were sent at once); throughput is a lower bound")
        if self.rate_mode and (lag := send_lag_warning(self.lag.stats())):
            warnings.append(lag)
        found = host_causes(host, client)
        if host is not None:
            host.causes = [c for c, _ in found]
        warnings.extend(sentence for _, sentence in found)
        if client:
            # the lag is the client's fault only when its own CPU explains it (sanity.py)
            client.overloaded = client.overloaded and (
                host is None or host.client_cores is None or "client" in host.causes)
            lag_sentence = client_lag_sentence(host, client, host.causes if host else [])
            if lag_sentence:
                warnings.append(lag_sentence)
        buffered = buffered_stream_warning(self.bursts.percentile(50), acceptance_length)
        if buffered:
            warnings.append(buffered)
        return warnings
