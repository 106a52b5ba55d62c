"""``loadgen sweep``: a grid of runs over load x SD configuration x dataset.

Every cell is an ordinary run directory under ``cells/``; ``sweep.json``
(loadgen/results/sweepdir.py) is rewritten after each cell, so an interrupted sweep resumes where
it stopped and skips the cells already complete. Engines are launched (and relaunched between SD
configurations) through the same code as ``loadgen serve`` when the config has a ``serve``
section; otherwise each SD configuration names a fixed endpoint.

Config (YAML)::

    engine: llamacpp                 # the client protocol (default: serve.engine)
    serve:                           # optional: launch the engine per SD configuration
      engine: llamacpp
      model: null                    # engine default (SmolLM2 for llama.cpp / vLLM-CPU)
      extra_args: ["-np", "8", "-t", "1"]
    sd_configs:
      - {label: "off", baseline: true, spec: none}
      - {label: ngram-k4, spec: ngram, num_spec_tokens: 4}
      # with fixed endpoints instead: {label: vendor, endpoint: "https://...", baseline: true}
      # (spec / num_spec_tokens on a fixed endpoint say what it runs: the SD policy's K)
      # telemetry: [URL, ...] in an entry: its own exporters (else run: telemetry)
      # a fleet behind a gateway: its counters per replica or from Prometheus (docs/METRICS.md)
      #   {label: staging, endpoint: "https://gw", metrics: ["prometheus+http://prom:9090"],
      #    metrics_selector: '{job="vllm"}'}
    datasets:
      - {name: builtin, path: builtin}          # `builtin`: the built-in prompts (SmolLM2)
      - {name: qual, path: qual.jsonl}
    loads: {concurrency: [1, 2, 4, 8]}         # or {request_rate: [0.5, 1, 2]}
    run: {output_len: 128, num_requests: 64, warmup_requests: 4}   # no arrival: trace (refused)
    slo: "ttft_p99_ms=2000,tpot_p99_ms=50"     # optional: capacity planning
    repeats: 3                       # optional: R complete runs of every cell, interleaved
    repeat_order: alternate          # A B A B ... per (dataset, load); or random (seeded)
    repeat_seed: 0

With ``repeats`` > 1 every SD configuration's engine runs at once (launched at the start), so the
configurations can alternate cell by cell: A B A B at each load level, each cell a complete short
run with its own window; speedups and headline numbers get intervals across the repetitions
(loadgen/analysis/repeats.py). Idle engines cost little CPU; the host monitor counts them as
"others".
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from loadgen.analysis.lossless import lossless
from loadgen.analysis.repeats import headline_intervals, speedup_intervals
from loadgen.analysis.sdpolicy import sd_policy
from loadgen.analysis.sweeps import capacity, parse_slos, speedup_rows
from loadgen.config import SWEEP_RUN_KEYS
from loadgen.config.targets import parse_targets
from loadgen.results.sweepdir import REPEAT_ORDERS, Cell, Sweep, is_sweep_dir, load_sweep
from loadgen.results.telemetry import check_url


class SweepConfigError(ValueError):
    pass



def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "x"


def load_config(path: str | Path) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SweepConfigError(f"{path}: cannot read the sweep config: {exc}") from None
    if not isinstance(cfg, dict):
        raise SweepConfigError(f"{path}: a sweep config is a YAML mapping")
    return cfg


def metrics_of(sd: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """An SD configuration's metrics targets (``metrics``, ``metrics_selector``: its own, else
    the ``run:`` section's), a single URL taken as a list of one."""
    metrics = sd.get("metrics", run.get("metrics")) or []
    return {"metrics": [metrics] if isinstance(metrics, str) else list(metrics),
            "metrics_selector": sd.get("metrics_selector", run.get("metrics_selector"))}


