"""Fleets on loopback: synthetic vLLM replicas (different acceptance rates, each with its truth
log) behind a real nginx (round-robin and least_conn), their counters read per replica or
through a real Prometheus server. The window's AL from counters is checked against the truth
logs' AL over the same requests, per replica too; a load-balanced /metrics is withheld with
its line; a restarted replica is handled on its own; an unreachable target is named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.analysis.gate import cross_check, gate, gated_counters
from loadgen.config import RunConfig
from loadgen.data.prompts import read_prompts
from loadgen.results.files import read_json
from loadgen.results.summary import AcceptanceSummary, Summary
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.process import read_truth
from tests.fleet_servers import host_port, start_gateway, start_prometheus
from tests.synthetic_data import make_dataset
from tests.test_client_synthetic import truth_al
from tests.wire_servers import free_port

RATES = ("0.9,0.8,0.7", "0.3,0.2,0.1", "0.6,0.5,0.4")
N = 36  # requests per run (three categories, twelve each)
SECRET = "s3cr3t-metrics-token"


def start_replicas(synthetic, tmp: Path, n: int, *extra: str, fault_on: int | None = None,
                   fault: str = "") -> list[tuple[str, Path]]:
    """``n`` synthetic vLLM replicas, replica i accepting at RATES[i]: (base URL, truth log)."""
    out = []
    for i in range(n):
        truth = tmp / f"truth{i}.jsonl"
        faults = ["--fault", fault] if fault_on == i else []
        eng = synthetic("--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "2",
                        "--accept-rates", RATES[i], "--model-name", "m", *faults, *extra)
        out.append((eng.url, truth))
    return out


def pooled_al(truths: list[Path]) -> float:
    """vLLM's counter AL over the truth logs' requests: 1 + accepted / verify steps with
    drafts, pooled over every request of every log."""
    steps = accepted = 0
    for t in truths:
        for r in read_truth(t):
            for d, a in zip(r["drafted_per_step"], r["accepted_per_step"], strict=True):
                if d:
                    steps += 1
                    accepted += a
    return 1 + accepted / steps


def drafted(truth: Path) -> int:
    return sum(sum(r["drafted_per_step"]) for r in read_truth(truth))


def run_cli(tmp: Path, endpoint: str, *flags: str) -> tuple[Summary, str]:
    ds = make_dataset(tmp / "ds.jsonl", n=N)
    out = tmp / "run"
    r = subprocess.run([sys.executable, "-m", "loadgen", "run", "--endpoint", endpoint,
                        "--engine", "vllm", "--model", "m", "--dataset", str(ds),
                        "--output-len", "24", "--concurrency", "4", "--num-requests", str(N),
                        "--warmup-requests", "0", "--category-windows", *flags,
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return Summary.from_dict(read_json(out / "summary.json")), r.stdout


def run_inproc(tmp: Path, endpoint: str, **kw) -> Summary:
    ds = make_dataset(tmp / "ds.jsonl", n=N)
    cfg = RunConfig.build(endpoint=endpoint, engine="vllm", out=tmp / "run", model="m",
                          output_len=24, concurrency=4, num_requests=N, warmup_requests=0, **kw)
    return run_benchmark(cfg, read_prompts(ds), ds, argv=["test"])


def test_two_replicas_per_replica_targets_equal_the_truth(synthetic, tmp_path):
    reps = start_replicas(synthetic, tmp_path, 2)
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps])
    try:
        s, stdout = run_cli(tmp_path, f"http://127.0.0.1:{gw.port}",
                            *(a for u, _ in reps for a in ("--metrics", u)))
    finally:
        gw.stop()
    truths = [t for _, t in reps]
    assert sum(len(read_truth(t)) for t in truths) == N
    assert all(read_truth(t) for t in truths)  # round-robin reached both
    # the sum of per-replica deltas is the fleet's AL over exactly these requests
    assert s.acceptance.acceptance_length == pytest.approx(pooled_al(truths), rel=0.02)
    assert s.acceptance.acceptance_length == pytest.approx(pooled_al(truths), rel=1e-9)
    assert s.fleet is not None and s.fleet.source == "targets"
    assert not s.fleet.unanswered and not s.fleet.withheld
    by_name = {r.name: r for r in s.fleet.replicas}
    total = sum(drafted(t) for t in truths)
    for url, truth in reps:
        rep = by_name[url + "/metrics"]
        assert rep.status == "ok" and rep.resets == 0
        assert rep.identity and rep.identity.startswith("process started")
        assert rep.acceptance_length == pytest.approx(pooled_al([truth]), rel=1e-9)
        assert rep.drafted_share == pytest.approx(drafted(truth) / total, rel=1e-9)
    assert s.acceptance.headline_source == "per_request" or s.acceptance.headline == (
        s.acceptance.acceptance_length)
    assert "per replica" in stdout  # the console's table, each replica's AL in it
    assert all(f"{r.acceptance_length:.3f}" in stdout for r in s.fleet.replicas)
    # loadgen summarize (the summary from the run directory) gives the same replicas
    r = subprocess.run([sys.executable, "-m", "loadgen", "summarize", str(tmp_path / "run"),
                        "--out", str(tmp_path / "exact.json"), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Summary.from_dict(read_json(tmp_path / "exact.json")).fleet == s.fleet
    # loadgen compare shows each side's replicas
    r = subprocess.run([sys.executable, "-m", "loadgen", "compare", str(tmp_path / "run"),
                        str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if "A per replica" in x)
    assert all(f"AL {rep.acceptance_length:.3f}" in line for rep in s.fleet.replicas)


@pytest.mark.parametrize(("balance", "per_request"), [("round_robin", True),
                                                      ("least_conn", False)])
def test_load_balanced_metrics_are_withheld_not_called_a_restart(synthetic, tmp_path, balance,
                                                                 per_request):
    extra = ("--per-request-spec-metrics", "summary") if per_request else ()
    reps = start_replicas(synthetic, tmp_path, 2, *extra)
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps], balance)
    try:  # scrapes every 50 ms: the gateway hands /metrics to one replica, then the other
        s = run_inproc(tmp_path, f"http://127.0.0.1:{gw.port}", scrape_interval_s=0.05,
                       category_windows=not per_request)
    finally:
        gw.stop()
    truths = [t for _, t in reps]
    lines = [w for w in s.warnings if "load balancer" in w]
    assert len(lines) == 1, s.warnings
    assert "--metrics" in lines[0] and "prometheus" in lines[0] and "not a restart" in lines[0]
    assert not any("restarted" in w for w in s.warnings)
    acc = s.acceptance
    assert acc.acceptance_length is None and acc.acceptance_rate is None
    assert acc.per_position_rate is None and s.server_counters.window_delta is None
    recs = [r for t in truths for r in read_truth(t)]
    if per_request:  # the exact per-request figure is the headline, and it is the truth
        assert acc.headline_source == "per_request"
        assert acc.headline == pytest.approx(truth_al("vllm", recs), rel=1e-9)
    else:  # nothing to quote: no AL at all, per category neither (never a wrong one)
        assert acc.headline is None
        assert all(c.acceptance_length is None and c.acceptance_rate is None
                   for c in s.categories.values())


def test_a_restarted_replica_is_handled_on_its_own(synthetic, tmp_path):
    reps = start_replicas(synthetic, tmp_path, 2, fault_on=1, fault="counter_reset:at=8")
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps])
    try:
        s = run_inproc(tmp_path, f"http://127.0.0.1:{gw.port}", scrape_interval_s=0.05,
                       metrics=[u for u, _ in reps], category_windows=True)
    finally:
        gw.stop()
    (ok_url, ok_truth), (bad_url, _) = reps
    by_name = {r.name: r for r in s.fleet.replicas}
    assert by_name[bad_url + "/metrics"].resets == 1
    assert by_name[ok_url + "/metrics"].resets == 0
    assert by_name[ok_url + "/metrics"].acceptance_length == pytest.approx(
        pooled_al([ok_truth]), rel=1e-9)
    restarted = [w for w in s.warnings if "went backwards" in w]
    assert restarted and all(f"from {bad_url}/metrics" in w and "restarted" in w
                             for w in restarted)
    assert not any("load balancer" in w for w in s.warnings)
    assert s.acceptance.acceptance_length is not None


def test_an_unreachable_target_is_named_and_the_others_summed(synthetic, tmp_path):
    reps = start_replicas(synthetic, tmp_path, 3)
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps], "least_conn")
    port = free_port()  # nothing listens there; its URL carries a credential never shown
    dead = f"http://127.0.0.1:{port}/metrics"
    # a host name with one address is scraped by its name (no expansion)
    by_name = reps[1][0].replace("127.0.0.1", "localhost") + "/metrics"
    try:
        s, stdout = run_cli(tmp_path, f"http://127.0.0.1:{gw.port}", "--metrics", reps[0][0],
                            "--metrics", by_name, "--metrics",
                            f"http://scraper:{SECRET}@127.0.0.1:{port}/metrics?token={SECRET}")
    finally:
        gw.stop()
    assert s.fleet.unanswered == [dead]
    assert any(dead in w and "did not answer" in w for w in s.warnings)
    assert s.acceptance.acceptance_length == pytest.approx(
        pooled_al([reps[0][1], reps[1][1]]), rel=1e-9)
    assert {r.name for r in s.fleet.replicas if r.status == "ok"} == {
        reps[0][0] + "/metrics", by_name}
    assert SECRET not in stdout
    for f in (tmp_path / "run").iterdir():
        assert SECRET not in f.read_text(), f.name


def test_prometheus_source_equals_the_truth_per_replica(synthetic, tmp_path):
    reps = start_replicas(synthetic, tmp_path, 2)
    prom = start_prometheus(tmp_path / "prom", [u for u, _ in reps])
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps])
    try:
        s, _ = run_cli(tmp_path, f"http://127.0.0.1:{gw.port}", "--metrics",
                       f"prometheus+http://127.0.0.1:{prom.port}", "--metrics-selector",
                       '{job="fleet"}')
    finally:
        gw.stop()
        prom.stop()
    truths = [t for _, t in reps]
    assert s.fleet.source == "prometheus" and not s.fleet.unanswered
    assert s.acceptance.acceptance_length == pytest.approx(pooled_al(truths), rel=0.02)
    by_name = {r.name: r for r in s.fleet.replicas}
    assert set(by_name) == {host_port(u) for u, _ in reps}
    for url, truth in reps:
        rep = by_name[host_port(url)]
        assert rep.identity == f"instance {host_port(url)}"
        assert rep.acceptance_length == pytest.approx(pooled_al([truth]), rel=0.02)


def test_bad_metrics_flags_are_one_line(tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    base = [sys.executable, "-m", "loadgen", "run", "--endpoint", "http://127.0.0.1:9",
            "--engine", "vllm", "--dataset", str(ds), "--out", str(tmp_path / "o")]
    for flags, needle in ((["--metrics", "ftp://x"], "--metrics"),
                          (["--metrics", "none", "--metrics", "http://a:1"], "alone"),
                          (["--metrics-selector", '{job="x"}'], "--metrics-selector"),
                          (["--metrics", "prometheus+http://h:9090", "--metrics-selector",
                            "job=x"], "selector")):
        r = subprocess.run([*base, *flags], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (flags, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr
        assert not (tmp_path / "o").exists()


def test_the_gate_withholds_impossible_figures():
    """The figures of the load-balanced run the gate exists for (a rate of 1.088)."""
    acc = AcceptanceSummary(source="server_counters:vllm", acceptance_length=3.678,
                            acceptance_rate=0.892, per_position_rate=[1.088, 0.919, 0.670],
                            drafts=100.0, draft_tokens=300.0, accepted_tokens=267.8)
    out = gate(acc, 3.0)
    assert set(out) == {"per_position_rate"} and "outside [0, 1]" in out["per_position_rate"]
    assert acc.per_position_rate is None and acc.acceptance_length == 3.678
    acc2 = AcceptanceSummary(acceptance_length=4.5, drafts=-1.0)
    out2 = gate(acc2, 3.0)
    assert {"drafts", "acceptance_length"} <= set(out2) and acc2.acceptance_length is None
    assert gate(AcceptanceSummary(acceptance_length=0.9), None) == {
        "acceptance_length": "acceptance_length 0.900 is below 1"}
    # a file written without the gate is gated when read back (compare, sweeps)
    acc3, why = gated_counters({"acceptance_length": 3.678, "acceptance_rate": 1.09,
                                "per_position_rate": [1.088, 0.919, 0.670]})
    assert acc3.acceptance_rate is None and "outside [0, 1]" in why["acceptance_rate"]
    assert acc3.acceptance_length == 3.678  # K = 3 from the per-position list: 3.678 <= 4
    # the cross-check: 3.678 vs 1.866 over 100 steps is far beyond 2% + 3 sigma
    assert "3.678" in cross_check(3.678, 1.866, 100.0, 3.0)
    assert cross_check(1.87, 1.866, 1000.0, 3.0) is None


def test_scaled_out_run_sums_the_replicas(synthetic, tmp_path):
    """--workers 2: the coordinator scrapes every target; all requests at once, so the window
    includes the drain and its counters cover exactly the truth logs' requests (20 ms steps:
    the sends take a small part of the requests' time)."""
    reps = start_replicas(synthetic, tmp_path, 2, "--step-base-ms", "20")
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps])
    ds = make_dataset(tmp_path / "ds.jsonl", n=12)
    try:
        r = subprocess.run([sys.executable, "-m", "loadgen", "run", "--endpoint",
                            f"http://127.0.0.1:{gw.port}", "--engine", "vllm", "--model", "m",
                            "--dataset", str(ds), "--output-len", "160", "--concurrency", "12",
                            "--num-requests", "12", "--warmup-requests", "0", "--workers", "2",
                            *(a for u, _ in reps for a in ("--metrics", u)),
                            "--out", str(tmp_path / "run"), "--quiet"],
                           capture_output=True, text=True, timeout=300)
    finally:
        gw.stop()
    assert r.returncode == 0, r.stderr
    s = Summary.from_dict(read_json(tmp_path / "run" / "summary.json"))
    truths = [t for _, t in reps]
    assert s.window.includes_drain
    assert s.acceptance.acceptance_length == pytest.approx(pooled_al(truths), rel=1e-9)
    assert {rep.name: rep.acceptance_length for rep in s.fleet.replicas} == pytest.approx(
        {u + "/metrics": pooled_al([t]) for u, t in reps}, rel=1e-9)


