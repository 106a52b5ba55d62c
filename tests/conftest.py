"""Shared fixtures: real servers on 127.0.0.1, started as child processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.synthetic.process import SyntheticProcess

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def synthetic():
    """Factory: ``eng = synthetic("--protocol", "sglang", ...)``; stopped at teardown."""
    started: list[SyntheticProcess] = []

    def start(*args: str) -> SyntheticProcess:
        proc = SyntheticProcess(list(args)).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
