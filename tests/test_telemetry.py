"""Server telemetry (``--telemetry``) against the synthetic engine's DCGM exporter, whose power
model is known in closed form (docs/SYNTHETIC.md, "DCGM exporter"): energy over the window equal
to the model over the engine's own tokens (truth log), energy per output token, mean and peak
power per GPU, a target that does not answer, a real node exporter and a real Prometheus server
on loopback, and a sweep's "SD saves x% energy per token [interval]"."""

from __future__ import annotations

import bisect
import itertools
import json
import math
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from loadgen.analysis.repeats import fmt_energy
from loadgen.cli import main as cli_main
from loadgen.report import data
from loadgen.report.conditions import conditions_section, repeats_section
from loadgen.results.summary import Summary
from loadgen.results.sweepdir import load_sweep
from loadgen.synthetic.process import read_truth
from tests.synthetic_data import make_dataset

GPUS, IDLE_W, J_PER_TOKEN, AVERAGE_S = 2, 40.0, 0.05, 1.0
DCGM = ["--dcgm", "--dcgm-gpus", str(GPUS), "--dcgm-idle-w", str(IDLE_W),
        "--dcgm-joules-per-token", str(J_PER_TOKEN), "--dcgm-average-s", str(AVERAGE_S)]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, url: str, *extra: str, name: str = "run",
        windows: str = "--no-category-windows") -> tuple[int, Path]:
    ds = tmp_path / "ds.jsonl"
    if not ds.exists():
        make_dataset(ds, n=40)
    out = tmp_path / name
    rc = cli_main(["run", "--endpoint", url, "--engine", "vllm", "--dataset", str(ds),
                   "--output-len", "64", "--concurrency", "4", "--num-requests", "40",
                   windows, "--telemetry-interval", "0.2", "--out", str(out),
                   *extra])
    return rc, out


class Tokens:
    """The engine's output tokens from the truth log: every chunk's send stamp and count."""

    def __init__(self, truth: Path) -> None:
        pairs = sorted((t, n) for r in read_truth(truth)
                       for t, n in zip(r["chunk_send_ns"], r["chunk_tokens"], strict=True))
        self.stamps = [t for t, _ in pairs]
        self.cum = [0, *itertools.accumulate(n for _, n in pairs)]

    def between(self, a_ns: float, b_ns: float) -> int:
        """Tokens sent in (a, b]."""
        return (self.cum[bisect.bisect_right(self.stamps, b_ns)]
                - self.cum[bisect.bisect_right(self.stamps, a_ns)])

    def max_trailing(self, span_ns: int) -> int:
        """The most tokens sent in any (t - span, t]."""
        best = 0
        for j, t in enumerate(self.stamps):
            i = bisect.bisect_right(self.stamps, t - span_ns)
            best = max(best, self.cum[j + 1] - self.cum[i])
        return best