def test_a_sweep_carries_the_metrics_of_each_sd_configuration(synthetic, tmp_path):
    import yaml

    from loadgen.cli import main as cli_main
    from loadgen.results.sweepdir import load_sweep

    reps = start_replicas(synthetic, tmp_path, 2, "--step-base-ms", "20")  # as above: drain
    gw = start_gateway(tmp_path / "nginx", [u for u, _ in reps])
    make_dataset(tmp_path / "ds.jsonl", n=12)
    cfg = {"engine": "vllm",
           "sd_configs": [{"label": "fleet", "endpoint": f"http://127.0.0.1:{gw.port}",
                           "metrics": [u for u, _ in reps]}],
           "datasets": [{"name": "synth", "path": "ds.jsonl"}],
           "loads": {"concurrency": [12]},
           "run": {"output_len": 160, "num_requests": 12, "warmup_requests": 0, "model": "m"}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    try:
        rc = cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out",
                       str(tmp_path / "sweep"), "--quiet"])
    finally:
        gw.stop()
    assert rc == 0
    sweep = load_sweep(tmp_path / "sweep")
    (cell,) = sweep.cells
    s = sweep.summary(cell)
    assert s.fleet is not None and len(s.fleet.replicas) == 2 and s.window.includes_drain
    assert s.acceptance.acceptance_length == pytest.approx(
        pooled_al([t for _, t in reps]), rel=1e-9)
    # the report's conditions section: each replica's counters
    assert cli_main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Server counters per replica" in md
    assert all(f"{r.acceptance_length:.3f}" in md for r in s.fleet.replicas)
    bad = {**cfg, "sd_configs": [{**cfg["sd_configs"][0], "metrics": ["ftp://x"]}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert cli_main(["sweep", "--config", str(tmp_path / "bad.yaml"), "--out",
                     str(tmp_path / "bad")]) == 2


def test_sweep_flags_carry_the_metrics_targets():
    import argparse

    from loadgen.cli import sweep as sweep_cli
    from loadgen.sweep.runner import validate

    parser = argparse.ArgumentParser()
    sweep_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", "--endpoint", "http://gw:80", "--metrics", "http://a:1",
                              "--metrics", "prometheus+http://p:9090", "--metrics-selector",
                              '{job="vllm"}', "--out", "o", "--concurrency", "1"])
    cfg = sweep_cli.config_from_flags(args)
    (sd,) = cfg["sd_configs"]
    assert sd["metrics"] == ["http://a:1", "prometheus+http://p:9090"]
    assert sd["metrics_selector"] == '{job="vllm"}'
    validate(cfg)  # accepted as it is


