"""No secret in any output, no header injection. Real servers on
127.0.0.1: nginx (TLS) in front of the synthetic engine checks that every request, streamed or
not, carries the URL's credentials and query parameters."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.client.connect import Connector, bypasses_proxy, choose_proxy
from loadgen.client.endpoint import EndpointError, parse_endpoint, request_headers
from loadgen.client.transport import HttpClient
from loadgen.results.manifest import redact_argv
from tests.synthetic_data import make_dataset, rates_args
from tests.wire_servers import make_certs, start_nginx

pytestmark = pytest.mark.timeout(200)

PASSWORD = "pw-S3cret-41"
KEY = "qk-S3cret-42"
HEADER_VALUE = "hv-S3cret-43"
SECRETS = (PASSWORD, KEY, HEADER_VALUE, base64.b64encode(f"alice:{PASSWORD}".encode()).decode())


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run([sys.executable, "-m", "loadgen", "run", *args], capture_output=True,
                          text=True, env={**clean, **env}, timeout=150)


def _no_secret_in(out: Path, *texts: str) -> None:
    blobs = [f.read_text() for f in out.iterdir() if f.is_file()] + list(texts)
    for blob in blobs:
        for s in SECRETS:
            assert s not in blob


@pytest.mark.slow  # nginx
def test_credentials_leak(synthetic, tmp_path):
    """userinfo and query are taken from the URL once: sent with every request (the proxy
    refuses any request without them), shown nowhere; scrapes reach /metrics, not
    /?key=K/metrics, so acceptance is measured."""
    certs = make_certs(tmp_path)
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "2", "-k", "3", "--model-name", "m",
                    *rates_args())
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    guard = (f'if ($http_authorization != "{basic}") {{ return 401; }}\n'
             f'if ($arg_key != "{KEY}") {{ return 403; }}\n'
             f'if ($http_x_gateway != "{HEADER_VALUE}") {{ return 402; }}')
    # /version fails with 500: httpx's error text (which quotes the URL) becomes a warning
    ng = start_nginx(tmp_path / "nginx", certs, eng.url, buffering=False, guard=guard,
                     extra="location = /version { return 500; }")
    try:
        ds = make_dataset(tmp_path / "p.jsonl", n=6)
        url = f"https://alice:{PASSWORD}@127.0.0.1:{ng.port}/?key={KEY}"
        out = tmp_path / "o"
        r = _cli([f"--endpoint={url}", "--engine", "vllm", "--dataset", str(ds), "--out",
                  str(out), "--output-len", "16", "--model", "m", "--concurrency", "2",
                  "--ca-bundle", str(certs.ca), "--header", "X-Gateway: env:GW_VALUE"],
                 env={"GW_VALUE": HEADER_VALUE})
        assert r.returncode == 0, r.stderr
        s = json.loads((out / "summary.json").read_text())
        assert s["requests"]["ok"] == 6
        assert s["acceptance"]["acceptance_length"] is not None  # /metrics?key=K answered
        man = json.loads((out / "manifest.json").read_text())
        assert "/loadgen/info" in man["server"]  # the probe got through the guard too
        assert man["endpoint"].rstrip("/") == f"https://127.0.0.1:{ng.port}"
        assert any("--endpoint=https://127.0.0.1" in a for a in man["command"])
        assert "X-Gateway: ***" in man["command"]
        _no_secret_in(out, r.stdout, r.stderr)
        # a request error quoting the server's text is scrubbed too: wrong header value
        r = _cli(["--endpoint", url, "--engine", "vllm", "--dataset", str(ds), "--out",
                  str(tmp_path / "e"), "--output-len", "16", "--model", "m",
                  "--ca-bundle", str(certs.ca), "-H", f"X-Gateway: {HEADER_VALUE}x"], env={})
        e = json.loads((tmp_path / "e" / "summary.json").read_text())
        assert e["requests"]["ok"] == 0 and any("HTTP 402" in k for k in e["error_reasons"])
        assert any("could not scrape" in w for w in e["warnings"])
        _no_secret_in(tmp_path / "e", r.stdout, r.stderr)
    finally:
        ng.stop()


def test_credentials_leak_redaction_units():
    ep = parse_endpoint(f"http://alice:{PASSWORD}@h:8080/base/?key={KEY}&x=1")
    assert ep.display == "http://h:8080/base" and ep.target("/metrics") == (
        f"/base/metrics?key={KEY}&x=1")
    argv = ["loadgen", "run", f"--endpoint=http://u:{PASSWORD}@h/?key={KEY}", "--header",
            f"X-A: {HEADER_VALUE}", f"--header=X-B: {HEADER_VALUE}", "--proxy",
            f"http://p:{PASSWORD}@px:3128"]
    assert not any(s in a for a in redact_argv(argv) for s in SECRETS)
    with pytest.raises(EndpointError) as exc:
        parse_endpoint(f"ftp://alice:{PASSWORD}@h/?key={KEY}")
    assert PASSWORD not in str(exc.value) and KEY not in str(exc.value)


def test_header_injection(synthetic, tmp_path, loadgen_cli, monkeypatch):
    """An API key or header value with CR/LF is refused before anything is sent."""
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--truth-log", str(truth))
    ds = make_dataset(tmp_path / "p.jsonl", n=2)
    base = ["--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds), "--output-len", "4"]
    for extra, env in ((["--api-key-env", "K"], {"K": "abc\r\nX-Injected: 1"}),
                       (["--header", "X-A: env:V"], {"V": "a\nb"}),
                       (["--header", "X-A: ok", "--header", "Bad Name: v"], {})):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        r = loadgen_cli("run", *base, "--out", str(tmp_path / "o"), *extra)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("loadgen run: "), r.stderr
        assert "X-Injected" not in r.stderr
    assert not truth.exists() or truth.read_text() == ""  # nothing reached the engine
    with pytest.raises(ValueError):
        HttpClient(eng.url, headers={"x-a": "v\r\nx-b: w"})
    with pytest.raises(EndpointError):
        request_headers(parse_endpoint("http://u:a%0d%0ab@h/"), None, [])


def test_no_proxy_as_curl():
    ep = parse_endpoint("https://api.example.com:8443/v1")
    assert bypasses_proxy(ep, "*")
    assert bypasses_proxy(ep, "example.com") and bypasses_proxy(ep, ".example.com")
    assert not bypasses_proxy(ep, "ample.com")
    assert bypasses_proxy(ep, "api.example.com:8443") and not bypasses_proxy(ep, "x.com, :80")
    assert bypasses_proxy(parse_endpoint("http://10.1.2.3/"), "10.0.0.0/8")
    env = {"HTTPS_PROXY": "proxy:3128", "http_proxy": "http://other:1"}
    px = choose_proxy(ep, None, env)
    assert px is not None and (px.host, px.port) == ("proxy", 3128)
    assert choose_proxy(ep, None, {**env, "no_proxy": "example.com"}) is None
    assert choose_proxy(ep, "", env) is None  # --proxy '' means none
    plain = choose_proxy(parse_endpoint("http://h/"), None, env)
    assert plain is not None and plain.host == "other"
    c = Connector(parse_endpoint("http://h:81/b?k=v"), None, choose_proxy(
        parse_endpoint("http://h:81/"), "http://u:p@px", {}))
    assert c.target("/x") == "http://h:81/b/x?k=v" and "proxy-authorization" in c.head_lines()
    assert c.proxy is not None and c.proxy.port == 1080  # curl's default proxy port
