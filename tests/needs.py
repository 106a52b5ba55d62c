"""``installed_or_skip``: a test module's optional dependencies checked without importing them.
``pytest.importorskip`` at a module's top imports at collection, in every pytest-xdist worker,
whether or not that worker runs the module's tests (sentence-transformers pulls in torch,
scikit-learn and datasets: seconds of CPU per worker); the tests import them when they run."""

from __future__ import annotations

import importlib.util

import pytest


def installed_or_skip(*modules: str) -> None:
    """Skip the calling module unless every top-level package is installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}", allow_module_level=True)
