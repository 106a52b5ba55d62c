"""Truncated GGUF drafts (loadgen.models.gguf_draft) on the real SmolLM2 file."""

from __future__ import annotations

import pytest

from loadgen.models import gguf_draft

gguf = pytest.importorskip("gguf")
SRC = gguf_draft._smollm2_path(create=False)
pytestmark = pytest.mark.skipif(not SRC.is_file(), reason=f"SmolLM2 GGUF not cached ({SRC})")


def test_truncate_keeps_first_layers_and_everything_else(tmp_path):
    dst = gguf_draft.truncate_gguf(SRC, 2, tmp_path / "d.gguf")
    src_r, dst_r = gguf.GGUFReader(SRC), gguf.GGUFReader(dst)
    assert int(dst_r.fields["llama.block_count"].contents()) == 2
    src_names = {t.name for t in src_r.tensors}
    kept = {t.name for t in dst_r.tensors}
    blocks = {n.split(".")[1] for n in kept if n.startswith("blk.")}
    assert blocks == {"0", "1"}
    assert kept == {n for n in src_names if not n.startswith("blk.") or n.split(".")[1] in blocks}
    src_t = {t.name: t for t in src_r.tensors}
    for t in dst_r.tensors:  # raw bytes and quantization type copied exactly
        assert t.tensor_type == src_t[t.name].tensor_type
        assert bytes(t.data.tobytes()) == bytes(src_t[t.name].data.tobytes())
    for name, fld in src_r.fields.items():
        if name.startswith("GGUF.") or name == "llama.block_count":
            continue
        assert dst_r.fields[name].contents() == fld.contents(), name
    assert not list(tmp_path.glob(".*partial*"))


def test_resolve_specs(tmp_path):
    assert gguf_draft.resolve_draft("self", SRC) == SRC
    planned = gguf_draft.resolve_draft("smollm2:layers=3", create=False)
    assert planned == gguf_draft.truncated_path(SRC, 3)
    assert gguf_draft.resolve_draft("layers=3", SRC, create=False) == planned
    with pytest.raises(gguf_draft.DraftSpecError, match="out of range"):
        gguf_draft.truncate_gguf(SRC, 31, tmp_path / "x.gguf")
    with pytest.raises(gguf_draft.DraftSpecError, match="neither a file"):
        gguf_draft.resolve_draft(str(tmp_path / "missing.gguf"))
