"""Files that ship inside the package (so a wheel installed anywhere has them): the built-in
prompt set, the engine presets (``loadgen serve --preset NAME``) and the dataset recipes."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """The path of a packaged file or folder (``resource_path("presets", "ngram.yaml")``)."""
    base = resources.files(__name__)
    return Path(str(base.joinpath(*parts)))
