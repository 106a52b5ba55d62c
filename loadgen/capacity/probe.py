"""One probe of a capacity search: an ordinary run (``run_benchmark``) at one load level, in its
own run directory, watched for over-saturation, judged against the SLO set."""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.capacity.saturation import Saturation, SaturationWatch
from loadgen.capacity.search import ProbeResult
from loadgen.capacity.slo import Decided, SloSet, decided_failure, judge
from loadgen.client.stop import StopSignals
from loadgen.data.prompts import PromptFile

# requests per probe when neither --num-requests nor --duration is given: this many, and at
# least PER_LEVEL x the concurrency (closed loop) or RATE_SECONDS of arrivals (open loop)
MIN_REQUESTS = 32
PER_LEVEL = 4
RATE_SECONDS = 15.0


class ProbeFailed(Exception):
    """A probe in which no request succeeded: the endpoint is down or refuses every request;
    a search cannot go on."""


class ProbeSignals(StopSignals):
    """The command's SIGINT/SIGTERM handling, plus ``cut()``: stop the attached run from the
    saturation watcher's thread (Run.interrupt is thread-safe)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog)
        self._stop_run = None

    def attach(self, first, last) -> None:  # type: ignore[override]
        self._stop_run = first
        super().attach(first, last)

    def detach(self) -> None:
        self._stop_run = None
        super().detach()

    def cut(self) -> None:
        if self._stop_run is not None:
            self._stop_run()


@dataclass(slots=True)
class Prober:
    """``prober(level)`` runs one probe of configuration ``label`` at ``endpoint``."""

    kind: str  # "concurrency", "rate" or "time_scale" (a trace: loadgen/capacity/trace.py)
    label: str
    endpoint: str
    engine: str
    root: Path  # the capacity output directory
    prompts: PromptFile
    dataset_path: Path | None
    slos: SloSet
    signals: ProbeSignals
    run_opts: dict[str, Any] = field(default_factory=dict)  # flat run options, every probe
    describe: Any = None  # the launched engine's describe(), or None
    trace: Any = None  # with kind "time_scale": the TraceSlice every probe replays
    count: int = 0

    def __call__(self, level: float) -> ProbeResult:
        from loadgen.config import RunConfig
        from loadgen.results.records import iter_run_records
        from loadgen.run.benchmark import run_benchmark

        self.count += 1
        tag = {"concurrency": f"c{level:g}", "rate": f"r{level:.4g}"}.get(self.kind,
                                                                          f"s{level:.4g}")
        out = self.root / "probes" / self.label / f"{self.count:02d}-{tag}"
        opts = dict(self.run_opts)
        extra: dict[str, Any] = {}
        if self.kind == "time_scale":  # the slice, in whole passes (capacity/trace.py)
            # one request stands in until the slice's passes say how many
            opts.update(num_requests=1, duration_s=None, arrival="trace")
            cfg, tp = self.trace.settle(RunConfig.build(
                endpoint=self.endpoint, engine=self.engine, out=out, request_rate=1.0, **opts),
                level)
            extra = {"offered_rate": tp.offered_rate, "passes": tp.passes,
                     "schedule_s": tp.schedule_s}
            print(f"loadgen capacity: {self.label} at time scale {level:.4g} "
                  f"({tp.offered_rate:.4g} requests/s mean, {tp.passes} pass"
                  f"{'es' if tp.passes > 1 else ''} of the trace slice)", file=sys.stderr)
        else:
            if opts.get("num_requests") is None and opts.get("duration_s") is None:
                opts["num_requests"] = max(MIN_REQUESTS, math.ceil(
                    level * (PER_LEVEL if self.kind == "concurrency" else RATE_SECONDS)))
            cfg = RunConfig.build(endpoint=self.endpoint, engine=self.engine, out=out,
                                  concurrency=int(level) if self.kind == "concurrency" else None,
                                  request_rate=level if self.kind == "rate" else None, **opts)
            print(f"loadgen capacity: {self.label} at {level:.4g} "
                  f"{'concurrent' if self.kind == 'concurrency' else 'requests/s'}",
                  file=sys.stderr)
        cut: list[Saturation | Decided] = []

        def on_saturation(s: Saturation | Decided) -> None:
            cut.append(s)
            self.signals.cut()

        if self.kind == "rate":
            watch = SaturationWatch(out / "requests.jsonl", on_saturation)
        elif self.kind == "time_scale":
            # a trace's load is not stationary (a burst raises TTFT for a while), so no
            # over-saturation test: cut only once the verdict is a failure for certain
            planned = cfg.load.num_requests or 0
            watch = SaturationWatch(out / "requests.jsonl", on_saturation, test=lambda recs:
                                    decided_failure(recs, self.slos, planned))
        else:
            watch = contextlib.nullcontext()
        prompts = self.trace.prompts if self.kind == "time_scale" else self.prompts
        with watch:
            summary = run_benchmark(cfg, prompts, self.dataset_path,
                                    argv=["loadgen", "capacity"], progress=False,
                                    engine=self.describe() if self.describe else None,
                                    signals=self.signals)
        if self.signals.count:
            raise KeyboardInterrupt  # the user's signal, not ours: the search stops
        if summary.requests.ok == 0 and not cut:
            why = "; ".join(f"{n} x {r}" for r, n in (summary.error_reasons or {}).items())
            raise ProbeFailed(f"{self.label}: no request succeeded at {level:g} "
                              f"({why or 'no reason recorded'}); run in {out}")
        verdict = judge(summary, iter_run_records(out), self.slos)
        info = {"summary": str(out / "summary.json"), **extra, "values": verdict.values,
                "margins": verdict.margins, "violations": verdict.violations}
        if cut:
            return ProbeResult(level, ok=False, margin=math.inf, binding=verdict.binding,
                               cut=cut[0].describe(), info=info)
        return ProbeResult(level, ok=verdict.ok, margin=verdict.margin, binding=verdict.binding,
                           info=info)
