"""``loadgen run``: replay a pre-tokenized prompt file against an engine."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loadgen.config import ARRIVALS, OPENAI_MODES, default
from loadgen.engines import ENGINES, LAUNCHABLE_ENGINES
from loadgen.launch.commands import SPEC_METHODS


def add_timeouts(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--timeout`` and ``--probe-timeout`` (``run`` and ``capacity``)."""
    p.add_argument("--timeout", type=float, default=default("timeout_s"),
                   help="per-request timeout, seconds")
    p.add_argument("--probe-timeout", type=float, default=default("probe_timeout_s"),
                   metavar="SECONDS", help="bound on each probe and counter scrape (default "
                   "%(default)g); a source slower than this is warned about, never waited for "
                   "again")


def add_max_error_rate(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--max-error-rate", type=float, default=default("max_error_rate"),
                   metavar="FRACTION",
                   help="exit 1 when more than this share of the measured requests failed "
                        "(default %(default)g; 0: any failure, 1: never)")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="benchmark an endpoint with a pre-tokenized prompt file",
        description="Replay token ids at a controlled load, time every streamed token, scrape "
                    "the server's SD statistics and write manifest.json, requests.jsonl and "
                    "summary.json (docs/METRICS.md defines every number).")
    p.add_argument("--endpoint", help="base URL, e.g. http://127.0.0.1:8000 (default: start "
                   "the embedded llama.cpp engine and compare n-gram SD with SD off)")
    p.add_argument("--engine", choices=ENGINES,
                   help="the endpoint's protocol (default: vllm, or the --serve engine)")
    p.add_argument("--dataset", type=Path,
                   help="prompt file (.jsonl, .jsonl.gz, .parquet), or 'builtin' (the built-in "
                        "set: text with --openai-mode chat, SmolLM2 token ids otherwise)")
    p.add_argument("--output-len", type=int, help="exactly this many output tokens per request")
    p.add_argument("--out", type=Path, help="output directory (default runs/<timestamp>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out (refused otherwise)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, help="closed loop with C requests in flight")
    load.add_argument("--request-rate", type=float, help="open loop, requests per second")
    p.add_argument("--arrival", choices=ARRIVALS, default=default("arrival"))
    p.add_argument("--burstiness", type=float, default=default("burstiness"),
                   help="gamma shape (1 = Poisson)")
    p.add_argument("--time-scale", type=float,
                   help="--arrival trace: replay the trace's schedule S times faster")
    p.add_argument("--target-rate", type=float,
                   help="--arrival trace: rescale the schedule to this mean rate (req/s)")
    p.add_argument("--max-concurrency", type=int, help="cap on in-flight requests (rate mode)")
    p.add_argument("--num-requests", type=int)
    p.add_argument("--duration", type=float, help="seconds of measured load")
    p.add_argument("--warmup-requests", type=int, default=default("warmup_requests"),
                   help="unmeasured requests first (default: the concurrency, or a few seconds "
                        "of arrivals in rate mode; 0 measures cold-start requests too)")
    smp = p.add_argument_group("sampling (default greedy; sent in each engine's own fields)")
    smp.add_argument("--temperature", type=float, default=default("temperature"))
    smp.add_argument("--top-p", type=float, default=default("top_p"))
    smp.add_argument("--top-k", type=int, default=default("top_k"))
    smp.add_argument("--seed-per-request", action="store_true",
                     help="send each request a seed derived from --seed and its index")
    p.add_argument("--category-windows", action=argparse.BooleanOptionalAction,
                   default=default("category_windows"),
                   help="run the categories one after another, a counter scrape at each "
                        "boundary, for per-category AL from counters (default: on when the "
                        "engine reports no per-request SD and the server has SD counters)")
    p.add_argument("--retry-429", type=int, default=default("retry_429"), metavar="N",
                   help="resend a request answered 429 up to N times after its Retry-After")
    p.add_argument("--model", help="model name to send (required by TensorRT-LLM)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="read the API key from this environment variable")
    wire = p.add_argument_group("TLS, proxies and headers (docs/ENDPOINTS.md)")
    wire.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                      help="send this header with every request (repeatable); 'NAME: env:VAR' "
                           "takes the value from environment variable VAR. Never written to "
                           "any output")
    wire.add_argument("--ca-bundle", metavar="FILE",
                      help="PEM file of CA certificates to trust instead of the system store")
    wire.add_argument("--insecure", action="store_true",
                      help="do not verify the server's TLS certificate (warned, recorded in "
                           "manifest.json)")
    wire.add_argument("--proxy", metavar="URL",
                      help="HTTP proxy http://[user:pw@]host:port (CONNECT tunnel for https); "
                           "default: https_proxy/http_proxy/all_proxy/no_proxy as curl reads "
                           "them; '' for none")
    mt = p.add_argument_group("server counters (docs/METRICS.md, 'Fleets')")
    mt.add_argument("--metrics", action="append", default=[], metavar="URL",
                    help="scrape this metrics URL instead of <endpoint>/metrics (repeat once "
                         "per replica; a host name with several addresses expands to each); "
                         "prometheus+http://HOST:9090 reads a Prometheus server; 'none' "
                         "turns scraping off")
    mt.add_argument("--metrics-selector", metavar="'{job=\"vllm\"}'",
                    help="with a Prometheus --metrics: the series to read")
    p.add_argument("--engine-pid", type=int, metavar="PID",
                   help="the engine's process on this host, for the host monitor (default: the "
                        "one loadgen launched, else the listener on a loopback endpoint's port, "
                        "followed through a local reverse proxy where it can be)")
    p.add_argument("--seed", type=int, default=default("seed"))
    add_timeouts(p)
    add_max_error_rate(p)
    p.add_argument("--openai-mode", choices=OPENAI_MODES, default=default("openai_mode"))
    p.add_argument("--keep-token-ids", action="store_true",
                   help="store output token ids in requests.jsonl")
    p.add_argument("--no-multi-turn", action="store_true",
                   help="send only the first turn of multi-turn records")
    p.add_argument("--keep-prefix-cache", action="store_true",
                   help="measure with the engine's prefix cache as earlier runs left it "
                        "(default: a per-run cache salt, a flush or no reuse, as the engine "
                        "offers)")
    p.add_argument("--repeats", type=int,
                   help="the default run (no --endpoint): alternating repetitions of each "
                        "configuration (default 3); for other comparisons: loadgen sweep")
    add_telemetry_args(p)
    sc = p.add_argument_group("scale-out (docs/FORMATS.md, 'Scaled-out runs')")
    sc.add_argument("--workers", type=workers_arg, metavar="N|auto",
                    help="N client processes driven by one coordinator; 'auto' picks N from "
                         "the load (default: this one process)")
    sc.add_argument("--ray", metavar="ADDRESS",
                    help="run the workers as Ray actors on this cluster ('local': a throwaway "
                         "local cluster); needs the 'scale' extra")
    sc.add_argument("--workers-per-node", type=int, default=default("workers_per_node"),
                    help="with --ray: worker actors per node")
    p.add_argument("--no-uvloop", action="store_true")
    p.add_argument("--quiet", action="store_true")
    sv = p.add_argument_group(
        "launching the engine around the run (arguments after a bare -- go to the engine)")
    sv.add_argument("--serve", metavar="ENGINE",
                    choices=LAUNCHABLE_ENGINES,
                    help="start this engine (as `loadgen serve ENGINE`), run, stop it")
    sv.add_argument("--serve-model", help="the engine's --model (default: SmolLM2 where local)")
    sv.add_argument("--spec", choices=SPEC_METHODS)
    sv.add_argument("--draft")
    sv.add_argument("--num-spec-tokens", type=int)
    sv.add_argument("--preset", help="a preset YAML file, or the name of a packaged one "
                                     "(loadgen/resources/presets)")
    sv.add_argument("--serve-python", help="python of the engine's environment")
    sv.add_argument("--health-timeout", type=float)
    p.set_defaults(func=main)


def add_telemetry_args(p: argparse.ArgumentParser) -> None:
    """``--telemetry`` and ``--telemetry-interval`` (run and sweep)."""
    tg = p.add_argument_group("server telemetry (docs/METRICS.md, 'Server telemetry')")
    tg.add_argument("--telemetry", action="append", default=None, metavar="URL",
                    help="also scrape this exporter over the window (repeatable): a DCGM "
                         "exporter's or node exporter's metrics URL, or "
                         "prometheus+http://HOST:9090 to read them through Prometheus")
    tg.add_argument("--telemetry-interval", type=float,
                    default=default("telemetry_interval_s"), metavar="SECONDS",
                    help="seconds between telemetry samples inside the window")


def workers_arg(text: str) -> int | str:
    """``--workers``: a number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number or 'auto'") from None


def _serve_args(args: argparse.Namespace) -> argparse.Namespace:
    """The namespace `loadgen serve ENGINE` would have parsed (loadgen/cli/serve.py)."""
    return argparse.Namespace(
        launch_engine=args.serve, model=args.serve_model, spec=args.spec, draft=args.draft,
        num_spec_tokens=args.num_spec_tokens, preset=args.preset, port=0, host=None,
        python=args.serve_python, binary=None, passthrough=args.passthrough,
        health_timeout=args.health_timeout)


def main(args: argparse.Namespace) -> int:
    from loadgen.client.stop import Interrupted, StopSignals

    # SIGINT/SIGTERM are ours for the whole command: a first one before the run starts ends it
    # with one line, during the run it stops the run, a second one exits at once.
    signals = StopSignals("loadgen run")
    try:
        with signals:
            return _main(args, signals)
    except (Interrupted, KeyboardInterrupt):  # before the run, or as the command ends
        print("loadgen run: interrupted", file=sys.stderr)
        return signals.exit_code


def _main(args: argparse.Namespace, signals) -> int:
    from datetime import datetime

    from loadgen.config import RunConfig
    from loadgen.data.builtin import read_dataset
    from loadgen.data.prompts import PromptFileError
    from loadgen.data.tokenizer import TokenizerError
    from loadgen.engines import adapter_class as make_adapter_class
    from loadgen.run.benchmark import RunFailed, check_run_dir

    if args.endpoint is None and not args.serve:
        from loadgen.sweep.default import main as default_main

        try:
            return default_main(args)
        except ValueError as exc:
            print(f"loadgen run: {exc}", file=sys.stderr)
            return 2
    if args.repeats is not None:
        print("loadgen run: --repeats is for the default run; to repeat a comparison use "
              "loadgen sweep --repeats", file=sys.stderr)
        return 2
    if args.endpoint and args.serve:
        print("loadgen run: give --endpoint or --serve, not both", file=sys.stderr)
        return 2
    if args.dataset is None:
        print("loadgen run: --dataset is required with --endpoint or --serve", file=sys.stderr)
        return 2
    engine = args.engine or args.serve or "vllm"
    out = args.out or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    trace = args.arrival == "trace"
    if trace and (args.concurrency is not None or args.request_rate is not None):
        print("loadgen run: --arrival trace sends each request at its arrival_s: no "
              "--concurrency or --request-rate (use --time-scale or --target-rate)",
              file=sys.stderr)
        return 2
    if not trace and (args.time_scale is not None or args.target_rate is not None):
        print("loadgen run: --time-scale and --target-rate need --arrival trace",
              file=sys.stderr)
        return 2
    if args.concurrency is None and args.request_rate is None:
        if trace:
            args.request_rate = 1.0  # the trace's offered rate, once the file is read
        else:
            args.concurrency = 1
    # every value checked here, before the dataset is read or anything is started; without
    # --num-requests or --duration, one request stands in until the dataset says how many
    try:
        cfg = RunConfig.build(
            endpoint=args.endpoint or "http://127.0.0.1:0", engine=engine, out=out,
            output_len=args.output_len,
            concurrency=args.concurrency, request_rate=args.request_rate, arrival=args.arrival,
            burstiness=args.burstiness, max_concurrency=args.max_concurrency,
            num_requests=(1 if args.num_requests is None and args.duration is None
                          else args.num_requests), duration_s=args.duration,
            warmup_requests=args.warmup_requests, model=args.model, api_key_env=args.api_key_env,
            headers=args.header, ca_bundle=args.ca_bundle, insecure=args.insecure, proxy=args.proxy,
            seed=args.seed, timeout_s=args.timeout, probe_timeout_s=args.probe_timeout,
            keep_token_ids=args.keep_token_ids,
            openai_mode=args.openai_mode, multi_turn=not args.no_multi_turn,
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
            seed_per_request=args.seed_per_request, category_windows=args.category_windows,
            retry_429=args.retry_429,
            keep_prefix_cache=args.keep_prefix_cache,
            workers=args.workers, ray=args.ray, workers_per_node=args.workers_per_node,
            telemetry=args.telemetry or [], telemetry_interval_s=args.telemetry_interval,
            metrics=args.metrics, metrics_selector=args.metrics_selector,
            engine_pid=args.engine_pid, max_error_rate=args.max_error_rate)
        _check_engine_pid(cfg.measurement.engine_pid)
        check_run_dir(out, args.overwrite)
        prompts, args.dataset = read_dataset(
            args.dataset, text=make_adapter_class(engine).accepts_text,
            chat=engine == "openai" and args.openai_mode == "chat")
        if args.num_requests is None and args.duration is None:
            cfg = cfg.replace(num_requests=len(prompts.records))
        if trace:
            from loadgen.client.trace import configure, describe, trace_schedule

            sched = trace_schedule(prompts, args.time_scale, args.target_rate)
            cfg = configure(cfg, sched, args.num_requests is not None)
            if not args.quiet:
                print(f"loadgen: {describe(sched)}", file=sys.stderr)
        summary = _run(cfg, prompts, args, signals)
    except (ValueError, PromptFileError, TokenizerError) as exc:
        print(f"loadgen run: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"loadgen run: {exc}; what was measured is in {out}", file=sys.stderr)
        return 1
    if not args.quiet:
        from loadgen.cli.console import print_summary

        print_summary(summary)
        print(f"results in {out}")
    if summary.interrupted:
        planned = cfg.load.num_requests
        print(f"loadgen run: interrupted: {summary.requests.total} requests measured"
              + (f" of the {planned} planned" if planned else "")
              + f"; what was measured is in {out}", file=sys.stderr)
        return signals.exit_code
    reasons = summary.error_reasons or {}
    common = max(reasons, key=lambda k: reasons[k]) if reasons else "no request was sent"
    n, failed = summary.requests.total, summary.requests.error
    if summary.requests.ok == 0:
        print(f"loadgen run: nothing measured: no request succeeded ({n} measured, "
              f"{failed} failed); commonest reason: {common}", file=sys.stderr)
        return 1
    limit = cfg.measurement.max_error_rate
    if failed > limit * n:
        print(f"loadgen run: {failed} of {n} measured requests failed ({failed / n:.1%}, "
              f"above --max-error-rate {limit:g}); commonest reason: {common}; what was "
              f"measured is in {out}", file=sys.stderr)
        return 1
    return 0


def _check_engine_pid(pid: int | None) -> None:
    import psutil

    if pid is not None and not psutil.pid_exists(pid):
        raise ValueError(f"--engine-pid {pid}: no such process on this host")


def _run(cfg, prompts, args: argparse.Namespace, signals):
    from loadgen.run.benchmark import run_benchmark

    if not args.serve:
        return run_benchmark(cfg, prompts, args.dataset, use_uvloop=not args.no_uvloop,
                             progress=not args.quiet, overwrite=args.overwrite,
                             signals=signals)
    from loadgen.cli.serve import plan_from_args
    from loadgen.launch.commands import LaunchConfigError

    try:
        plan, timeout = plan_from_args(_serve_args(args), prepare=True)
    except LaunchConfigError as exc:
        raise ValueError(str(exc)) from None
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--out {cfg.out}: cannot write there ({exc.strerror or exc})") from None
    print(f"loadgen: starting {plan.engine}; log in {cfg.out / 'engine.log'}", file=sys.stderr)
    with plan.process(log_path=cfg.out / "engine.log", health_timeout_s=timeout) as eng:
        cfg = cfg.replace(endpoint=eng.base_url)
        if cfg.endpoint.engine == "trtllm" and not cfg.endpoint.model:
            cfg = cfg.replace(model=plan.model)
        return run_benchmark(cfg, prompts, args.dataset, use_uvloop=not args.no_uvloop,
                             progress=not args.quiet, engine=eng.describe(),
                             overwrite=args.overwrite, signals=signals)
