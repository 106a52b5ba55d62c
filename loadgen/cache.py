"""Where loadgen keeps things it builds or unpacks once and reuses (engine binaries, models, venvs).

Outside any clone, so CI and later sessions on the same machine reuse them: ``$LOADGEN_CACHE`` or
``$XDG_CACHE_HOME/loadgen`` or ``~/.cache/loadgen``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = os.environ.get("LOADGEN_CACHE")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "loadgen"
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
