"""A synthetic NVIDIA DCGM exporter beside the synthetic engine: GPU power, energy and utilization
under DCGM's own metric names, driven by the engine's own activity with a known power model.

Metric names, types and units are dcgm-exporter's default counters (etc/default-counters.csv):
``DCGM_FI_DEV_POWER_USAGE`` (gauge, W), ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (counter, mJ
since boot), ``DCGM_FI_DEV_GPU_UTIL`` (gauge, %), with its labels ``gpu``, ``UUID``, ``device``,
``modelName``, ``Hostname``.

The model (docs/SYNTHETIC.md, "DCGM exporter"), for each of G GPUs, t in seconds since start and
N(t) the output tokens the engine has emitted (prefill tokens and every verify step's tokens):

    E_gpu(t) = idle_w · t + (joules_per_token / G) · N(t)        (joules; served in mJ)
    P_gpu(t) = (E_gpu(t) − E_gpu(t − a)) / a           (W; a = average_s; idle before the start)
    U_gpu(t) = 100 · (engine step time within [t − a, t]) / a    (%)

so the energy over any span is known in closed form from the engine's tokens in it, and the power
gauge is the mean power over the trailing ``a`` seconds, as a GPU's power reading is an average
over a short period. ``energy_counter=False`` serves no energy counter (GPUs before Volta);
``collect_s`` refreshes the values only that often (dcgm-exporter's collection interval, ``-c``).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from loadgen.synthetic.engine import Engine, StepStats

DCGM_PATH = "/dcgm/metrics"


@dataclass(slots=True)
class PowerModel:
    gpus: int = 1
    idle_w: float = 60.0  # per GPU
    joules_per_token: float = 0.5  # per output token, the whole engine (split over the GPUs)
    average_s: float = 1.0  # the power gauge's averaging period
    collect_s: float = 0.0  # values refreshed this often (dcgm-exporter -c); 0: at every read
    energy_counter: bool = True
    model_name: str = "NVIDIA Synthetic"
    hostname: str = "synthetic"

    def validate(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"--dcgm-gpus must be >= 1, not {self.gpus}")
        for flag, v in (("--dcgm-idle-w", self.idle_w),
                        ("--dcgm-joules-per-token", self.joules_per_token)):
            if not v >= 0:
                raise ValueError(f"{flag} must be >= 0, not {v:g}")
        if not self.average_s > 0:
            raise ValueError(f"--dcgm-average-s must be > 0, not {self.average_s:g}")
        if not self.collect_s >= 0:
            raise ValueError(f"--dcgm-collect-s must be >= 0, not {self.collect_s:g}")


class SyntheticDCGM:
    """Counts the engine's emitted tokens and busy time step by step; renders the exposition."""

    def __init__(self, model: PowerModel, engine: Engine) -> None:
        model.validate()
        self.model = model
        self.engine = engine
        self.t0_ns = time.monotonic_ns()
        self.tokens = 0  # N(t): tokens emitted since start (kept across counter resets)
        self._last_live = 0
        # (stamp, N after the step) and (busy from, busy to), for the trailing average
        self._marks: deque[tuple[int, int]] = deque()
        self._busy: deque[tuple[int, int]] = deque()
        self._cached: tuple[int, str] | None = None  # (read at, exposition), with collect_s
        engine.step_listeners.append(self.on_step)

    def on_step(self, st: StepStats) -> None:
        # the step's tokens count from before any of them was written (so a token this
        # exporter counts in a trailing period was sent in it), its busy time up to now
        now = time.monotonic_ns()
        at = st.applied_ns or now
        live = self.engine.live.generation_tokens
        # the engine's counters may be reset (fault counter_reset): count what was added
        self.tokens += live - self._last_live if live >= self._last_live else live
        self._last_live = live
        self._marks.append((at, self.tokens))
        self._busy.append((at - int(st.latency_ms * 1e6), now))
        horizon = now - int(2 * self.model.average_s * 1e9)
        while len(self._marks) > 1 and self._marks[1][0] < horizon:
            self._marks.popleft()
        while self._busy and self._busy[0][1] < horizon:
            self._busy.popleft()

    def _tokens_at(self, t_ns: int) -> int:
        """N at time t (the last step that ended at or before t)."""
        n = 0
        for stamp, tokens in self._marks:
            if stamp > t_ns:
                break
            n = tokens
        return n

    def energy_j(self, t_ns: int, tokens: int) -> float:
        """One GPU's energy since start, by the model."""
        m = self.model
        return m.idle_w * (t_ns - self.t0_ns) / 1e9 + m.joules_per_token / m.gpus * tokens

    def readings(self) -> tuple[float, float, float]:
        """(energy J, power W, utilization %) of one GPU now (every GPU reads the same)."""
        now = time.monotonic_ns()
        span_ns = int(self.model.average_s * 1e9)
        then = now - span_ns  # before the start: idle, no token
        energy = self.energy_j(now, self.tokens)
        power = (energy - self.energy_j(then, self._tokens_at(then))) / (span_ns / 1e9)
        busy = sum(max(0, min(b, now) - max(a, then)) for a, b in self._busy)
        return energy, power, min(100.0, 100.0 * busy / span_ns)

    def exposition(self) -> str:
        """The metrics page: read now, or (``collect_s``) the last reading while it is younger
        than ``collect_s``, as dcgm-exporter serves what it collected last."""
        now = time.monotonic_ns()
        if self._cached is None or now - self._cached[0] >= self.model.collect_s * 1e9:
            self._cached = (now, self._render())
        return self._cached[1]

    def _render(self) -> str:
        m = self.model
        energy, power, util = self.readings()
        out = []
        fams = [("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", f"{power:.6f}"),
                ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", f"{util:.0f}")]
        if m.energy_counter:
            fams.append(("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
                         "Total energy consumption since boot (in mJ).", f"{energy * 1e3:.3f}"))
        for name, kind, help_, value in fams:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            for g in range(m.gpus):
                labels = (f'gpu="{g}",UUID="GPU-{g:08x}-0000-4000-8000-000000000000",'
                          f'device="nvidia{g}",modelName="{m.model_name}",'
                          f'Hostname="{m.hostname}"')
                out.append(f"{name}{{{labels}}} {value}")
        return "\n".join(out) + "\n"
