"""manifest.json: what was run, against what, with which versions. Never a secret."""

from __future__ import annotations

import hashlib
import platform
import socket
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from loadgen.results.redact import redact_header_spec, redact_text, redact_url

LIBRARIES = ("httptools", "uvloop", "httpx", "numpy", "prometheus-client", "pyarrow", "rich")


__all__ = ["build_manifest", "redact_argv", "redact_url"]
HEADER_FLAGS = ("--header", "-H")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line without secrets: every URL redacted (``--endpoint URL`` and
    ``--endpoint=URL`` alike), every ``--header`` value masked."""
    out = []
    after_header = False
    for a in argv:
        if after_header:
            out.append(redact_header_spec(a))
        elif a.startswith("--header="):
            out.append("--header=" + redact_header_spec(a.split("=", 1)[1]))
        else:
            out.append(redact_text(a))
        after_header = a in HEADER_FLAGS
    return out


def versions() -> dict[str, str | None]:
    from loadgen import __version__

    out: dict[str, str | None] = {"loadgen": __version__, "python": sys.version.split()[0]}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = None
    return out


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(cfg: Any, dataset: Path | None, dataset_header: dict[str, Any],
                   argv: list[str]) -> dict[str, Any]:
    config = cfg.to_flat()
    config["endpoint"] = redact_url(config["endpoint"])
    config["headers"] = [redact_header_spec(h) for h in config.get("headers") or []]
    config["telemetry"] = [redact_url(u) for u in config.get("telemetry") or []]
    config["metrics"] = [redact_url(u) if "://" in u else u for u in config.get("metrics") or []]
    if config.get("proxy"):
        config["proxy"] = redact_url(config["proxy"] if "://" in config["proxy"]
                                     else "http://" + config["proxy"])
    return {
        "command": redact_argv(argv),
        "config": config,
        "versions": versions(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "cpus": __import__("os").cpu_count()},
        "endpoint": redact_url(cfg.endpoint.url),
        "tls": ({"verify": not cfg.tls.insecure, "ca_bundle": cfg.tls.ca_bundle}
                if cfg.endpoint.url.lower().startswith("https:") else None),
        "dataset": {"path": str(dataset) if dataset else None,
                    "sha256": file_sha256(dataset) if dataset and dataset.exists() else None,
                    "header": dataset_header},
    }