def test_energy_per_token_equals_the_exporters_model(synthetic, tmp_path, capsys):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--per-request-spec-metrics", "summary",
                    "--truth-log", str(truth), *DCGM)
    dead = f"http://probe:s3cret@127.0.0.1:{free_port()}/metrics?token=t0ken"
    rc, out = run(tmp_path, eng.url, "--telemetry", eng.url + "/dcgm/metrics",
                  "--telemetry", dead)
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    tel = s.telemetry
    assert tel is not None
    # the target that does not answer is named (without its secrets); nothing else is lost
    shown = f"http://127.0.0.1:{dead.split(':')[3].split('/')[0]}/metrics"
    assert list(tel.unanswered) == [shown] and "ConnectError" in tel.unanswered[shown]
    assert any(shown in w and "did not answer" in w for w in s.warnings)
    assert s.requests.ok == 40 and s.acceptance.per_request.token_weighted is not None
    assert s.acceptance.acceptance_length is not None and s.throughput.output_tokens_per_s
    for text in (printed.out, printed.err, *(p.read_text() for p in out.iterdir())):
        assert "s3cret" not in text and "t0ken" not in text

    # Energy of each GPU over the span between the edge scrapes, against the model over the
    # engine's own tokens: the exporter read its clock within each edge's round trip (± h), so
    # the truth lies between the model over the span shrunk and grown by h at each edge.
    assert len(tel.gpus) == GPUS and {g.power_source for g in tel.gpus} == {"energy_counter"}
    tokens = Tokens(truth)
    a, b, h = tel.start_ns, tel.end_ns, tel.edge_uncertainty_s * 1e9
    span = (b - a) / 1e9
    assert span == pytest.approx(tel.span_s)
    lo = IDLE_W * (span - 2 * h / 1e9) + J_PER_TOKEN / GPUS * tokens.between(a + h, b - h)
    hi = IDLE_W * (span + 2 * h / 1e9) + J_PER_TOKEN / GPUS * tokens.between(a - h, b + h)
    for g in tel.gpus:
        # (the counter is served in mJ with 3 decimals: each reading within 5e-7 J)
        assert lo - 1e-5 <= g.energy_j <= hi + 1e-5, (lo, g.energy_j, hi)
        assert g.mean_power_w == pytest.approx(g.energy_j / span)
        assert g.uuid and g.model == "NVIDIA Synthetic" and g.energy_resets == 0
        assert g.repeated_samples == 0
    assert not [w for w in s.warnings if w.startswith("telemetry:")]
    assert tel.power_w == pytest.approx(sum(g.mean_power_w for g in tel.gpus))

    # Energy per output token = mean power / output tokens per second, and the model's
    # GPUS x IDLE_W / tokens/s + J_PER_TOKEN; the tolerance: the engine's token rate over the
    # span (between its bounds from the truth log) against the client's over the window, and
    # the idle energy of the edges' uncertainty.
    tps = s.throughput.output_tokens_per_s
    assert tel.energy_per_token_j == pytest.approx(tel.power_w / tps, rel=1e-12)
    assert tel.energy_j == pytest.approx(tel.power_w * s.window.duration_s, rel=1e-12)
    model = GPUS * IDLE_W / tps + J_PER_TOKEN
    rates = [tokens.between(a + h, b - h) / span, tokens.between(a - h, b + h) / span]
    tol = (J_PER_TOKEN * max(abs(r / tps - 1) for r in rates)
           + GPUS * IDLE_W * 2 * h / 1e9 / span / tps + 1e-9)
    assert tol < 0.2 * model  # the check below means something
    assert tel.energy_per_token_j == pytest.approx(model, abs=tol)

    # Peak power: above idle (tokens flowed in every averaging period of the window), at most
    # the model's highest trailing-average power over the whole run
    top = IDLE_W + J_PER_TOKEN / GPUS * tokens.max_trailing(int(AVERAGE_S * 1e9)) / AVERAGE_S
    for g in tel.gpus:
        assert IDLE_W < g.peak_power_w <= top + 1e-6
        assert g.samples >= 3 and 0 < g.utilization_mean_pct <= 100
    assert tel.peak_power_w <= GPUS * top + 1e-6
    assert 0 < tel.gpu_utilization_pct <= 100
    assert "energy per output token" in printed.out and "no answer" in printed.out


