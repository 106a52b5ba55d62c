"""Real parts of a fleet for tests/test_fleet.py, each a foreground child process on 127.0.0.1:
nginx load-balancing over synthetic replicas (Debian's package) and a Prometheus server
(Debian's package) scraping them every second into its own storage under the test's tmp."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.wire_servers import NGINX, NGINX_HEAD, Server, _wait_listening, free_port

PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)

GATEWAY_CONF = NGINX_HEAD + """\
    upstream fleet {{
        {balance}
{servers}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://fleet;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def host_port(url: str) -> str:
    return url.split("://", 1)[1].rstrip("/")


def start_gateway(d: Path, replicas: list[str], balance: str = "round_robin") -> Server:
    """nginx on a free port spreading every request (``/metrics`` too) over ``replicas``
    (their base URLs): ``round_robin`` (nginx's default) or ``least_conn``."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/setup.sh installs Debian's package)")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server {host_port(u)};" for u in replicas)
    (d / "nginx.conf").write_text(GATEWAY_CONF.format(
        user=user, d=d, port=port, servers=servers,
        balance="least_conn;" if balance == "least_conn" else ""))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-e", str(d / "error.log"), "-c",
                             str(d / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(proc, port, "nginx", d / "error.log")
    return Server(proc, port)


PROMETHEUS_CONF = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: fleet
    static_configs:
      - targets: [{targets}]
"""


def start_prometheus(d: Path, replicas: list[str]) -> Server:
    """Prometheus on a free port scraping ``replicas`` every second (job ``fleet``), its TSDB
    in ``d``; returns once every replica has been scraped up."""
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (scripts/setup.sh installs Debian's package)")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (d / "prometheus.yml").write_text(PROMETHEUS_CONF.format(
        targets=", ".join(f"'{host_port(u)}'" for u in replicas)))
    log = d / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={d / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    _wait_listening(proc, port, "prometheus", log)
    server = Server(proc, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # every replica scraped and up once
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": "up"})
            ups = r.json()["data"]["result"] if r.status_code == 200 else []
            if len(ups) == len(replicas) and all(u["value"][1] == "1" for u in ups):
                return server
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"prometheus did not scrape the replicas: {log.read_text()[-2000:]}")
