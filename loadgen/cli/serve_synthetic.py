"""``loadgen serve synthetic``: run the synthetic SD engine as an HTTP server."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from loadgen.synthetic.protocols import PROTOCOLS


def _rates(text: str) -> list[float]:
    try:
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of rates: {text!r}") from None
    if not rates or any(not 0 <= r <= 1 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be in [0, 1]: {text!r}")
    return rates


def _rates_for(text: str) -> tuple[int, list[float]]:
    token, eq, rates = text.partition("=")
    if not eq or not token.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected TOKEN_ID=r1,r2,...: {text!r}")
    return int(token), _rates(rates)


def _diverge(text: str) -> tuple[int, int | None]:
    pos, _, token = text.partition("@")
    if not pos.isdigit() or (token and not token.isdigit()):
        raise argparse.ArgumentTypeError(f"expected N or N@TOKEN (whole numbers): {text!r}")
    return int(pos), int(token) if token else None


def register(engines: argparse._SubParsersAction) -> None:
    p = engines.add_parser(
        "synthetic",
        help="the synthetic SD engine (ground truth: known acceptance and timing)",
        description="Serve an engine's HTTP API with simulated speculative decoding, a "
                    "continuous-batching timing model, a truth log and injectable faults.",
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="vllm")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--model-name", default="synthetic-sd")
    sd = p.add_argument_group("speculative decoding")
    sd.add_argument("--no-spec", action="store_true", help="plain decoding, no draft counters")
    sd.add_argument("--num-spec-tokens", "-k", type=int, default=None,
                    help="draft length K (default: the number of --accept-rates)")
    sd.add_argument("--accept-rates", type=_rates, default=[0.8, 0.6, 0.4],
                    help="conditional acceptance per draft position (default 0.8,0.6,0.4)")
    sd.add_argument("--accept-rates-for", type=_rates_for, action="append", default=[],
                    metavar="TOKEN=RATES",
                    help="rates for prompts whose first token id is TOKEN (repeatable)")
    sd.add_argument("--diverge-at", type=_diverge, metavar="N[@TOKEN]",
                    help="with SD on, output token N (0-based) differs from SD off's (only for "
                         "prompts whose first token id is TOKEN, when given): a lossless-check "
                         "fault")
    sd.add_argument("--seed", type=int, default=0)
    sd.add_argument("--vocab-size", type=int, default=49152)
    tm = p.add_argument_group("timing model (docs/SYNTHETIC.md)")
    tm.add_argument("--step-base-ms", type=float, default=8.0)
    tm.add_argument("--per-token-ms", type=float, default=0.05)
    tm.add_argument("--draft-ms", type=float, default=0.5, help="drafter cost per position")
    tm.add_argument("--max-num-seqs", type=int, default=256)
    tm.add_argument("--max-prefill-tokens", type=int, default=8192)
    tm.add_argument("--fast", action="store_true",
                    help="zero step time: as fast as the server can go (ceiling measurements)")
    sv = p.add_argument_group("server behaviour")
    sv.add_argument("--load-delay", type=float, default=0.0,
                    help="seconds during which health answers 503 (model loading)")
    sv.add_argument("--max-model-len", type=int, default=131072)
    sv.add_argument("--stream-interval", type=int, default=1,
                    help="tokens per stream chunk after the first (vLLM/SGLang)")
    sv.add_argument("--incremental-streaming", action="store_true",
                    help="SGLang: delta output_ids instead of cumulative")
    sv.add_argument("--per-request-spec-metrics", choices=["summary", "detailed"],
                    help="vLLM: per-request SD metrics in the final usage chunk")
    sv.add_argument("--llamacpp-partial-utf8", type=int, default=13, metavar="N",
                    help="llama.cpp: token ids divisible by N stand for incomplete UTF-8 "
                         "pieces and get no event of their own, as in llama-server (0: off)")
    sv.add_argument("--add-bos", action="store_true",
                    help="vLLM: prepend a BOS to token-id prompts, as a misconfigured server "
                         "would (the client must notice)")
    sv.add_argument("--reasoning-tokens", type=int, default=0, metavar="N",
                    help="vLLM chat: stream each reply's first N tokens as reasoning_content "
                         "deltas, as a reasoning parser does")
    sv.add_argument("--text-only", action="store_true",
                    help="vLLM: /v1/completions streams text and ignores return_token_ids, as "
                         "llama-server's and hosted OpenAI-compatible APIs do")
    sv.add_argument("--honour-eos", action="store_true",
                    help="vLLM: obey neither ignore_eos nor min_tokens (replies end at their "
                         "natural length), as some hosted APIs do")
    sv.add_argument("--truth-log", type=Path, help="JSONL, one record per request")
    sv.add_argument("--fault", action="append", default=[], metavar="KIND[:k=v,...]",
                    help="inject faults (repeatable); see docs/SYNTHETIC.md")
    sv.add_argument("--tls-cert", type=Path, metavar="PEM",
                    help="serve https with this certificate chain (with --tls-key)")
    sv.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    sv.add_argument("--never-answer", action="store_true",
                    help="accept connections and read requests, never answer (any route)")
    dc = p.add_argument_group("synthetic DCGM exporter (docs/SYNTHETIC.md)")
    dc.add_argument("--dcgm", action="store_true",
                    help="also serve DCGM exporter GPU metrics at /dcgm/metrics, driven by "
                         "the engine's tokens with a known power model")
    dc.add_argument("--dcgm-gpus", type=int, default=1, help="GPUs the exporter reports")
    dc.add_argument("--dcgm-idle-w", type=float, default=60.0, help="idle power per GPU, W")
    dc.add_argument("--dcgm-joules-per-token", type=float, default=0.5,
                    help="energy per output token of the whole engine, J (split over GPUs)")
    dc.add_argument("--dcgm-average-s", type=float, default=1.0,
                    help="the power gauge's averaging period, s")
    dc.add_argument("--dcgm-collect-s", type=float, default=0.0,
                    help="refresh the values only this often, as dcgm-exporter's -c (0: at "
                         "every read)")
    dc.add_argument("--dcgm-no-energy", action="store_true",
                    help="serve no energy counter (power and utilization only)")
    sv.add_argument("--no-uvloop", action="store_true")
    sv.add_argument("--no-kernel-stamps", action="store_true",
                    help="serve on the event loop's transports: the truth log's rx_ns is then "
                         "the stamp of the read (rx_source \"read\"), not the kernel's")
    p.set_defaults(func=main)


def build(args: argparse.Namespace):
    from loadgen.synthetic.engine import Engine, TimingModel
    from loadgen.synthetic.faults import FaultPlan
    from loadgen.synthetic.model import SpecModel
    from loadgen.synthetic.server import SyntheticServer
    from loadgen.synthetic.wire import ServerConfig

    k = args.num_spec_tokens or len(args.accept_rates)
    spec = SpecModel(enabled=not args.no_spec, num_spec_tokens=k,
                     accept_rates=args.accept_rates,
                     rates_by_first_token=dict(args.accept_rates_for),
                     diverge_at=args.diverge_at[0] if args.diverge_at else None,
                     diverge_first_token=args.diverge_at[1] if args.diverge_at else None)
    timing = TimingModel(
        step_base_ms=0.0 if args.fast else args.step_base_ms,
        per_token_ms=0.0 if args.fast else args.per_token_ms,
        draft_ms_per_pos=0.0 if args.fast else args.draft_ms,
        max_num_seqs=args.max_num_seqs, max_prefill_tokens_per_step=args.max_prefill_tokens,
    )
    engine = Engine(spec, timing, seed=args.seed, vocab_size=args.vocab_size)
    cfg = ServerConfig(
        protocol=args.protocol, model_name=args.model_name, load_delay_s=args.load_delay,
        max_model_len=args.max_model_len, stream_interval=max(1, args.stream_interval),
        incremental_streaming=args.incremental_streaming,
        per_request_spec_metrics=args.per_request_spec_metrics, truth_log=args.truth_log,
        llamacpp_partial_utf8=args.llamacpp_partial_utf8, add_bos=args.add_bos,
        reasoning_tokens=max(0, args.reasoning_tokens), text_only=args.text_only,
        honour_eos=args.honour_eos,
        faults=FaultPlan.parse(args.fault, seed=args.seed), never_answer=args.never_answer,
    )
    server = SyntheticServer(cfg, engine)
    if args.dcgm:
        _add_dcgm(args, server, engine)
    return server


def _add_dcgm(args: argparse.Namespace, server, engine) -> None:
    from loadgen.synthetic.dcgm import DCGM_PATH, PowerModel, SyntheticDCGM
    from loadgen.synthetic.http import Response

    exporter = SyntheticDCGM(PowerModel(
        gpus=args.dcgm_gpus, idle_w=args.dcgm_idle_w,
        joules_per_token=args.dcgm_joules_per_token, average_s=args.dcgm_average_s,
        collect_s=args.dcgm_collect_s,
        energy_counter=not args.dcgm_no_energy), engine)

    async def metrics(req, conn) -> Response:
        return Response.text(200, exporter.exposition(),
                             content_type="text/plain; version=0.0.4; charset=utf-8")

    server.routes[("GET", DCGM_PATH)] = metrics


async def serve(args: argparse.Namespace, server) -> None:
    from loadgen.synthetic.http import start_server

    ctx = None
    if args.tls_cert:
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        ctx.set_alpn_protocols(["http/1.1"])
    srv = await start_server(server.handle, args.host, args.port,
                             kernel_stamps=not args.no_kernel_stamps, ssl=ctx)
    port = srv.sockets[0].getsockname()[1]
    scheme = "https" if ctx else "http"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the address: whoever reads it may stop
        loop.add_signal_handler(sig, stop.set)  # this engine at once, and is answered cleanly
    print(f"loadgen synthetic ({args.protocol}) listening on {scheme}://{args.host}:{port}",
          flush=True)
    try:
        await stop.wait()
    finally:
        srv.close()
        server.truth.close()


def main(args: argparse.Namespace) -> int:
    if (args.tls_cert is None) != (args.tls_key is None):
        print("loadgen serve synthetic: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2
    try:
        server = build(args)  # everything is validated before the port is bound
    except ValueError as exc:
        print(f"loadgen serve synthetic: {exc}", file=sys.stderr)
        return 2
    if args.no_uvloop:
        asyncio.run(serve(args, server))
    else:
        import uvloop

        uvloop.run(serve(args, server))
    return 0