def test_power_from_samples_without_an_energy_counter(synthetic, tmp_path):
    """No energy counter (--dcgm-no-energy) and no energy per token in the model: power is the
    idle power exactly, so its sampled mean and peak are exact, and so is energy per token."""
    eng = synthetic("--protocol", "vllm", "--dcgm", "--dcgm-gpus", "3", "--dcgm-idle-w", "55",
                    "--dcgm-joules-per-token", "0", "--dcgm-no-energy")
    # category windows (the engine sends no per-request SD): one span per category
    rc, out = run(tmp_path, eng.url, "--telemetry", eng.url + "/dcgm/metrics",
                  windows="--category-windows")
    assert rc == 0
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    tel = s.telemetry
    assert tel.energy_source == "power_samples" and len(tel.gpus) == 3
    assert s.window.category_windows == 3
    assert tel.span_s < (tel.end_ns - tel.start_ns) / 1e9  # the gaps between windows left out
    assert tel.energy_j == pytest.approx(165.0 * s.window.duration_s, rel=1e-9)
    for g in tel.gpus:
        assert g.power_source == "power_samples"
        assert g.mean_power_w == pytest.approx(55.0, rel=1e-9)
        assert g.peak_power_w == pytest.approx(55.0, rel=1e-9)
    assert tel.power_w == pytest.approx(165.0, rel=1e-9)
    assert tel.energy_per_token_j == pytest.approx(165.0 / s.throughput.output_tokens_per_s,
                                                   rel=1e-9)
    # computed again by `loadgen summarize` from the samples kept in facts.json
    assert cli_main(["summarize", str(out)]) == 0
    again = json.loads((out / "summary.recomputed.json").read_text())
    assert again == json.loads((out / "summary.json").read_text())
    # the report's conditions section shows the GPUs
    cond, per_gpu = conditions_section(data.load(out)).tables
    (r,) = cond.rows
    cells = {c: r[i].text for i, c in enumerate(cond.columns)}
    assert cells["J per token"] == f"{tel.energy_per_token_j:,.4f}"
    assert cells["GPU power W (mean / peak)"] == "165.0 / 165.0"
    assert [[x.text for x in row[2:5]] for row in per_gpu.rows] == [
        ["55.0", "55.0", "power_samples"]] * 3
    # a scaled-out run: the coordinator scrapes at the workers' common start and end
    rc, out = run(tmp_path, eng.url, "--telemetry", eng.url + "/dcgm/metrics", "--workers", "2",
                  name="scaled")
    assert rc == 0
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    assert s.telemetry.power_w == pytest.approx(165.0, rel=1e-9)
    assert s.telemetry.energy_per_token_j == pytest.approx(
        165.0 / s.throughput.output_tokens_per_s, rel=1e-9)


def _wait_for(fn, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = fn()
            if got:
                return got
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} not ready within {timeout_s:g} s")


@pytest.fixture
def started(tmp_path):
    """Factory of long-running child processes, each stopped at teardown."""
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], log: str) -> subprocess.Popen:
        fh = (tmp_path / log).open("w")
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=15)


@pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("prometheus-node-exporter")),
                    reason="Debian's prometheus and prometheus-node-exporter (scripts/setup.sh)")
