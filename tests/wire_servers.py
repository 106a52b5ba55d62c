"""Real servers for the wire tests, run as foreground child processes on 127.0.0.1: nginx (TLS-
terminating reverse proxy, Debian's package) and tinyproxy (a CONNECT proxy, Debian's package),
with certificates made by trustme. Each is started and stopped by the test that uses it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
TINYPROXY = shutil.which("tinyproxy") or (
    "/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None)


@dataclass
class Certs:
    ca: Path  # the CA that signed the server certificate
    wrong_ca: Path  # another CA
    cert: Path  # server chain for 127.0.0.1 and localhost
    key: Path


def make_certs(d: Path) -> Certs:
    trustme = pytest.importorskip("trustme")
    ca, other = trustme.CA(), trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    c = Certs(d / "ca.pem", d / "wrong-ca.pem", d / "cert.pem", d / "key.pem")
    ca.cert_pem.write_to_path(str(c.ca))
    other.cert_pem.write_to_path(str(c.wrong_ca))
    leaf.private_key_pem.write_to_path(str(c.key))
    c.cert.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(proc: subprocess.Popen, port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text()[-2000:] if log.exists() else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class Server:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc = proc
        self.port = port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# the prologue of every nginx config the tests write: one worker, its files in the test's folder
NGINX_HEAD = """\
{user}worker_processes 1;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
"""

NGINX_CONF = NGINX_HEAD + """\
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
{extra}
        location / {{
{guard}
            proxy_pass {upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering {buffering};
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def start_nginx(d: Path, certs: Certs, upstream: str, buffering: bool, guard: str = "",
                extra: str = "") -> Server:
    """nginx terminating TLS on a free 127.0.0.1 port in front of ``upstream`` (http URL).
    ``guard``: directives at the top of ``location /`` (e.g. refuse requests without a
    credential); ``extra``: more server-level directives (locations)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/setup.sh installs Debian's package)")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(NGINX_CONF.format(
        user=user, d=d, port=port, cert=certs.cert, key=certs.key, upstream=upstream,
        buffering="on" if buffering else "off", guard=guard, extra=extra))
    proc = subprocess.Popen([NGINX, "-p", str(d), "-e", str(d / "error.log"), "-c",
                             str(d / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(proc, port, "nginx", d / "error.log")
    return Server(proc, port)


def start_tinyproxy(d: Path, auth: tuple[str, str] | None = None) -> Server:
    """tinyproxy on a free 127.0.0.1 port (CONNECT to any port; Basic auth when ``auth``)."""
    if TINYPROXY is None:
        pytest.skip("tinyproxy is not installed (scripts/setup.sh installs Debian's package)")
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 600", "MaxClients 200",
             "Allow 127.0.0.1", "LogLevel Connect", f'LogFile "{d}/tinyproxy.log"',
             f'PidFile "{d}/tinyproxy.pid"', "DisableViaHeader Yes"]
    if os.geteuid() == 0:
        lines += ["User root", "Group root"]
    if auth:
        lines.append(f"BasicAuth {auth[0]} {auth[1]}")
    (d / "tinyproxy.conf").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(d / "tinyproxy.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_listening(proc, port, "tinyproxy", d / "tinyproxy.log")
    return Server(proc, port)
