"""Metrics targets at run time: an exposition URL without a path gets the engine's metrics path
(``with_path``), and a host name that resolves to several addresses becomes one target per
address when the run starts (``expand``). The values themselves are parsed and checked with the
run's configuration (loadgen/config/targets.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit, urlunsplit

from loadgen.config.targets import MetricsTarget


def with_path(target: MetricsTarget, metrics_path: str | None) -> MetricsTarget:
    """An http target without a path gets the engine's metrics path."""
    parts = urlsplit(target.url)
    if target.kind != "http" or parts.path not in ("", "/") or metrics_path is None:
        return target
    return MetricsTarget(target.kind, urlunsplit(parts._replace(path=metrics_path)),
                         target.selector, target.host)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def expand(target: MetricsTarget) -> list[MetricsTarget]:
    """An http target whose host name resolves to several addresses: one target per address
    (sorted, deduplicated), each keeping the port and path. A literal address, a Prometheus
    server, or a name with one address: the target itself. A name that does not resolve is
    left as it is (its scrape then fails and is named)."""
    parts = urlsplit(target.url)
    host = parts.hostname or ""
    if target.kind != "http" or _is_address(host):
        return [target]
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM)
    except OSError:
        return [target]
    addrs = sorted({info[4][0] for info in infos})
    if len(addrs) <= 1:
        return [target]
    userinfo = parts.netloc.rpartition("@")[0]
    out = []
    for a in addrs:
        shown = f"[{a}]" if ":" in a else a
        netloc = (f"{userinfo}@" if userinfo else "") + f"{shown}:{port}"
        out.append(MetricsTarget("http", urlunsplit(parts._replace(netloc=netloc)),
                                 host=host))
    return out
