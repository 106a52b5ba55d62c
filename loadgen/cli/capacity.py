"""``loadgen capacity``: the largest request rate or concurrency at which every SLO holds, or with
``--arrival trace`` the largest time scale of a trace's schedule, found by search
(loadgen/capacity/), for fixed endpoints or launched engines, one or several SD
configurations."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from loadgen.capacity.output import DEFAULT_HEADROOM
from loadgen.capacity.search import UNITS, SearchSpec
from loadgen.cli.run import add_timeouts
from loadgen.cli.sweep import spec_tokens_arg
from loadgen.config import ARRIVALS, default
from loadgen.engines import ENGINES
from loadgen.launch.commands import LAUNCHABLE_ENGINES

PROG = "loadgen capacity"
OUTPUT_LEN = 128  # --output-len without a trace (a trace's rows carry their own lengths)


def register(commands: argparse._SubParsersAction) -> None:
    d = SearchSpec()
    p = commands.add_parser(
        "capacity", help="the largest load within SLOs, found by search (with replicas and "
                         "SD's capacity gain)",
        description="Bracket then bisect the load (request rate, open loop; or concurrency, "
                    "closed loop; or with --arrival trace the time scale of the trace's "
                    "schedule) until the largest level meeting every --slo is known to "
                    "--precision; repeat the levels at the boundary; cut steps on an "
                    "over-saturated server. Writes capacity.json and capacity.png to --out.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the capacity search already in --out")
    p.add_argument("--search", choices=list(UNITS),
                   help="rate: open loop, requests/s; concurrency: closed loop (the default); "
                        "time_scale: a trace's schedule S times faster (the only one, and the "
                        "default, with --arrival trace)")
    p.add_argument("--slo", required=True,
                   help="e.g. ttft_p99_ms=2000,tpot_p99_ms=50[,good_pct=95] "
                        "(docs/METRICS.md, 'Capacity')")
    p.add_argument("--precision", type=float, default=d.precision,
                   help="stop when (hi - lo) / lo is at most this (default 0.1)")
    p.add_argument("--confirm", type=int, default=d.confirm,
                   help="runs of each of the two levels at the boundary (default 2)")
    p.add_argument("--max-runs", type=int, default=d.max_runs,
                   help="probes per configuration at most")
    p.add_argument("--max-time", type=float, help="seconds per configuration at most")
    p.add_argument("--start", type=float, default=d.start,
                   help="first level probed (with a trace: a time scale; 1 = as recorded)")
    p.add_argument("--max-level", type=float, default=d.max_level,
                   help="highest level bracketing goes to")
    p.add_argument("--target-rate", type=float, metavar="R",
                   help="replicas needed for R (in the search's unit; with a trace: R "
                        "requests/s mean of the trace's shape)")
    p.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM,
                   help="spare capacity per replica with --target-rate (default 0.2)")
    tgt = p.add_argument_group("what is measured")
    tgt.add_argument("--endpoint", action="append", default=[], metavar="[LABEL=]URL",
                     help="a fixed endpoint (repeatable: one SD configuration each)")
    tgt.add_argument("--baseline", metavar="LABEL",
                     help="the fixed endpoint with SD off (capacity gain is against it)")
    tgt.add_argument("--serve", choices=LAUNCHABLE_ENGINES,
                     help="launch this engine once per --spec value")
    tgt.add_argument("--spec", default="none,ngram",
                     help="SD methods with --serve, comma-separated; 'none' is the baseline")
    tgt.add_argument("--num-spec-tokens", type=spec_tokens_arg, metavar="K[,K...]",
                     help="draft length; several: one SD configuration per K")
    tgt.add_argument("--engine", choices=ENGINES, help="client protocol (default: --serve's)")
    tgt.add_argument("--model", help="model name to send")
    run = p.add_argument_group("each probe (an ordinary run)")
    run.add_argument("--dataset", default="builtin", help="prompt file, or 'builtin'")
    run.add_argument("--output-len", type=int,
                     help=f"default {OUTPUT_LEN}; with --arrival trace each row's own length")
    run.add_argument("--num-requests", type=int,
                     help="per probe (default: max(32, 4 x concurrency) or 15 s of arrivals); "
                          "with --arrival trace: the slice replayed, the file's first N rows")
    run.add_argument("--duration", type=float,
                     help="seconds of measured load per probe; with --arrival trace: at "
                          "least this long, in whole passes of the slice (default 15)")
    run.add_argument("--warmup-requests", type=int, default=default("warmup_requests"))
    run.add_argument("--arrival", choices=ARRIVALS, default=default("arrival"))
    add_timeouts(run)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=main)


def _targets(args: argparse.Namespace) -> list[dict]:
    """The SD configurations: sweep-style entries (label, baseline, endpoint or spec)."""
    from loadgen.cli.sweep import serve_sd_configs

    if args.serve and args.endpoint:
        raise ValueError("give --endpoint or --serve, not both")
    if args.serve:
        return serve_sd_configs(args.spec, args.num_spec_tokens)
    if not args.endpoint:
        raise ValueError("give --endpoint URL (repeatable) or --serve ENGINE")
    out = []
    for i, text in enumerate(args.endpoint):
        label, eq, url = text.partition("=")
        if not eq or "://" in label:
            label, url = f"endpoint{i + 1}" if len(args.endpoint) > 1 else "endpoint", text
        out.append({"label": label, "endpoint": url, "baseline": label == args.baseline})
    labels = [sd["label"] for sd in out]
    if len(set(labels)) != len(labels):
        raise ValueError("every --endpoint needs its own LABEL=")
    if args.baseline and args.baseline not in labels:
        raise ValueError(f"--baseline {args.baseline}: no --endpoint has that label")
    return out


def main(args: argparse.Namespace) -> int:
    from loadgen.capacity.probe import ProbeSignals
    from loadgen.client.stop import Interrupted

    with ProbeSignals(PROG) as signals:
        try:
            return _main(args, signals)
        except (Interrupted, KeyboardInterrupt):
            print(f"{PROG}: interrupted; the probes so far are in {args.out}/probes",
                  file=sys.stderr)
            return signals.exit_code
        except ValueError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2


def _main(args: argparse.Namespace, signals) -> int:
    import contextlib

    from loadgen.capacity import output
    from loadgen.capacity.probe import ProbeFailed, Prober
    from loadgen.capacity.search import search
    from loadgen.capacity.slo import parse_slo_set
    from loadgen.capacity.trace import trace_slice
    from loadgen.config import RunConfig
    from loadgen.data.prompts import PromptFileError
    from loadgen.results.files import write_json
    from loadgen.run.benchmark import RunFailed
    from loadgen.sweep.runner import endpoint_for, load_dataset

    slos = parse_slo_set(args.slo)
    trace = args.arrival == "trace"
    kind = args.search or ("time_scale" if trace else "concurrency")
    if trace and kind != "time_scale":
        raise ValueError(f"--arrival trace searches the time scale of the trace's schedule "
                         f"(--start and --max-level are time scales): not --search {kind}")
    if kind == "time_scale" and not trace:
        raise ValueError("--search time_scale replays a trace: give --arrival trace and a "
                         "--dataset built by `loadgen data build trace`")
    spec = SearchSpec(kind=kind, start=args.start, precision=args.precision,
                      confirm=args.confirm, max_runs=args.max_runs, max_time=args.max_time,
                      max_level=args.max_level)
    spec.validate()
    if args.target_rate is not None and not 0 < args.target_rate < float("inf"):
        raise ValueError(f"--target-rate must be a finite number > 0, not {args.target_rate:g}")
    if not 0 <= args.headroom < 10:
        raise ValueError("--headroom must be in [0, 10), e.g. 0.2 for 20%")
    targets = _targets(args)
    output_len = args.output_len if args.output_len is not None or trace else OUTPUT_LEN
    run_opts = {"output_len": output_len, "num_requests": args.num_requests,
                "duration_s": args.duration, "warmup_requests": args.warmup_requests,
                "arrival": args.arrival, "timeout_s": args.timeout,
                "probe_timeout_s": args.probe_timeout, "model": args.model,
                "progress": False}
    engine = args.engine or args.serve or "vllm"
    # every value checked before anything starts or is written
    RunConfig.build(endpoint="http://127.0.0.1", engine=engine, out=Path("."), concurrency=1,
                    **{**run_opts, "num_requests": 1 if args.num_requests is None
                       else args.num_requests})
    try:
        prompts, ds_path = load_dataset({"path": args.dataset}, Path("."), engine, run_opts)
    except (OSError, PromptFileError) as exc:
        raise ValueError(f"--dataset {args.dataset}: {exc}") from None
    sliced = trace_slice(prompts, args.num_requests, args.warmup_requests, args.duration) \
        if trace else None
    if trace:
        from loadgen.client.trace import check_time_scale

        check_time_scale("--start", spec.start)
        check_time_scale("--max-level", spec.max_level)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a directory")
    if (out / "capacity.json").exists() or (out / "probes").exists():
        if not args.overwrite:
            raise ValueError(f"--out {out} already holds a capacity search; give --overwrite "
                             "to replace it, or another --out")
        shutil.rmtree(out / "probes", ignore_errors=True)
        (out / "capacity.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    info = None
    if sliced is not None:
        info = output.TraceInfo(sliced.rows, sliced.schedule.span_s, sliced.native_rate)
        print(f"{PROG}: {sliced.describe()}", file=sys.stderr)
    cfg = {"serve": {"engine": args.serve, "extra_args": list(args.passthrough)}} \
        if args.serve else {}
    results = []
    for sd in targets:
        with contextlib.ExitStack() as stack:
            endpoint, describe = stack.enter_context(endpoint_for(cfg, sd, out))
            prober = Prober(kind=spec.kind, label=sd["label"], endpoint=endpoint, engine=engine,
                            root=out, prompts=prompts, dataset_path=ds_path, slos=slos,
                            signals=signals, run_opts=run_opts,
                            describe=describe if args.serve else None, trace=sliced)
            try:
                result = search(spec, prober)
            except RunFailed as exc:
                print(f"{PROG}: {sd['label']}: a probe failed: {exc}", file=sys.stderr)
                return 1
            except ProbeFailed as exc:
                print(f"{PROG}: {exc}", file=sys.stderr)
                return 1
        results.append(output.ConfigCapacity(sd["label"], bool(sd.get("baseline")), result,
                                             info))
    doc = output.document(results, slos, args.target_rate, args.headroom)
    write_json(out / "capacity.json", doc)
    has_plot = output.plot(doc, out / "capacity.png")
    if not args.quiet:
        print(f"SLOs: {slos.describe()}")
        for line in output.lines(doc):
            print(line)
    print(f"capacity in {out}/capacity.json" + (" and capacity.png" if has_plot else ""))
    return 0
