"""manifest.json: what was run, against what, with which versions. Never a secret."""

from __future__ import annotations

import hashlib
import platform
import socket
import sys
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

LIBRARIES = ("httptools", "uvloop", "httpx", "numpy", "prometheus-client", "pyarrow", "rich")


def redact_url(url: str) -> str:
    """Drop user:password@ and the query string (where tokens hide) from a URL."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path, "", ""))


def redact_argv(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        out.append(redact_url(a) if "://" in a else a)
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
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config["endpoint"] = redact_url(config["endpoint"])
    return {
        "command": redact_argv(argv),
        "config": config,
        "versions": versions(),
        "host": {"hostname": socket.gethostname(), "platform": platform.platform(),
                 "cpus": __import__("os").cpu_count()},
        "endpoint": redact_url(cfg.endpoint),
        "dataset": {"path": str(dataset) if dataset else None,
                    "sha256": file_sha256(dataset) if dataset and dataset.exists() else None,
                    "header": dataset_header},
    }
