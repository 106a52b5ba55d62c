"""RunConfig (loadgen/config): typed sections behind one table of flat names. The flat object a
real run's manifest records builds the same sections back and gives the same object; every
section field has exactly one flat name; a bad value is refused when the configuration is built
(or a value replaced), in one line naming its flag; a manifest is read as recorded."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.config import (
    FLAT,
    PER_CELL,
    SECTIONS,
    SWEEP_RUN_KEYS,
    LoadOptions,
    RunConfig,
    default,
)
from loadgen.config.run import RUN_EXIT_ONLY, TOP_LEVEL
from tests.synthetic_data import make_dataset

BASE = {"endpoint": "http://127.0.0.1:1", "engine": "vllm", "out": "o", "concurrency": 1,
        "num_requests": 1}


def test_a_real_runs_manifest_config_round_trips_through_the_sections(synthetic, tmp_path,
                                                                     loadgen_cli):
    """`loadgen run` with many non-default flags: the manifest's flat ``config`` builds the
    sections (checked) and ``to_flat`` gives it back, key for key; the sections hold what the
    flags said."""
    eng = synthetic("--protocol", "vllm", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=6)
    out = tmp_path / "out"
    proc = loadgen_cli(
        "run", "--endpoint", eng.url, "--engine", "vllm", "--dataset", ds, "--out", out,
        "--quiet", "--model", "m", "--request-rate", "40", "--arrival", "constant",
        "--max-concurrency", "3", "--num-requests", "4", "--warmup-requests", "1",
        "--output-len", "6", "--temperature", "0.7", "--top-p", "0.9", "--top-k", "40",
        "--seed-per-request", "--seed", "5", "--timeout", "30", "--probe-timeout", "4",
        "--retry-429", "2", "--keep-token-ids", "--no-multi-turn", "--keep-prefix-cache",
        "--header", "X-Team: secret-value", "--telemetry-interval", "2",
        "--no-category-windows")
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "manifest.json").read_text())["config"]
    flat = {k: v for k, v in config.items() if k in FLAT}
    assert set(FLAT) == set(flat)  # the manifest records every flat name
    cfg = RunConfig.build(**flat)
    assert cfg.to_flat() == flat
    assert RunConfig.from_manifest(config).to_flat() == flat
    assert (cfg.load.request_rate, cfg.load.arrival, cfg.load.max_concurrency,
            cfg.load.num_requests, cfg.load.warmup_requests, cfg.load.output_len,
            cfg.load.seed, cfg.load.multi_turn) == (40.0, "constant", 3, 4, 1, 6, 5, False)
    assert dataclasses.asdict(cfg.sampling) == {"temperature": 0.7, "top_p": 0.9, "top_k": 40,
                                                "seed_per_request": True}
    assert (cfg.endpoint.url, cfg.endpoint.engine, cfg.endpoint.model, cfg.endpoint.timeout_s,
            cfg.endpoint.probe_timeout_s, cfg.endpoint.retry_429) == (eng.url, "vllm", "m", 30.0,
                                                                      4.0, 2)
    assert cfg.endpoint.headers == ["X-Team: ***"]  # the value never written
    assert "secret-value" not in (out / "manifest.json").read_text()
    assert (cfg.measurement.keep_token_ids, cfg.measurement.keep_prefix_cache,
            cfg.measurement.telemetry_interval_s, cfg.measurement.category_windows) == (
        True, True, 2.0, False)
    # summary.json's sampling is the sampling section
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sampling"] == dataclasses.asdict(cfg.sampling)


def test_every_section_field_has_exactly_one_flat_name():
    targets = list(FLAT.values())
    assert len(targets) == len(set(targets))
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert targets.count((sec, f.name)) == 1, (sec, f.name)
    own = {f.name for f in dataclasses.fields(RunConfig)}
    assert own == set(SECTIONS) | set(TOP_LEVEL)
    assert {n for n, (sec, _) in FLAT.items() if sec is None} == set(TOP_LEVEL)
    assert len(FLAT) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values()) + len(
        TOP_LEVEL)
    # each flat name reaches its own field: a distinct value given through it is found there
    # and nowhere else, and comes back under its name
    marked = {name: f"v-{name}" for name in FLAT}
    cfg = RunConfig.from_manifest(marked)
    for name, (sec, attr) in FLAT.items():
        holder = cfg if sec is None else getattr(cfg, sec)
        assert str(getattr(holder, attr)) == f"v-{name}", name
    assert cfg.to_flat() == marked
    # every flat name is set per sweep cell, by a sweep's run:, or only by loadgen run
    assert not (PER_CELL & RUN_EXIT_ONLY or PER_CELL & SWEEP_RUN_KEYS
                or RUN_EXIT_ONLY & SWEEP_RUN_KEYS)
    assert set(FLAT) == PER_CELL | RUN_EXIT_ONLY | SWEEP_RUN_KEYS


def test_defaults_are_the_sections_defaults():
    assert default("arrival") == "poisson"
    assert LoadOptions.__dataclass_fields__["arrival"].default == default("arrival")
    assert default("timeout_s") == 600.0 and default("temperature") == 0.0
    assert default("workers_per_node") == 1 and default("warmup_requests") is None
    cfg = RunConfig.build(**BASE)
    flat = cfg.to_flat()
    for name in FLAT:
        if name in BASE:
            continue
        try:
            value = default(name)
        except KeyError:  # a list or dict: empty by default
            assert flat[name] in ([], {}), name
            continue
        assert flat[name] == value, name
    with pytest.raises(KeyError):
        default("endpoint")
    with pytest.raises(KeyError):
        default("no_such_option")


@pytest.mark.parametrize(("flat", "message"), [
    ({"concurrency": None}, "give exactly one of --concurrency or --request-rate"),
    ({"request_rate": 2.0}, "give exactly one of --concurrency or --request-rate"),
    ({"num_requests": None}, "give --num-requests or --duration"),
    ({"num_requests": 0}, "--num-requests must be >= 1, not 0"),
    ({"concurrency": 1.5}, "--concurrency must be a whole number, not 1.5"),
    ({"output_len": -2}, "--output-len must be >= 1, not -2"),
    ({"burstiness": 0}, "--burstiness must be a finite number > 0, not 0"),
    ({"time_scale": float("inf")}, "--time-scale must be a finite number > 0, not inf"),
    ({"arrival": "bursty"}, "--arrival must be one of poisson, constant, gamma, trace"),
    ({"openai_mode": "x"}, "--openai-mode must be one of completions, chat"),
    ({"timeout_s": -1}, "--timeout must be a finite number > 0, not -1"),
    ({"retry_429": -1}, "--retry-429 must be >= 0, not -1"),
    ({"temperature": -0.5}, "--temperature must be a finite number > 0, not -0.5"),
    ({"top_p": 2}, "--top-p must be in (0, 1], not 2"),
    ({"top_k": 0}, "--top-k must be >= 1, not 0"),
    ({"workers": 0}, "--workers must be a number >= 1 or 'auto'"),
    ({"workers": 2, "ray": "local"}, "give --workers or --ray"),
    ({"workers_per_node": 0}, "--workers-per-node must be >= 1, not 0"),
    ({"telemetry_interval_s": 0}, "--telemetry-interval must be a finite number > 0, not 0"),
    ({"telemetry": "http://h:1/m"}, "telemetry: a list of URLs"),
    ({"telemetry": ["ftp://h/m"]}, "--telemetry ftp://h/m: expected"),
    ({"engine_pid": 0}, "--engine-pid must be >= 1, not 0"),
])
def test_a_bad_value_is_refused_in_one_line_naming_its_flag(flat, message):
    with pytest.raises(ValueError) as built:
        RunConfig.build(**{**BASE, **flat})
    assert message in str(built.value) and "\n" not in str(built.value)
    # the same check when a value changes after construction
    with pytest.raises(ValueError) as replaced:
        RunConfig.build(**BASE).replace(**flat)
    assert str(replaced.value) == str(built.value)


def test_values_change_only_through_replace():
    cfg = RunConfig.build(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.load.num_requests = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.out = Path("x")  # type: ignore[misc]
    new = cfg.replace(num_requests=5, endpoint="http://127.0.0.1:2", out="p")
    assert (new.load.num_requests, new.endpoint.url, new.out) == (5, "http://127.0.0.1:2",
                                                                  Path("p"))
    assert (cfg.load.num_requests, cfg.endpoint.url, cfg.out) == (1, "http://127.0.0.1:1",
                                                                  Path("o"))
    assert new.sampling is cfg.sampling  # untouched sections are shared, not rebuilt
    with pytest.raises(TypeError, match="unknown run option 'num_request'"):
        cfg.replace(num_request=5)
    with pytest.raises(TypeError, match="unknown run option"):
        RunConfig.build(**BASE, concurency=2)
    # the flat object shares no list with the configuration
    flat = cfg.replace(headers=["A: b"]).to_flat()
    flat["headers"].append("C: d")
    assert cfg.replace(headers=["A: b"]).endpoint.headers == ["A: b"]


def test_a_manifest_is_read_as_recorded():
    """An older run directory stays readable: names the run added are left out, missing ones
    take their defaults, and a value a later version would refuse is read as it was."""
    config = {"endpoint": "http://127.0.0.1:1", "engine": "sglang", "out": "runs/x",
              "concurrency": 4, "num_requests": 10, "top_p": 1.5,
              "warmup_requests_effective": 4}
    cfg = RunConfig.from_manifest(config)
    assert (cfg.endpoint.engine, cfg.load.concurrency, cfg.sampling.top_p) == ("sglang", 4, 1.5)
    assert cfg.load.time_scale == 1.0 and cfg.endpoint.headers == []
    assert cfg.out == Path("runs/x")
    with pytest.raises(ValueError, match="--top-p"):
        RunConfig.build(**{k: v for k, v in config.items() if k in FLAT})


def test_the_cli_refuses_a_bad_value_in_one_line(tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    proc = subprocess.run(
        [sys.executable, "-m", "loadgen", "run", "--endpoint", "http://127.0.0.1:9",
         "--dataset", str(ds), "--out", str(tmp_path / "o"), "--top-p", "2"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "loadgen run: --top-p must be in (0, 1], not 2"
    assert not (tmp_path / "o").exists()