def test_through_prometheus_and_a_node_exporter(synthetic, started, tmp_path):
    """The DCGM series read through a real Prometheus server (1 s scrapes), and a real node
    exporter's CPU counters read directly. The model's power is constant (idle, no energy per
    token): the power samples read through Prometheus give it exactly, and the energy counter
    over Prometheus' own sample times gives it up to when in each scrape the exporter read its
    clock (Prometheus stamps the scrape's start)."""
    eng = synthetic("--protocol", "vllm", "--per-request-spec-metrics", "summary", "--dcgm",
                    "--dcgm-gpus", "2", "--dcgm-idle-w", "70", "--dcgm-joules-per-token", "0")
    node_port, prom_port = free_port(), free_port()
    started(["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{node_port}",
             "--collector.disable-defaults", "--collector.cpu"], "node.log")
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "scrape_configs": [{"job_name": "dcgm", "metrics_path": "/dcgm/metrics",
                               "static_configs": [{"targets": [eng.url.split("//")[1]]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    started(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus.log")
    prom = f"http://127.0.0.1:{prom_port}"
    _wait_for(lambda: len(httpx.get(f"{prom}/api/v1/query", params={
        "query": "DCGM_FI_DEV_POWER_USAGE"}).json()["data"]["result"]) == 2, "Prometheus")
    node = f"http://127.0.0.1:{node_port}/metrics"
    _wait_for(lambda: httpx.get(node).status_code == 200, "node exporter")
    # a window of several of Prometheus' scrape intervals (the edges are up to one old)
    rc, out = run(tmp_path, eng.url, "--telemetry", f"prometheus+{prom}", "--telemetry", node,
                  "--num-requests", "80")
    assert rc == 0
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    tel = s.telemetry
    assert tel.unanswered == {}
    assert not [w for w in s.warnings if w.startswith("telemetry:")]  # no repeats counted
    host = eng.url.split("//")[1]
    assert sorted(g.device for g in tel.gpus) == [f"{host}/synthetic/gpu0",
                                                  f"{host}/synthetic/gpu1"]
    # how late in its scrape the exporter can have read its clock, and the time the energy
    # counter's kept segments cover (at least the span less a scrape interval at each edge)
    late = float(httpx.get(f"{prom}/api/v1/query", params={
        "query": "max_over_time(scrape_duration_seconds[5m])"}).json()["data"]["result"][0]
        ["value"][1])
    covered = tel.span_s - 2 * 1.0
    assert covered > 0.5
    for g in tel.gpus:
        assert g.target == f"prometheus+{prom}" and g.power_source == "energy_counter"
        assert g.sampled_mean_power_w == pytest.approx(70.0, rel=1e-9)
        assert g.mean_power_w == pytest.approx(70.0, rel=2 * late / covered)
    # node exporter: this host's CPUs (as /proc/stat lists them), busy while the run ran
    cpus = sum(1 for line in Path("/proc/stat").read_text().splitlines()
               if line.startswith("cpu") and line[3:4].isdigit())
    (n,) = tel.nodes
    assert n.node == f"127.0.0.1:{node_port}" and n.cpus == cpus
    assert 0 < n.busy_cores <= cpus + 0.05
    assert n.utilization == pytest.approx(n.busy_cores / cpus)


def test_sweep_energy_per_token_sd_against_baseline(synthetic, tmp_path, capsys):
    """Two repetitions of SD on and off, each engine with its own exporter: every repetition's
    energy ratio is the quotient of its two runs' energy per token, the sweep's is their
    geometric mean with an interval, printed as "SD saves x% energy per token [low, high]"."""
    timing = ["--step-base-ms", "4", "--per-token-ms", "0.2", "--accept-rates", "0.8,0.6,0.4"]
    sd = synthetic("--protocol", "vllm", *timing, "--per-request-spec-metrics", "summary",
                   *DCGM)
    off = synthetic("--protocol", "vllm", *timing, "--no-spec", *DCGM)
    make_dataset(tmp_path / "ds.jsonl", n=8)
    cfg = {"engine": "vllm",
           "sd_configs": [{"label": "off", "baseline": True, "endpoint": off.url,
                           "telemetry": [off.url + "/dcgm/metrics"]},
                          {"label": "sd", "endpoint": sd.url,
                           "telemetry": [sd.url + "/dcgm/metrics"]}],
           "datasets": [{"name": "synth", "path": "ds.jsonl"}],
           "loads": {"concurrency": [1]}, "repeats": 2,
           "run": {"output_len": 24, "num_requests": 8, "warmup_requests": 1,
                   "telemetry_interval_s": 0.25}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "sweep"
    assert cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    sweep = load_sweep(out)
    by = {(c.sd, c.repeat): sweep.summary(c) for c in sweep.cells}
    ratios = []
    for r in (x for x in sweep.analysis["speedup"] if x["category"] == "all"):
        e_sd = by[("sd", r["repeat"])].telemetry.energy_per_token_j
        e_off = by[("off", r["repeat"])].telemetry.energy_per_token_j
        assert r["energy_ratio"] == pytest.approx(e_sd / e_off)
        # J/token = idle power / tokens per s + a constant: SD saves energy where it is faster
        if abs(r["speedup_output_tokens_per_s"] - 1) > 0.05:
            assert (r["energy_ratio"] < 1) == (r["speedup_output_tokens_per_s"] > 1)
        ratios.append(r["energy_ratio"])
    (row,) = [r for r in sweep.analysis["speedup_intervals"] if r["category"] == "all"]
    assert row["energy_ratio"] == pytest.approx(math.exp(sum(map(math.log, ratios)) / 2))
    assert row["energy_ratio_low"] < row["energy_ratio"] < row["energy_ratio_high"]
    assert row["energy_verdict"] in ("saves", "costs", "no clear difference")
    word = "saves" if row["energy_ratio"] <= 1 else "costs"
    assert f"SD {word} {abs(1 - row['energy_ratio']):.1%}" in printed
    heads = {h["sd"]: h for h in sweep.analysis["headline_intervals"]}
    assert heads["sd"]["energy_per_token_j"]["n"] == 2
    # the report's repetitions section has the comparison, its conditions section each run's
    inp = data.load(out)
    (energy,) = [t for t in repeats_section(inp).tables if t.title.startswith("Energy")]
    assert [v.text for v in energy.rows[0]][4] == fmt_energy(row)
    cond = conditions_section(inp).tables[0]
    j = cond.columns.index("J per token")
    assert sorted(r[j].text for r in cond.rows) == sorted(
        f"{x.telemetry.energy_per_token_j:,.4f}" for x in by.values())


def test_an_exporter_that_collects_less_often_is_named(synthetic, tmp_path):
    """An exporter that refreshes its values every 1.5 s (as dcgm-exporter every -c ms) sampled
    every 0.2 s serves the same energy reading several times: counted, and a warning says why
    and what to do."""
    eng = synthetic("--protocol", "vllm", "--per-request-spec-metrics", "summary", *DCGM,
                    "--dcgm-collect-s", "1.5")
    rc, out = run(tmp_path, eng.url, "--telemetry", eng.url + "/dcgm/metrics")
    assert rc == 0
    s = Summary.from_dict(json.loads((out / "summary.json").read_text()))
    for g in s.telemetry.gpus:
        assert 0 < g.repeated_samples < g.samples
    (w,) = {w.split(":", 1)[0] for w in s.warnings if "repeated the previous energy" in w}
    assert w == "telemetry" and any("-c 1000" in x for x in s.warnings)


def test_bad_telemetry_urls_are_one_line(tmp_path, capsys):
    for argv in (["run", "--endpoint", "http://127.0.0.1:9", "--dataset", "x.jsonl",
                  "--telemetry", "ftp://user:pw@host/metrics", "--out", str(tmp_path / "o")],
                 ["run", "--endpoint", "http://127.0.0.1:9", "--dataset", "x.jsonl",
                  "--telemetry", "http://h:port/metrics", "--out", str(tmp_path / "o")]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("loadgen run: --telemetry ") and err.count("\n") == 1
        assert "pw" not in err and not (tmp_path / "o").exists()
    bad = {"engine": "vllm", "datasets": [{"name": "d", "path": "d.jsonl"}],
           "loads": {"concurrency": [1]},
           "sd_configs": [{"label": "a", "endpoint": "http://127.0.0.1:9",
                           "telemetry": ["gopher://x"]}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(bad))
    assert cli_main(["sweep", "--config", str(tmp_path / "s.yaml"), "--out",
                     str(tmp_path / "sw")]) == 2
    assert "sd_configs a: --telemetry gopher://x" in capsys.readouterr().err
    # `loadgen sweep --telemetry` reaches every cell's run configuration, checked up front
    assert cli_main(["sweep", "--endpoint", "http://127.0.0.1:9", "--telemetry", "ftp://x",
                     "--out", str(tmp_path / "sw2")]) == 2
    assert "--telemetry ftp://x" in capsys.readouterr().err
