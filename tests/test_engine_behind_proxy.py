"""The engine behind a local reverse proxy (client/listener.py): real nginx (Debian's package)
terminating TLS in front of the synthetic engine (the slow lane), and a plain TCP forwarder (the
fast lane). The host monitor must take the synthetic engine, not the proxy, for the engine, and
count the proxy apart from "others"."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading

import httpx
import pytest

from loadgen.client.host import pid_listening_on
from loadgen.client.listener import followed, nginx_upstream_port
from tests.synthetic_data import make_dataset
from tests.wire_servers import make_certs, start_nginx

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def nginx_servers():
    started = []
    yield started
    for s in started:
        s.stop()


def engine(synthetic, *extra: str):
    return synthetic("--protocol", "vllm", "--model-name", "m", "--step-base-ms", "2", *extra)


def nginx_pids(ng) -> set[int]:
    import psutil

    top = psutil.Process(ng.proc.pid)
    return {top.pid, *(c.pid for c in top.children(recursive=True))}


@pytest.mark.slow  # nginx
def test_followed_from_the_nginx_config_before_any_request(synthetic, tmp_path, nginx_servers):
    eng = engine(synthetic)
    ng = start_nginx(tmp_path / "ng", make_certs(tmp_path), eng.url, buffering=False)
    nginx_servers.append(ng)
    assert nginx_upstream_port(tmp_path / "ng" / "nginx.conf", ng.port) == int(
        eng.url.rsplit(":", 1)[1])
    pid = pid_listening_on(f"https://127.0.0.1:{ng.port}")
    assert pid == eng.proc.pid
    via = followed(pid)
    assert via is not None and via.proxy_pid == ng.proc.pid
    assert via.how == f"config {tmp_path / 'ng' / 'nginx.conf'}"
    # the engine's own port is the engine, nothing followed
    assert pid_listening_on(eng.url) == eng.proc.pid


@pytest.mark.slow  # nginx
def test_followed_from_the_proxys_connections(synthetic, tmp_path, nginx_servers):
    """proxy_pass through a variable: the config does not say; an in-flight request does."""
    eng = engine(synthetic, "--step-base-ms", "20")
    port = eng.url.rsplit(":", 1)[1]
    ng = start_nginx(tmp_path / "ng", make_certs(tmp_path), "$up", buffering=False,
                     extra=f"        set $up http://127.0.0.1:{port};")
    nginx_servers.append(ng)
    url = f"https://127.0.0.1:{ng.port}"
    assert nginx_upstream_port(tmp_path / "ng" / "nginx.conf", ng.port) is None
    assert pid_listening_on(url) in nginx_pids(ng)  # nothing to follow yet: the listener
    streaming = threading.Event()
    done = threading.Event()

    def stream() -> None:
        body = {"model": "m", "prompt": [5, 6, 7], "max_tokens": 400, "ignore_eos": True,
                "stream": True}
        ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with httpx.Client(verify=ctx, trust_env=False) as c, \
                c.stream("POST", f"{url}/v1/completions", json=body, timeout=60) as r:
            for _ in r.iter_lines():
                streaming.set()
                if done.is_set():
                    break

    t = threading.Thread(target=stream)
    t.start()
    try:
        assert streaming.wait(30)
        pid = pid_listening_on(url)
    finally:
        done.set()
        t.join(60)
    assert pid == eng.proc.pid
    via = followed(pid)
    assert via is not None and via.how == "connections" and via.proxy_pid == ng.proc.pid


@pytest.mark.slow  # nginx
def test_run_through_nginx_counts_the_engine_not_others(synthetic, tmp_path, nginx_servers):
    eng = engine(synthetic)
    certs = make_certs(tmp_path)
    ng = start_nginx(tmp_path / "ng", certs, eng.url, buffering=False)
    nginx_servers.append(ng)
    ds = make_dataset(tmp_path / "p.jsonl", n=8)
    out = tmp_path / "run"
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    r = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--endpoint", f"https://127.0.0.1:{ng.port}",
         "--engine", "vllm", "--dataset", str(ds), "--ca-bundle", str(certs.ca),
         "--output-len", "64", "--concurrency", "2", "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=150, env=clean)
    assert r.returncode == 0, r.stderr
    host = json.loads((out / "summary.json").read_text())["host"]
    assert host["engine_pid"] == eng.proc.pid
    assert host["proxy_pid"] == ng.proc.pid
    assert host["engine_cores"] is not None and host["proxy_cores"] is not None
    assert "nginx" in host["engine_found"] and str(eng.proc.pid) in host["engine_found"]
    # the report's conditions table shows the proxy's cores apart
    r = subprocess.run([sys.executable, "-m", "loadgen", "report", str(out)], capture_output=True,
                       text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    header = next(x for x in md.splitlines() if "proxy cores" in x)
    row = next(x for x in md.splitlines()[md.splitlines().index(header) + 2:] if x.strip())
    col = [c.strip() for c in header.split("|")].index("proxy cores")
    assert [c.strip() for c in row.split("|")][col] == f"{host['proxy_cores']:.2f}"


def test_engine_pid_names_it(synthetic, tmp_path, loadgen_cli):
    eng = engine(synthetic)
    ds = make_dataset(tmp_path / "p.jsonl", n=4)
    base = ["run", "--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds),
            "--output-len", "8", "--quiet"]
    # a process that is not the listener (nor the client): the host monitor takes the one named
    me = os.getpid()
    r = subprocess.run([sys.executable, "-m", "loadgen", *base, "--engine-pid", str(me),
                        "--out", str(tmp_path / "a")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    host = json.loads((tmp_path / "a" / "summary.json").read_text())["host"]
    assert host["engine_pid"] == me and host["proxy_pid"] is None
    r = loadgen_cli(*base, "--engine-pid", "999999999", "--out", str(tmp_path / "b"))
    assert r.returncode == 2
    assert r.stderr.strip() == "loadgen run: --engine-pid 999999999: no such process on this host"


def test_nginx_config_upstream_blocks_and_includes(tmp_path):
    """The config reader on what nginx configs hold besides a literal proxy_pass: an
    ``upstream`` block (its first server), ``include`` globs relative to the file, comments,
    other servers on other ports, a non-loopback target (not followed)."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "up.conf").write_text(
        "upstream engine { server 127.0.0.1:9001 max_fails=3; server 127.0.0.1:9002; }\n")
    (tmp_path / "conf.d" / "site.conf").write_text("""
server {
    listen 8443 ssl;   # the endpoint
    location / { proxy_pass http://engine/; }
}
server { listen [::1]:8444; location / { proxy_pass http://localhost:9100; } }
server { listen 127.0.0.1:8445; location / { proxy_pass http://10.0.0.7:9100; } }
""")
    conf = tmp_path / "nginx.conf"
    conf.write_text("events {}\nhttp {\n    # include the rest\n    include conf.d/*.conf;\n}\n")
    assert nginx_upstream_port(conf, 8443) == 9001
    assert nginx_upstream_port(conf, 8444) == 9100
    assert nginx_upstream_port(conf, 8445) is None  # not on this host
    assert nginx_upstream_port(conf, 8000) is None  # no server listens there


