"""``loadgen serve vllm|sglang|trtllm|llamacpp``: start a real engine with SD configured.

Foreground: start the engine, wait until healthy, print its base URL on stdout, block until
Ctrl-C / SIGTERM, stop the engine (SIGTERM to its process group, SIGKILL after a grace period).
``--print-command`` prints the exact argv (and the TRT-LLM YAML) without starting anything.
Everything after a bare ``--`` is appended to the engine's command line.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from loadgen.engines import LAUNCHABLE_ENGINES
from loadgen.launch import commands as C
from loadgen.launch.presets import load_preset

_HELP = {
    "vllm": "vLLM (`vllm serve`, or PY -m vllm.entrypoints.openai.api_server with --python)",
    "sglang": "SGLang (python -m sglang.launch_server, Prometheus metrics on)",
    "trtllm": "TensorRT-LLM (trtllm-serve, PyTorch backend, iteration stats on)",
    "llamacpp": "llama.cpp llama-server (built from source; SmolLM2-135M by default)",
}


def register(engines: argparse._SubParsersAction) -> None:
    for engine in LAUNCHABLE_ENGINES:
        p = engines.add_parser(engine, help=_HELP[engine], description=_HELP[engine])
        _add_common(p, engine)
        p.set_defaults(func=main, launch_engine=engine)


def _add_common(p: argparse.ArgumentParser, engine: str) -> None:
    if engine == "llamacpp":
        p.add_argument("--model", help="GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
        p.add_argument("--binary", help="llama-server to run (default: the cached build, "
                                         "built on first use)")
    else:
        p.add_argument("--model", help="model path or HF id (required unless in --preset)")
        p.add_argument("--python", help="python of the engine's environment (e.g. a venv)")
    sd = p.add_argument_group("speculative decoding")
    sd.add_argument("--spec", choices=C.SPEC_METHODS, default=None, help="SD method (default none)")
    draft_help = "draft model / EAGLE3 head (path or HF id)"
    if engine == "llamacpp":
        draft_help = "draft GGUF path, `self`, `layers=N` or `smollm2:layers=N`"
    sd.add_argument("--draft", help=draft_help)
    sd.add_argument("--num-spec-tokens", "-k", type=int, default=None,
                    help="draft length K (default: ngram 4, draft 4, eagle3 3, mtp 1)")
    p.add_argument("--host", default=None, help=f"bind address (default {C.DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=None,
                   help=f"port (default {C.DEFAULT_PORTS[engine]}; 0 picks a free one)")
    p.add_argument("--print-command", action="store_true",
                   help="print the exact command (and config files) and exit")
    p.add_argument("--log", type=Path, help="engine log file (default: under the cache dir)")
    p.add_argument("--health-timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for the engine to become healthy (default 600)")
    p.add_argument("--preset", help="YAML preset: a file, or the name of a packaged one "
                                    "(loadgen/resources/presets)")


def spec_from_args(args: argparse.Namespace, preset: dict[str, Any]) -> C.SpecConfig:
    def pick(name: str, key: str | None = None) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else preset.get(key or name)

    method = pick("spec") or "none"
    draft = pick("draft")
    k = pick("num_spec_tokens")
    return C.SpecConfig(method=str(method), draft=str(draft) if draft else None,
                        num_spec_tokens=int(k) if k is not None else None)


def plan_from_args(args: argparse.Namespace, prepare: bool):
    from loadgen.launch.launcher import plan_launch

    engine = args.launch_engine
    preset = load_preset(args.preset, engine) if args.preset else {}
    spec = spec_from_args(args, preset)
    port = args.port if args.port is not None else preset.get("port")
    plan = plan_launch(
        engine,
        args.model or preset.get("model"),
        spec,
        host=args.host or preset.get("host") or C.DEFAULT_HOST,
        port=int(port) if port is not None else None,
        python=getattr(args, "python", None),
        binary=getattr(args, "binary", None),
        extra_args=[*preset.get("extra_args", []), *getattr(args, "passthrough", [])],
        prepare=prepare,
    )
    timeout = args.health_timeout or preset.get("health_timeout") or 600.0
    return plan, float(timeout)


def format_plan(plan) -> str:
    lines = [shlex.join(plan.argv)]
    for path, text in plan.config_files.items():
        lines.append(f"# file: {path}")
        lines.extend(text.rstrip("\n").splitlines())
    return "\n".join(lines)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(args: argparse.Namespace) -> int:
    from loadgen.launch.process import EngineError

    try:
        plan, timeout = plan_from_args(args, prepare=not args.print_command)
    except (C.LaunchConfigError, ValueError) as exc:
        print(f"loadgen serve {args.launch_engine}: error: {exc}", file=sys.stderr)
        return 2
    if args.print_command:
        print(format_plan(plan))
        return 0

    proc = plan.process(log_path=args.log, health_timeout_s=timeout)
    print(f"loadgen: starting {plan.engine}: {shlex.join(plan.argv)}", file=sys.stderr)
    print(f"loadgen: log: {proc.log_path}", file=sys.stderr)
    # SIGINT too: a shell that starts us in the background sets it to "ignore", and we inherit that.
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for s in old:
        signal.signal(s, _raise_stop)
    try:
        proc.start()
        startup = proc.wait_healthy()
        version = proc.probe_version().get("version")
        print(f"loadgen: {plan.engine} healthy after {startup:.1f} s (version {version}); "
              "Ctrl-C stops it", file=sys.stderr)
        print(plan.base_url, flush=True)
        while True:
            rc = proc.wait(timeout=1.0)
            if rc is not None:
                print(f"loadgen: {plan.engine} exited by itself with {rc}\n{proc.log_tail()}",
                      file=sys.stderr)
                return 1
    except (KeyboardInterrupt, _Stop):
        print(f"loadgen: stopping {plan.engine}", file=sys.stderr)
        return 0
    except EngineError as exc:
        print(f"loadgen serve {plan.engine}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for s in old:  # a second Ctrl-C must not interrupt the shutdown itself
            signal.signal(s, signal.SIG_IGN)
        proc.stop()
        for s, h in old.items():
            signal.signal(s, h)