def validate(cfg: dict[str, Any]) -> None:
    sds = cfg.get("sd_configs")
    if not isinstance(sds, list) or not sds:
        raise SweepConfigError("sd_configs: give at least one SD configuration")
    labels = [str(sd.get("label", "")) for sd in sds]
    if any(not lab for lab in labels) or len(set(labels)) != len(labels):
        raise SweepConfigError("sd_configs: every entry needs a unique label")
    if sum(bool(sd.get("baseline")) for sd in sds) > 1:
        raise SweepConfigError("sd_configs: at most one baseline (SD off)")
    for sd in sds:
        urls = sd.get("telemetry") or []
        if not isinstance(urls, list):
            raise SweepConfigError(f"sd_configs {sd.get('label')}: telemetry is a list of URLs")
        try:
            for url in urls:
                check_url(str(url))
        except ValueError as exc:
            raise SweepConfigError(f"sd_configs {sd.get('label')}: {exc}") from None
    if not cfg.get("serve") and any(not sd.get("endpoint") for sd in sds):
        raise SweepConfigError("without a serve section, every SD configuration needs an "
                               "endpoint")
    loads = cfg.get("loads") or {}
    if len(loads) != 1 or next(iter(loads)) not in ("concurrency", "request_rate"):
        raise SweepConfigError("loads: exactly one of concurrency: [...] or request_rate: [...]")
    if not cfg.get("datasets"):
        raise SweepConfigError("datasets: give at least one {name, path}")
    run = cfg.get("run") or {}
    if run.get("arrival") == "trace" or {"time_scale", "target_rate"} & set(run):
        raise SweepConfigError(
            "run: a sweep does not replay traces (arrival: trace, time_scale, target_rate): "
            "replay one with `loadgen run --arrival trace`, find the time scale within SLOs "
            "with `loadgen capacity --arrival trace`")
    unknown = set(cfg.get("run") or {}) - SWEEP_RUN_KEYS
    if unknown:
        raise SweepConfigError(
            f"run: unknown keys {sorted(unknown)} (known: {sorted(SWEEP_RUN_KEYS)})")
    if cfg.get("slo"):
        parse_slos(cfg["slo"])
    for sd in sds:
        try:
            parse_targets(*metrics_of(sd, cfg.get("run") or {}).values())
        except ValueError as exc:
            raise SweepConfigError(f"sd_configs {sd.get('label')}: {exc}") from None
    from loadgen.config import RunConfig

    (kind, levels), = loads.items()
    for level in levels if isinstance(levels, list) else [levels]:
        try:  # every run value checked before any cell starts
            run = dict(cfg.get("run") or {})
            if run.get("num_requests") is None and run.get("duration_s") is None:
                run["num_requests"] = 1  # the dataset's size, at run time
            RunConfig.build(endpoint="http://127.0.0.1", engine="vllm", out=Path("."),
                            **{kind: int(level) if kind == "concurrency" else level}, **run)
        except (TypeError, ValueError) as exc:
            raise SweepConfigError(f"loads/run: {exc}") from None
    repeats = cfg.get("repeats", 1)
    if not isinstance(repeats, int) or repeats < 1:
        raise SweepConfigError("repeats: a whole number >= 1")
    if cfg.get("repeat_order", "alternate") not in REPEAT_ORDERS:
        raise SweepConfigError(f"repeat_order: one of {', '.join(REPEAT_ORDERS)}")


