"""A run's configuration, an input: typed sections (``sections.py``), ``RunConfig`` and the one
table of flat names the CLI flags, sweep ``run:`` keys and manifest.json use (``run.py``)."""

from loadgen.config.run import FLAT, PER_CELL, SECTIONS, SWEEP_RUN_KEYS, RunConfig, default
from loadgen.config.sections import (
    ARRIVALS,
    OPENAI_MODES,
    WARMUP_SECONDS,
    EndpointOptions,
    LoadOptions,
    MeasurementOptions,
    SamplingOptions,
    ScaleOptions,
    TlsOptions,
)

__all__ = ["ARRIVALS", "FLAT", "OPENAI_MODES", "PER_CELL", "SECTIONS", "SWEEP_RUN_KEYS",
           "WARMUP_SECONDS", "EndpointOptions", "LoadOptions", "MeasurementOptions", "RunConfig",
           "SamplingOptions", "ScaleOptions", "TlsOptions", "default"]
