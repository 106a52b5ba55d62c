"""Launch presets: a YAML file (or a packaged ``loadgen/resources/presets/<name>.yaml``) naming
a model, an SD method, its draft and K, and extra engine arguments (``loadgen serve --preset``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from loadgen.launch import commands as C
from loadgen.resources import resource_path

PRESET_DIR = resource_path("presets")
PRESET_KEYS = {"engines", "model", "spec", "draft", "num_spec_tokens", "host", "port",
               "extra_args", "description", "health_timeout"}


def load_preset(ref: str, engine: str) -> dict[str, Any]:
    """Read a preset file (or the packaged ``loadgen/resources/presets/<ref>.yaml``) and check
    it fits ``engine``."""
    path = Path(ref).expanduser()
    if not path.is_file():
        for cand in (PRESET_DIR / ref, PRESET_DIR / f"{ref}.yaml"):
            if cand.is_file():
                path = cand
                break
        else:
            known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
            raise C.LaunchConfigError(
                f"preset {ref!r} not found (a file, or one of: {', '.join(known) or 'none'})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise C.LaunchConfigError(f"preset {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise C.LaunchConfigError(f"preset {path}: expected a mapping at the top level")
    unknown = set(data) - PRESET_KEYS
    if unknown:
        raise C.LaunchConfigError(f"preset {path}: unknown keys {sorted(unknown)}")
    engines = data.get("engines")
    if engines and engine not in engines:
        raise C.LaunchConfigError(
            f"preset {path.name} is for {', '.join(engines)}, not {engine}")
    extra = data.get("extra_args") or []
    if isinstance(extra, dict):
        extra = extra.get(engine) or []
    data["extra_args"] = [str(a) for a in extra]
    return data
