"""Draft models for llama.cpp made by truncating a GGUF to its first N transformer blocks.

No package ships a causal LM smaller than SmolLM2-135M, so we make drafts from it: keep the token
embedding, the first N blocks (``blk.0`` .. ``blk.N-1``), the final norm and the output head, copy
all metadata (tokenizer included, so the vocabularies match exactly) and set
``<arch>.block_count = N``. Fewer layers = cheaper and less accurate drafts (8 layers: ~4%
acceptance, 20: ~11%; the full model as its own draft accepts 100%).

Draft specs understood by :func:`resolve_draft` (``--draft`` on ``loadgen serve llamacpp``):

* ``self``: the target model itself (acceptance 100%: an SD upper bound / overhead probe)
* ``smollm2:layers=N``: SmolLM2-135M truncated to N blocks
* ``layers=N``: the target GGUF truncated to N blocks
* anything else: a path to a GGUF file

Truncated files are cached in ``cache_dir("models", "gguf-drafts")``, published whole
(``cache.publish_file``), so an interrupted write never looks finished. Needs the ``gguf`` package.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

from loadgen.cache import cache_dir, publish_file

_LAYERS_RE = re.compile(r"^(?:(?P<base>[a-z0-9_.-]+):)?layers=(?P<n>\d+)$")


class DraftSpecError(ValueError):
    """A --draft value that cannot be resolved."""


def _smollm2_path(create: bool) -> Path:
    from loadgen.models import smollm2

    if create:
        return smollm2.smollm2_gguf_path()
    # Where the locator puts it, without fetching anything.
    return cache_dir("models", "smollm2-0.1.2") / smollm2.GGUF_NAME


def truncated_path(src: Path, n_layers: int) -> Path:
    """Cache location of ``src`` truncated to ``n_layers`` blocks (keyed by source identity)."""
    st = src.stat() if src.exists() else None
    ident = f"{src.resolve()}|{st.st_size if st else 0}|{int(st.st_mtime) if st else 0}"
    key = hashlib.sha1(ident.encode()).hexdigest()[:10]
    return cache_dir("models", "gguf-drafts") / f"{src.stem}.layers{n_layers}.{key}.gguf"


def truncate_gguf(src: Path, n_layers: int, dst: Path | None = None) -> Path:
    """Write ``src`` with only its first ``n_layers`` blocks; returns the (cached) output path."""
    import numpy as np

    try:
        from gguf import GGUFReader, GGUFValueType, GGUFWriter
    except ImportError as exc:
        raise DraftSpecError(
            "truncated drafts need the `gguf` package: pip install gguf (or loadgen[data])"
        ) from exc

    src = Path(src)
    dst = Path(dst) if dst else truncated_path(src, n_layers)
    if dst.exists() and dst.stat().st_size > 0:
        return dst
    reader = GGUFReader(src)
    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise DraftSpecError(f"{src} has no general.architecture: not a model GGUF")
    arch = str(arch_field.contents())
    count_key = f"{arch}.block_count"
    if count_key not in reader.fields:
        raise DraftSpecError(f"{src} has no {count_key}")
    total = int(reader.fields[count_key].contents())
    if not 1 <= n_layers <= total:
        raise DraftSpecError(f"layers={n_layers} is out of range: {src.name} has {total} blocks")

    print(f"loadgen: writing {n_layers}/{total}-layer draft of {src.name} -> {dst}",
          file=sys.stderr)
    kept = []
    for tensor in reader.tensors:
        m = re.match(r"^blk\.(\d+)\.", tensor.name)
        if not (m and int(m.group(1)) >= n_layers):
            kept.append(tensor)

    def write(tmp: Path) -> None:
        writer = GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
        alignment = reader.fields.get("general.alignment")
        if alignment is not None:
            writer.data_alignment = int(alignment.contents())
        for name, fld in reader.fields.items():
            # GGUF.*: the reader's pseudo-fields (version, counts); the writer adds the
            # architecture.
            if name.startswith("GGUF.") or name == "general.architecture":
                continue
            vtype = fld.types[0]
            if name == count_key:
                writer.add_key_value(name, n_layers, vtype)
            elif vtype == GGUFValueType.ARRAY:
                writer.add_key_value(name, fld.contents(), vtype, sub_type=fld.types[-1])
            else:
                writer.add_key_value(name, fld.contents(), vtype)
        for tensor in kept:
            # Raw bytes with the source's quantization type: no re-quantization, exact copy.
            writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype,
                                   tensor.data.nbytes, tensor.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in kept:
            writer.write_tensor_data(np.asarray(tensor.data))
        writer.close()

    publish_file(dst, write)
    return dst


def resolve_draft(draft: str, target: str | os.PathLike[str] | None = None,
                  create: bool = True) -> Path:
    """Turn a ``--draft`` value into a GGUF path; with ``create=False`` only compute the path."""
    draft = draft.strip()
    if draft == "self":
        if target is None:
            raise DraftSpecError("--draft self needs a target model")
        return Path(target)
    m = _LAYERS_RE.match(draft)
    if m:
        n = int(m.group("n"))
        base = m.group("base")
        if base == "smollm2":
            src = _smollm2_path(create)
        elif base is None:
            if target is None:
                raise DraftSpecError("--draft layers=N needs a target GGUF")
            src = Path(target)
        else:
            raise DraftSpecError(
                f"unknown base model {base!r} in --draft {draft!r} (known: smollm2)")
        if n < 1:
            raise DraftSpecError("layers=N needs N >= 1")
        if not create:
            return truncated_path(src, n)
        return truncate_gguf(src, n)
    path = Path(draft).expanduser()
    if create and not path.is_file():
        raise DraftSpecError(
            f"draft {draft!r} is neither a file nor one of: self, layers=N, smollm2:layers=N")
    return path