def plan_cells(cfg: dict[str, Any]) -> list[Cell]:
    """Every cell, in the order it runs. Without repetitions: SD configuration by SD
    configuration (one engine at a time). With ``repeats`` R > 1: at each (dataset, load), R
    blocks holding one cell of every SD configuration, in the configurations' order
    (``alternate``: A B A B ...) or shuffled per block (``random``, seeded by
    ``repeat_seed``)."""
    (kind, levels), = cfg["loads"].items()
    repeats = int(cfg.get("repeats", 1))
    rng = random.Random(cfg.get("repeat_seed", 0))

    def cell(sd: dict[str, Any], ds: dict[str, Any], level: float, k: int) -> Cell:
        tag = f"c{level:g}" if kind == "concurrency" else f"r{level:g}"
        cid = f"{_slug(sd['label'])}__{tag}__{_slug(ds['name'])}"
        if repeats > 1:
            cid += f"__r{k}"
        return Cell(id=cid, sd=str(sd["label"]), dataset=str(ds["name"]),
                    load={kind: float(level)}, dir=f"cells/{cid}",
                    sd_config={k: v for k, v in sd.items() if k != "label"},
                    baseline=bool(sd.get("baseline")), repeat=k)

    if repeats == 1:
        return [cell(sd, ds, lv, 0) for sd in cfg["sd_configs"] for ds in cfg["datasets"]
                for lv in levels]
    cells = []
    for ds in cfg["datasets"]:
        for lv in levels:
            for k in range(repeats):
                block = list(cfg["sd_configs"])
                if cfg.get("repeat_order", "alternate") == "random":
                    rng.shuffle(block)
                cells.extend(cell(sd, ds, lv, k) for sd in block)
    return cells


def load_dataset(entry: dict[str, Any], base: Path, engine: str = "vllm",
                 run_opts: dict[str, Any] | None = None):
    """A dataset entry's prompts and file: ``builtin`` as ``loadgen run --dataset builtin`` reads
    it (loadgen/data/builtin.py ``read_dataset``), a relative path from the config's folder."""
    from loadgen.data.builtin import BUILTIN, BUILTIN_TOKENIZER, read_dataset
    from loadgen.engines import adapter_class

    path = str(entry.get("path", ""))
    p = Path(path)
    if path != BUILTIN and not p.is_absolute():
        p = base / p
    chat = engine == "openai" and (run_opts or {}).get("openai_mode") == "chat"
    return read_dataset(path if path == BUILTIN else p,
                        text=adapter_class(engine).accepts_text, chat=chat,
                        tokenizer=entry.get("tokenizer", BUILTIN_TOKENIZER))


def _own_telemetry(sd: dict[str, Any]) -> dict[str, Any]:
    """An SD configuration's own ``telemetry`` URLs (the exporters beside its GPUs, when its
    engine runs elsewhere than the others'), in place of ``run: telemetry``."""
    return {"telemetry": list(sd["telemetry"])} if sd.get("telemetry") else {}