# A TCP forwarder in its own process: every connection to its port is piped to the engine's.
FORWARDER = """
import socket, sys, threading
up = int(sys.argv[1])
srv = socket.create_server(("127.0.0.1", 0))
print(srv.getsockname()[1], flush=True)

def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

while True:
    c, _ = srv.accept()
    u = socket.create_connection(("127.0.0.1", up))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
"""


def test_followed_through_a_forwarder_and_forgotten_when_reached_directly(synthetic):
    """Through a process that is no nginx, the engine is found from the proxy's established
    connections once a connection is open (before, the listener itself is the answer); the
    engine reached directly afterwards is no longer said to be behind that proxy."""
    from urllib.parse import urlsplit

    eng = engine(synthetic)
    fwd = subprocess.Popen([sys.executable, "-c", FORWARDER, str(urlsplit(eng.url).port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert fwd.stdout is not None
        url = f"http://127.0.0.1:{int(fwd.stdout.readline())}"
        assert pid_listening_on(url) == fwd.pid  # no connection to follow yet
        with httpx.Client(timeout=10) as c:  # keep-alive: the forwarder holds its upstream
            assert c.get(url + "/health").status_code == 200
            assert pid_listening_on(url) == eng.proc.pid
            via = followed(eng.proc.pid)
            assert via is not None and via.proxy_pid == fwd.pid and via.how == "connections"
        assert pid_listening_on(eng.url) == eng.proc.pid
        assert followed(eng.proc.pid) is None
    finally:
        fwd.kill()
        fwd.wait(10)
