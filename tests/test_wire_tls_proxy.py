"""HTTPS, reverse proxies and CONNECT proxies with real components on 127.0.0.1:
nginx (Debian's package) terminating TLS in front of the synthetic engine, certificates made by
trustme, tinyproxy (Debian's package) as the CONNECT proxy. Skipped when nginx/tinyproxy/trustme
are absent (scripts/setup.sh installs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.results.records import read_records
from tests.synthetic_data import make_dataset, rates_args
from tests.wire_servers import make_certs, start_nginx, start_tinyproxy

pytestmark = pytest.mark.timeout(240)


def engine_args(truth: Path) -> list[str]:
    return ["--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "4", "-k", "3",
            "--model-name", "m", "--per-request-spec-metrics", "summary", *rates_args()]


def loadgen_run(endpoint: str, dataset: Path, out: Path, *extra: str,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "loadgen", "run", "--endpoint", endpoint, "--engine", "vllm",
           "--dataset", str(dataset), "--out", str(out), "--output-len", "48", "--model", "m",
           "--concurrency", "4", "--quiet", *extra]
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(cmd, capture_output=True, text=True, env={**clean, **(env or {})},
                          timeout=200)


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture
def certs(tmp_path):
    return make_certs(tmp_path)


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.stop()


def _pair(synthetic, tmp_path, certs, servers, buffering: bool):
    """The same seeded engine twice: a direct run and a run through nginx over TLS."""
    ds = make_dataset(tmp_path / "p.jsonl", n=12)
    direct = synthetic(*engine_args(tmp_path / "t1.jsonl"))
    behind = synthetic(*engine_args(tmp_path / "t2.jsonl"))
    ng = start_nginx(tmp_path / "nginx", certs, behind.url, buffering=buffering)
    servers.append(ng)
    r1 = loadgen_run(direct.url, ds, tmp_path / "direct")
    r2 = loadgen_run(f"https://127.0.0.1:{ng.port}", ds, tmp_path / "tls",
                     "--ca-bundle", str(certs.ca))
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    return summary(tmp_path / "direct"), summary(tmp_path / "tls")


def test_nginx_tls_unbuffered_equals_direct(synthetic, tmp_path, certs, servers):
    a, b = _pair(synthetic, tmp_path, certs, servers, buffering=False)
    assert a["requests"] == b["requests"] and b["requests"]["ok"] == 12
    # counts and AL over the whole run (the window's edges depend on timing), and per request
    run_a, run_b = a["server_counters"]["run_delta"], b["server_counters"]["run_delta"]
    assert run_a["drafts"] > 0 and run_a == run_b
    # the same per-request ALs, averaged in completion order (floating point may differ last bit)
    assert a["acceptance"]["per_request"] == pytest.approx(b["acceptance"]["per_request"])
    assert b["acceptance"]["acceptance_length"] is not None
    for s in (a, b):
        assert not any("buffered" in w for w in s["warnings"]), s["warnings"]
    # latencies within noise: the engine's step time dominates ITL on both paths
    ia, ib = a["latency_ms"]["itl"]["p50"], b["latency_ms"]["itl"]["p50"]
    assert 0.5 < ib / ia < 2.0, (ia, ib)
    man = json.loads((tmp_path / "tls" / "manifest.json").read_text())
    assert man["tls"]["verify"] is True


def test_nginx_buffering_on_is_warned(synthetic, tmp_path, certs, servers):
    a, b = _pair(synthetic, tmp_path, certs, servers, buffering=True)
    assert a["requests"] == b["requests"]
    assert not any("buffered" in w for w in a["warnings"])
    assert any("buffered upstream" in w for w in b["warnings"]), b["warnings"]
    recs = read_records(tmp_path / "tls" / "requests.jsonl")
    assert all(r["events"] > len(set(r["arrivals_ns"])) for r in recs)


def test_wrong_ca_is_one_clear_certificate_error(synthetic, tmp_path, certs, servers):
    ds = make_dataset(tmp_path / "p.jsonl", n=4)
    eng = synthetic(*engine_args(tmp_path / "t.jsonl"))
    ng = start_nginx(tmp_path / "nginx", certs, eng.url, buffering=False)
    servers.append(ng)
    url = f"https://127.0.0.1:{ng.port}"
    for extra in (["--ca-bundle", str(certs.wrong_ca)], []):  # a wrong CA; the system store
        r = loadgen_run(url, ds, tmp_path / "bad", *extra)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("loadgen run: TLS certificate of "
                                                       f"127.0.0.1:{ng.port} not trusted"), r.stderr
        assert "Traceback" not in r.stderr
    ok = loadgen_run(url, ds, tmp_path / "good", "--ca-bundle", str(certs.ca))
    assert ok.returncode == 0, ok.stderr
    assert summary(tmp_path / "good")["requests"]["ok"] == 4


def test_insecure_warns_and_is_in_the_manifest(synthetic, tmp_path, certs):
    ds = make_dataset(tmp_path / "p.jsonl", n=4)
    eng = synthetic(*engine_args(tmp_path / "t.jsonl"), "--tls-cert", str(certs.cert),
                    "--tls-key", str(certs.key))
    assert eng.url.startswith("https://")
    r = loadgen_run(eng.url, ds, tmp_path / "o", "--insecure")
    assert r.returncode == 0, r.stderr
    assert "WARNING: --insecure" in r.stderr
    man = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert man["tls"]["verify"] is False and man["config"]["insecure"] is True
    s = summary(tmp_path / "o")
    assert s["requests"]["ok"] == 4 and any("--insecure" in w for w in s["warnings"])


def test_https_proxy_connect_tunnel(synthetic, tmp_path, certs, servers):
    ds = make_dataset(tmp_path / "p.jsonl", n=4)
    eng = synthetic(*engine_args(tmp_path / "t.jsonl"), "--tls-cert", str(certs.cert),
                    "--tls-key", str(certs.key))
    px = start_tinyproxy(tmp_path / "px", auth=("puser", "proxy-pw-77"))
    servers.append(px)
    good = {"HTTPS_PROXY": f"http://puser:proxy-pw-77@127.0.0.1:{px.port}"}
    r = loadgen_run(eng.url, ds, tmp_path / "ok", "--ca-bundle", str(certs.ca), env=good)
    assert r.returncode == 0, r.stderr
    s = summary(tmp_path / "ok")
    assert s["requests"]["ok"] == 4
    assert s["acceptance"]["acceptance_length"] is not None  # scrapes went through it too
    log = (tmp_path / "px" / "tinyproxy.log").read_text()
    assert f"CONNECT 127.0.0.1:{eng.url.rsplit(':', 1)[1]}" in log
    # the same proxy with a wrong password refuses the tunnel: proof the run went through it
    bad = {"https_proxy": f"http://puser:wrong-pw-88@127.0.0.1:{px.port}"}
    r = loadgen_run(eng.url, ds, tmp_path / "bad", "--ca-bundle", str(certs.ca), env=bad)
    s = summary(tmp_path / "bad")
    assert s["requests"]["ok"] == 0 and s["requests"]["error"] == 4
    assert any("refused CONNECT" in reason for reason in s["error_reasons"]), s["error_reasons"]
    # NO_PROXY takes the endpoint's host out of the proxy
    r = loadgen_run(eng.url, ds, tmp_path / "np", "--ca-bundle", str(certs.ca),
                    env={**bad, "NO_PROXY": "localhost,127.0.0.1"})
    assert summary(tmp_path / "np")["requests"]["ok"] == 4, r.stderr
    for d in ("ok", "bad", "np"):
        for f in (tmp_path / d).iterdir():
            assert "proxy-pw-77" not in f.read_text() and "wrong-pw-88" not in f.read_text()


def test_http_proxy_absolute_form(synthetic, tmp_path, servers):
    ds = make_dataset(tmp_path / "p.jsonl", n=4)
    eng = synthetic(*engine_args(tmp_path / "t.jsonl"))
    px = start_tinyproxy(tmp_path / "px")
    servers.append(px)
    r = loadgen_run(eng.url, ds, tmp_path / "o", "--proxy", f"127.0.0.1:{px.port}")
    assert r.returncode == 0, r.stderr
    assert summary(tmp_path / "o")["requests"]["ok"] == 4
    log = (tmp_path / "px" / "tinyproxy.log").read_text()
    assert f"POST {eng.url}/v1/completions" in log
