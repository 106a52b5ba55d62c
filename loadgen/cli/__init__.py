"""The `loadgen` command line.

Each command lives in its own module, which exposes ``register(subparsers)``; this file only wires
them together. Modules are imported lazily by name so that a heavy dependency of one command (torch
for dataset building, matplotlib for reports) never slows down another.

Everything after a bare ``--`` is not parsed here: it is handed to the command as
``args.passthrough`` (``loadgen serve vllm --model M -- --max-model-len 4096``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (top-level command, module that registers it). `serve` is a group: several modules add engines.
_SERVE_MODULES = ("loadgen.cli.serve_synthetic", "loadgen.cli.serve")
_COMMAND_MODULES = (
    "loadgen.cli.run",
    "loadgen.data.cli",
    "loadgen.cli.sweep",
    "loadgen.cli.capacity",
    "loadgen.cli.report",
    "loadgen.cli.compare",
    "loadgen.cli.summarize",
)


def _try_register(module_name: str, subparsers: argparse._SubParsersAction) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # A command whose module is not built yet is simply absent; a missing third-party
        # dependency inside an existing module is a real error and must surface.
        if exc.name and module_name.startswith(exc.name):
            return
        raise
    module.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    from loadgen import __version__

    parser = argparse.ArgumentParser(
        prog="loadgen",
        description="Benchmark speculative decoding on live LLM servers.",
    )
    parser.add_argument("--version", action="version", version=f"loadgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="start an engine (synthetic or real) with SD configured")
    engines = serve.add_subparsers(dest="engine", metavar="ENGINE", required=True)
    for name in _SERVE_MODULES:
        _try_register(name, engines)

    for name in _COMMAND_MODULES:
        _try_register(name, commands)
    return parser


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` at the first bare ``--``: (ours, passed through to a child program)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        ours, passthrough = split_passthrough(argv)
        parser = build_parser()
        args = parser.parse_args(ours)
        args.passthrough = passthrough
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # a command without its own signal handling, or start-up
        print("loadgen: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """``loadgen`` and ``python -m loadgen``: run the command, then exit with its code. Once
    the command has decided its outcome (and written its files), a late SIGINT/SIGTERM is
    ignored, so the process never dies of it while the interpreter shuts down (which puts
    the default handlers back): a second Ctrl-C right after the first still ends with 130."""
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while starting up, before a command installed its handling
        print("loadgen: interrupted", file=sys.stderr)
        code = 130
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.stderr.flush()
    raise SystemExit(code)