def run_sweep(cfg: dict[str, Any], out: Path, config_dir: Path = Path("."),
              progress: bool = True,
              on_cell: Callable[[Cell, str], None] | None = None) -> Sweep:
    """Run every pending cell; returns the sweep with its analysis. ``on_cell(cell, "start" |
    "end")`` is called around each cell's run (tests use it to disturb chosen cells)."""
    from loadgen.config import RunConfig
    from loadgen.run.benchmark import run_benchmark

    validate(cfg)
    planned = plan_cells(cfg)
    if is_sweep_dir(out):
        sweep = load_sweep(out)
        done = {c.id: c for c in sweep.cells if c.status == "complete"
                and (out / c.dir / "summary.json").exists()}
        sweep.cells = [done.get(c.id, c) for c in planned]
        sweep.config = cfg
    else:
        sweep = Sweep(root=out, config=cfg, cells=planned)
    sweep.save()
    run_opts = dict(cfg.get("run") or {})
    if any(sd.get("baseline") for sd in cfg["sd_configs"]):
        run_opts.setdefault("keep_token_ids", True)  # for the lossless check
    engine = cfg.get("engine") or (cfg.get("serve") or {}).get("engine") or "vllm"
    datasets = {d["name"]: load_dataset(d, config_dir, engine, run_opts)
                for d in cfg["datasets"]}
    by_label = {str(sd["label"]): sd for sd in cfg["sd_configs"]}
    # one engine at a time without repetitions; all at once when cells alternate
    if int(cfg.get("repeats", 1)) == 1:
        batches = [[c for c in sweep.cells if c.sd == label] for label in by_label]
    else:
        batches = [list(sweep.cells)]
    for batch in batches:
        todo = [c for c in batch if c.status != "complete"]
        if not todo:
            continue
        with contextlib.ExitStack() as stack:
            endpoints = {}
            for label in dict.fromkeys(c.sd for c in todo):
                endpoints[label] = stack.enter_context(endpoint_for(cfg, by_label[label], out))
            for cell in todo:
                endpoint, describe = endpoints[cell.sd]
                prompts, ds_path = datasets[cell.dataset]
                opts = {**run_opts, **_own_telemetry(by_label[cell.sd]),
                        **metrics_of(by_label[cell.sd], run_opts)}
                if opts.get("num_requests") is None and opts.get("duration_s") is None:
                    opts["num_requests"] = len(prompts.records)
                print(f"loadgen sweep: cell {cell.id}", file=sys.stderr)
                if on_cell:
                    on_cell(cell, "start")
                try:
                    rc = RunConfig.build(endpoint=endpoint, engine=engine, out=out / cell.dir,
                                         concurrency=int(cell.load["concurrency"])
                                         if "concurrency" in cell.load else None,
                                         request_rate=cell.load.get("request_rate"), **opts)
                    summary = run_benchmark(rc, prompts, ds_path, argv=["loadgen", "sweep"],
                                            progress=progress, engine=describe(),
                                            overwrite=True)  # a cell re-run in its own dir
                except Exception as exc:  # one broken cell must not lose the others
                    cell.status, cell.error = "failed", f"{type(exc).__name__}: {exc}"
                    sweep.save()
                    continue
                finally:
                    if on_cell:
                        on_cell(cell, "end")
                if summary.interrupted:
                    cell.status = "interrupted"
                    sweep.save()
                    sweep.analysis = analyse(sweep)
                    sweep.save()
                    return sweep
                cell.status = "complete"
                sweep.save()
    sweep.analysis = analyse(sweep)
    sweep.save()
    return sweep


def analyse(sweep: Sweep) -> dict[str, Any]:
    rows = speedup_rows(sweep)
    out: dict[str, Any] = {"speedup": rows,
                           "speedup_intervals": speedup_intervals(sweep, rows),
                           "headline_intervals": headline_intervals(sweep)}
    out["lossless"] = lossless(sweep)
    out["sd_policy"] = sd_policy(sweep, rows)
    slo = sweep.config.get("slo")
    if slo:
        out["capacity"] = capacity(sweep, parse_slos(slo))
    return out


class endpoint_for:
    """Context: the endpoint of one SD configuration, launching its engine when configured."""

    def __init__(self, cfg: dict[str, Any], sd: dict[str, Any], out: Path) -> None:
        self.cfg, self.sd, self.out = cfg, sd, out
        self.proc = None

    def __enter__(self):
        serve = self.cfg.get("serve")
        if not serve:
            return self.sd["endpoint"], lambda: None
        from loadgen.launch.commands import SpecConfig
        from loadgen.launch.launcher import plan_launch

        sd = self.sd
        spec = SpecConfig(str(sd.get("spec", "none")), draft=sd.get("draft"),
                          num_spec_tokens=sd.get("num_spec_tokens"))
        plan = plan_launch(serve["engine"], serve.get("model"), spec, port=0,
                           python=serve.get("python"),
                           extra_args=[*serve.get("extra_args", []),
                                       *sd.get("extra_args", [])])
        log = self.out / "engines" / f"{_slug(sd['label'])}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"loadgen sweep: starting {plan.engine} for {sd['label']}", file=sys.stderr)
        self.proc = plan.process(log_path=log,
                                 health_timeout_s=float(serve.get("health_timeout", 600)))
        self.proc.__enter__()
        return plan.base_url, self.proc.describe

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.__exit__(*exc)
