"""Engine process lifecycle with real child processes (small python servers on loopback)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from loadgen.launch.launcher import free_port
from loadgen.launch.process import EngineProcess, EngineStartError, HealthTimeout

pytestmark = pytest.mark.timeout(60)

# A tiny engine stand-in: /health answers 503 for LOAD_S seconds then 200, /version and /props
# answer JSON. Optional: ignore SIGTERM, spawn a grandchild in the same process group.
FAKE_SERVER = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    port = int(sys.argv[sys.argv.index("--port") + 1])
    load_s = float(os.environ.get("LOAD_S", "0"))
    if os.environ.get("IGNORE_TERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("GRANDCHILD_PIDFILE"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open(os.environ["GRANDCHILD_PIDFILE"], "w").write(str(child.pid))
    t0 = time.monotonic()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            if self.path == "/health":
                ready = time.monotonic() - t0 >= load_s and not os.environ.get("NEVER_READY")
                code, body = (200, {"status": "ok"}) if ready else (503, {"error": "loading"})
            elif self.path == "/version":
                code, body = 200, {"version": "9.9.9-fake"}
            elif self.path == "/props":
                code, body = 200, {"build_info": "b1-fake", "model_path": "/m.gguf",
                                   "total_slots": 1}
            else:
                code, body = 404, {}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    print(f"fake engine listening on {port}", flush=True)
    HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


@pytest.fixture
def fake_server(tmp_path) -> Path:
    p = tmp_path / "fake_server.py"
    p.write_text(FAKE_SERVER)
    return p


def fake_engine(fake_server: Path, tmp_path: Path, port: int, **env: str) -> EngineProcess:
    return EngineProcess(
        [sys.executable, str(fake_server), "--port", str(port)],
        engine="vllm", base_url=f"http://127.0.0.1:{port}", log_path=tmp_path / "engine.log",
        env=env, sd={"method": "ngram", "num_spec_tokens": 4}, model="fake/model",
        grace_s=5.0, health_timeout_s=20.0,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_child_that_dies_early_reports_the_log_tail(tmp_path):
    port = free_port()
    script = ("import sys\nfor i in range(100): print('loading line', i)\n"
              "print('error: model file not found: /nope.gguf', flush=True)\nsys.exit(3)\n")
    proc = EngineProcess([sys.executable, "-c", script], engine="llamacpp",
                         base_url=f"http://127.0.0.1:{port}", log_path=tmp_path / "e.log",
                         health_timeout_s=20)
    t0 = time.monotonic()
    with pytest.raises(EngineStartError) as exc, proc:
        pytest.fail("must not become healthy")
    assert time.monotonic() - t0 < 20  # seen dead before its health timeout ran out
    msg = str(exc.value)
    assert "exited with 3 before becoming healthy" in msg
    assert "error: model file not found: /nope.gguf" in msg
    assert "loading line 99" in msg and "loading line 3\n" not in msg  # a tail, not everything
    assert not proc.alive()


def test_missing_executable_is_a_start_error(tmp_path):
    proc = EngineProcess(["/nonexistent/llama-server", "--port", "1"], engine="llamacpp",
                         base_url="http://127.0.0.1:1", log_path=tmp_path / "e.log")
    with pytest.raises(EngineStartError, match="cannot start llamacpp"):
        proc.start()


def test_argv_must_be_a_list():
    with pytest.raises(TypeError):
        EngineProcess("llama-server -m x", engine="llamacpp", base_url="http://127.0.0.1:1")


def test_healthy_after_loading_then_describe_and_stop(fake_server, tmp_path):
    port = free_port()
    proc = fake_engine(fake_server, tmp_path, port, LOAD_S="1.0")
    with proc as eng:
        assert eng.startup_s is not None and eng.startup_s >= 1.0  # 503 meant "still loading"
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
        d = eng.describe()
        assert d["engine"] == "vllm"
        assert d["model"] == "fake/model"
        assert d["command"] == [sys.executable, str(fake_server), "--port", str(port)]
        assert d["version"]["version"] == "9.9.9-fake"
        assert d["version"]["source"] == "/version"
        assert d["sd"] == {"method": "ngram", "num_spec_tokens": 4}
        assert d["base_url"] == f"http://127.0.0.1:{port}"
        assert d["pid"] == eng.pid
        pid = eng.pid
    assert not pid_alive(pid)
    assert not port_open(port)
    assert "fake engine listening" in (tmp_path / "engine.log").read_text()


def test_llamacpp_version_comes_from_props(fake_server, tmp_path):
    port = free_port()
    proc = fake_engine(fake_server, tmp_path, port)
    proc.engine = "llamacpp"
    with proc as eng:
        v = eng.describe()["version"]
    assert v["version"] == "b1-fake" and v["source"] == "/props"
    assert v["model_path"] == "/m.gguf"


def test_child_ignoring_sigterm_is_killed_after_grace(fake_server, tmp_path):
    port = free_port()
    pidfile = tmp_path / "grandchild.pid"
    proc = fake_engine(fake_server, tmp_path, port, IGNORE_TERM="1",
                       GRANDCHILD_PIDFILE=str(pidfile))
    with proc:
        grandchild = int(pidfile.read_text())
        assert pid_alive(grandchild)
        t0 = time.monotonic()
        rc = proc.stop(grace=1.0)
        elapsed = time.monotonic() - t0
    assert rc == -signal.SIGKILL
    assert elapsed >= 1.0  # the grace was given before the SIGKILL
    # The whole process group went, workers included.
    deadline = time.monotonic() + 5
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)
    assert proc.stop() == rc  # idempotent


def test_polite_child_stops_on_sigterm_quickly(fake_server, tmp_path):
    port = free_port()
    with fake_engine(fake_server, tmp_path, port) as proc:
        t0 = time.monotonic()
        rc = proc.stop(grace=5.0)
    assert rc == -signal.SIGTERM
    assert time.monotonic() - t0 < 5.0  # it ended on SIGTERM, within the grace


def test_health_timeout_is_clean(fake_server, tmp_path):
    port = free_port()
    proc = fake_engine(fake_server, tmp_path, port, NEVER_READY="1")
    proc.health_timeout_s = 1.5
    t0 = time.monotonic()
    with pytest.raises(HealthTimeout) as exc, proc:
        pytest.fail("must not become healthy")
    assert 1.5 <= time.monotonic() - t0 < 10
    msg = str(exc.value)
    assert "not healthy after 2 s" in msg or "not healthy after 1 s" in msg
    assert "HTTP 503" in msg
    assert "fake engine listening" in msg  # the log tail
    assert not proc.alive()
    assert not port_open(port)


def test_exception_inside_the_block_stops_the_engine(fake_server, tmp_path):
    port = free_port()
    proc = fake_engine(fake_server, tmp_path, port)
    with pytest.raises(RuntimeError, match="client blew up"), proc:
        raise RuntimeError("client blew up")
    assert not proc.alive()
    assert not port_open(port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_cli_foreground_prints_url_and_stops_on_signal(fake_server, tmp_path, sig):
    """`loadgen serve llamacpp --binary FAKE`: healthy -> URL on stdout -> signal -> clean."""
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\n" + FAKE_SERVER)
    binary.chmod(0o755)
    port = free_port()
    env = {**os.environ, "LOADGEN_CACHE": str(tmp_path / "cache"), "LOAD_S": "0.5"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "serve", "llamacpp", "--binary", str(binary),
         "--model", str(tmp_path / "m.gguf"), "--port", str(port), "--spec", "ngram",
         "--log", str(tmp_path / "serve.log"), "--health-timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = cli.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}"
        assert httpx.get(line + "/health").status_code == 200
        cli.send_signal(sig)
        rc = cli.wait(timeout=20)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    err = cli.stderr.read()
    assert rc == 0, err
    assert "--spec-type ngram-simple" in err
    assert "stopping llamacpp" in err
    assert not port_open(port)
    assert "fake engine listening" in (tmp_path / "serve.log").read_text()


def test_serve_cli_reports_a_dying_engine(tmp_path):
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!{sys.executable}\nimport sys\nprint('gguf_init: bad magic')\n"
                      "sys.exit(1)\n")
    binary.chmod(0o755)
    env = {**os.environ, "LOADGEN_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "loadgen", "serve", "llamacpp", "--binary", str(binary),
         "--model", str(tmp_path / "m.gguf"), "--port", str(free_port())],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "exited with 1 before becoming healthy" in proc.stderr
    assert "gguf_init: bad magic" in proc.stderr