def test_metrics_none_turns_scraping_off(synthetic, tmp_path):
    (url, _), = start_replicas(synthetic, tmp_path, 1)
    s = run_inproc(tmp_path, url, metrics=["none"])
    assert s.requests.ok == N
    assert s.acceptance.acceptance_length is None and s.acceptance.headline is None
    assert s.server_counters.window_delta is None and s.fleet is None
    assert not any("scrape" in w for w in s.warnings)


def _port_free_on(hosts: list[str]) -> int:
    import socket

    for _ in range(50):
        port = free_port()
        try:
            for h in hosts:
                with socket.socket() as s:
                    s.bind((h, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every address")


def test_a_dns_name_expands_to_one_target_per_address(tmp_path):
    """A host name with two addresses (a private /etc/hosts in a mount namespace of the run's
    own process: the machine's file is untouched) is scraped at each address, as Prometheus'
    DNS discovery would: the sum equals the truth of both replicas."""
    import shutil

    from loadgen.synthetic.process import SyntheticProcess

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (unshare -m)")
    hosts = ["127.0.0.2", "127.0.0.3"]
    port = _port_free_on(hosts)
    engines, truths, gw = [], [], None
    try:
        for i, h in enumerate(hosts):
            truth = tmp_path / f"truth{i}.jsonl"
            engines.append(SyntheticProcess(
                ["--protocol", "vllm", "--truth-log", str(truth), "--step-base-ms", "2",
                 "--accept-rates", RATES[i], "--model-name", "m", "--port", str(port)],
                host=h).start())
            truths.append(truth)
        gw = start_gateway(tmp_path / "nginx", [e.url for e in engines])
        etc_hosts = tmp_path / "hosts"
        etc_hosts.write_text(Path("/etc/hosts").read_text()
                             + "".join(f"{h} fleet-replicas\n" for h in hosts))
        ds = make_dataset(tmp_path / "ds.jsonl", n=N)
        run = [sys.executable, "-m", "loadgen", "run", "--endpoint",
               f"http://127.0.0.1:{gw.port}", "--engine", "vllm", "--model", "m", "--dataset",
               str(ds), "--output-len", "24", "--concurrency", "4", "--num-requests", str(N),
               "--warmup-requests", "0", "--category-windows", "--metrics",
               f"http://fleet-replicas:{port}", "--out", str(tmp_path / "run"), "--quiet"]
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f'mount --bind "{etc_hosts}" /etc/hosts && exec "$@"', "sh", *run],
                           capture_output=True, text=True, timeout=300)
    finally:
        if gw is not None:
            gw.stop()
        for e in engines:
            e.stop()
    assert r.returncode == 0, r.stderr
    s = Summary.from_dict(read_json(tmp_path / "run" / "summary.json"))
    assert sorted(rep.name for rep in s.fleet.replicas) == [
        f"http://{h}:{port}/metrics" for h in hosts]
    assert s.acceptance.acceptance_length == pytest.approx(pooled_al(truths), rel=1e-9)
    for h, t in zip(hosts, truths, strict=True):
        rep = next(x for x in s.fleet.replicas if h in x.name)
        assert rep.acceptance_length == pytest.approx(pooled_al([t]), rel=1e-9)
