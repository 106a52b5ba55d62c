"""Tokenization, the built-in set, exact-length throughput prompts and the random control, on
SmolLM2's real tokenizer (GGUF through transformers). Skipped without the ``data`` extra."""

from __future__ import annotations

from collections import Counter

import pytest

from loadgen.data.sources import default_data_root
from tests.needs import installed_or_skip

installed_or_skip("transformers", "gguf")

DATA = default_data_root()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data is not present")


@pytest.fixture(scope="module")
def tok():
    from loadgen.data.tokenizer import load_tokenizer

    try:
        return load_tokenizer("smollm2")
    except Exception as exc:  # no cached GGUF and no package index
        pytest.skip(f"SmolLM2 tokenizer unavailable: {exc}")


def _contains(hay: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(hay[i:i + n] == needle for i in range(len(hay) - n + 1))


def test_identity_and_no_double_bos(tok):
    ident = tok.identity()
    assert ident["vocab_size"] == 49152 and len(ident["vocab_sha256"]) == 64
    assert ident["file_sha256"] and ident["chat_template_sha256"]
    ids = tok.chat_ids([{"role": "user", "content": "hi"}])
    assert ids[0] == tok.hf.convert_tokens_to_ids("<|im_start|>")
    assert ids[:2] != [tok.bos_id, tok.bos_id]
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")


def test_multi_turn_suffix_replays_exactly(tok):
    """prompt + reply + turns[0] must equal the template's own render of the conversation."""
    first, later, warns = tok.conversation(["What is 2+2?", "And 3+3?"])
    assert warns == []
    reply = "It is 4."
    whole = tok.chat_ids([{"role": "user", "content": "What is 2+2?"},
                          {"role": "assistant", "content": reply},
                          {"role": "user", "content": "And 3+3?"}])
    assert first + tok.encode(reply) + later[0] == whole
    assert tok.decode(later[0]).startswith("<|im_end|>")


def test_builtin_prompts_cached(tok, tmp_path, monkeypatch):
    from loadgen.data import builtin
    from loadgen.data.builtin import builtin_prompts

    def tmp_cache(*parts):  # a fresh prompt cache; the model stays in the real cache
        d = tmp_path.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        return d

    monkeypatch.setattr(builtin, "cache_dir", tmp_cache)

    pf = builtin_prompts("smollm2")
    assert len(pf.records) == 44 and len(pf.categories()) == 11
    assert pf.header["tokenizer_identity"]["vocab_sha256"] == tok.identity()["vocab_sha256"]
    assert max(r.input_len for r in pf.records) < 300
    for r in pf.records:
        assert r.meta["isl"] == r.input_len and r.messages and r.meta["license"]
        assert r.prompt_token_ids[:2] != [tok.bos_id, tok.bos_id]
        for t in r.turns or []:
            assert tok.decode(t).endswith("<|im_start|>assistant\n")
    assert any(r.turns for r in pf.records)
    again = builtin_prompts("smollm2")  # from the cache
    assert [r.prompt_token_ids for r in again.records] == [r.prompt_token_ids for r in pf.records]
    assert len(list((tmp_path / "prompts").glob("builtin-*.jsonl"))) == 1


def test_tokenize_file_and_raw(tok, tmp_path):
    from loadgen.data.prompts import read_prompts
    from loadgen.data.textfmt import TextPrompt, write_text_prompts
    from loadgen.data.tokenize import tokenize_file

    src = write_text_prompts(tmp_path / "t.jsonl", [
        TextPrompt(id="1", category="qa", turns=["Hello there"], meta={"source": "x"}),
        TextPrompt(id="2", category="qa", turns=["One", "Two"], system="Be brief.")])
    pf, _ = tokenize_file(src, tmp_path / "o.parquet", tok)
    back = read_prompts(tmp_path / "o.parquet")
    assert [r.prompt_token_ids for r in back.records] == [r.prompt_token_ids for r in pf.records]
    assert back.header["chat_template"]["sha256"] == tok.identity()["chat_template_sha256"]
    assert back.records[1].turns and back.records[1].meta["turn_lens"]
    assert "Be brief." in tok.decode(back.records[1].prompt_token_ids)
    raw, _ = tokenize_file(src, tmp_path / "raw.jsonl", tok, raw=True)
    assert raw.records[0].prompt_token_ids == tok.encode("Hello there")


@needs_data
def test_throughput_exact_lengths_instruction_last_and_deterministic(tok):
    from loadgen.data.throughput import INSTRUCTIONS, ThroughputBuilder

    b = ThroughputBuilder(tok, seed=7)
    for isl, label in ((1000, "1k"), (2000, "2k")):
        pf = b.build(isl, label, 4)  # per tier
        assert len(pf.records) == 12
        assert Counter(r.category for r in pf.records) == {"low_entropy": 4, "mixed": 4,
                                                           "high_entropy": 4}
        assert len({r.meta["sub_category"] for r in pf.records}) == 6
        for r in pf.records:
            assert len(r.prompt_token_ids) == isl  # counted, never re-tokenized
            tail = r.prompt_token_ids[-r.meta["instruction_len"]:]
            if "instruction" in r.meta:
                assert tail == tok.encode("\n\n" + r.meta["instruction"]) + b.suffix
                assert r.meta["instruction"] in INSTRUCTIONS[r.meta["sub_category"]]
            else:
                assert tail[-len(b.suffix):] == b.suffix
            assert r.prompt_token_ids[:len(b.prefix)] == b.prefix
            if r.meta["sub_category"] == "needle":
                assert _contains(r.prompt_token_ids,
                                 tok.encode(f"The secret code is {r.meta['needle']}.\n"))
    same = ThroughputBuilder(tok, seed=7).build(1000, "1k", 4)  # from scratch
    other = ThroughputBuilder(tok, seed=8, store=b.store).build(1000, "1k", 4)
    first = b.build(1000, "1k", 4)
    assert [r.prompt_token_ids for r in same.records] == [r.prompt_token_ids
                                                          for r in first.records]
    assert [r.prompt_token_ids for r in other.records] != [r.prompt_token_ids
                                                           for r in first.records]


def test_isl_parsing():
    from loadgen.data.throughput import parse_isl

    assert parse_isl("32k") == ("32k", 32000) and parse_isl("1500") == ("1500", 1500)
    with pytest.raises(ValueError):
        parse_isl("lots")


@pytest.mark.parametrize("method", ["speed-bench", "uniform"])
def test_random_control_matches_lengths(tok, method):
    from loadgen.data.prompts import PromptFile, PromptRecord
    from loadgen.data.random_control import random_like

    like = PromptFile(header={}, records=[
        PromptRecord(id=str(n), category="c", prompt_token_ids=[5] * n) for n in (40, 300, 1200)])
    a = random_like(like, tok, method=method, seed=1)
    b = random_like(like, tok, method=method, seed=1)
    assert [r.input_len for r in a.records] == [40, 300, 1200]
    assert [r.prompt_token_ids for r in a.records] == [r.prompt_token_ids for r in b.records]
    prefix, suffix = tok.template_parts()
    for r in a.records:
        assert r.prompt_token_ids[:len(prefix)] == prefix
        assert r.prompt_token_ids[-len(suffix):] == suffix
        assert max(r.prompt_token_ids) < len(tok.hf)


def test_per_tier_means_per_tier():
    from loadgen.data.throughput import tier_counts

    for n in (1, 2, 3, 4, 512):
        counts = tier_counts(n)
        per = Counter()
        for tier, kinds in (("low", ("code", "sorting")), ("mixed", ("needle", "fewshot")),
                            ("high", ("creative", "dialogue_summary"))):
            per[tier] = sum(counts[k] for k in kinds)
        assert set(per.values()) == {n}, (n, counts)  # every tier present, n prompts each
    with pytest.raises(ValueError, match="at least 1"):
        tier_counts(0)


def test_random_control_keeps_every_turn(tok, tmp_path):
    """Multi-turn records keep all later turns: same requests and ids in total as --like."""
    from loadgen.cli import main
    from loadgen.data.prompts import read_prompts
    from loadgen.data.textfmt import TextPrompt, write_text_prompts
    from loadgen.data.tokenize import tokenize_file

    src = write_text_prompts(tmp_path / "t.jsonl", [
        TextPrompt(id="1", category="qa", turns=["Hello there, how are tides made?"]),
        TextPrompt(id="2", category="qa", turns=["Name a planet.", "Why that one?",
                                                 "And the smallest planet?"]),
        TextPrompt(id="3", category="qa", turns=["Tell me a joke.", "Another, about cats."])])
    like, _ = tokenize_file(src, tmp_path / "like.jsonl", tok)
    assert main(["data", "build", "random", "--like", str(tmp_path / "like.jsonl"),
                 "--tokenizer", "smollm2", "--out", str(tmp_path / "rnd.jsonl")]) == 0
    rnd = read_prompts(tmp_path / "rnd.jsonl")

    def shape(pf):
        return [(r.input_len, [len(t) for t in r.turns or []]) for r in pf.records]

    assert shape(rnd) == shape(like)
    requests = sum(1 + len(r.turns or []) for r in rnd.records)
    assert requests == 6
    _, after = tok.template_parts()
    for r, src_rec in zip(rnd.records, like.records, strict=True):
        assert r.prompt_token_ids != src_rec.prompt_token_ids
        for t in r.turns or []:
            assert t[-len(after):] == after  # still ends with the generation prompt
        assert len(r.messages) == 1 + len(r.turns or [])


def test_tokenize_max_input_tokens(tok, tmp_path, capsys):
    from loadgen.cli import main
    from loadgen.data.prompts import read_prompts
    from loadgen.data.textfmt import TextPrompt, write_text_prompts

    long_text = "word " * 9000
    src = write_text_prompts(tmp_path / "t.jsonl", [
        TextPrompt(id="short", category="qa", turns=["Hi"]),
        TextPrompt(id="long", category="writing", turns=[long_text]),
        TextPrompt(id="multi", category="qa", turns=["Hi", long_text])])
    out = tmp_path / "o.jsonl"
    # default: the tokenizer's model max length, for a GGUF its context_length (SmolLM2: 8,192)
    assert tok.hf.model_max_length == 8192
    assert main(["data", "tokenize", str(src), "--tokenizer", "smollm2", "--out", str(out)]) == 0
    pf = read_prompts(out)
    assert [r.id for r in pf.records] == ["short"]
    assert pf.header["length_guard"]["max_input_tokens"] == 8192
    assert pf.header["length_guard"]["too_long"] == 2
    assert main(["data", "tokenize", str(src), "--tokenizer", "smollm2", "--out", str(out),
                 "--max-input-tokens", "100"]) == 0
    pf = read_prompts(out)
    assert [r.id for r in pf.records] == ["short"]
    assert pf.header["length_guard"]["dropped_ids"] == ["long", "multi"]
    assert "dropped 2 prompts longer than 100 ids" in capsys.readouterr().err
    assert main(["data", "tokenize", str(src), "--tokenizer", "smollm2", "--out",
                 str(tmp_path / "r.jsonl"), "--max-input-tokens", "100",
                 "--on-long", "refuse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 of 3 prompts are longer than --max-input-tokens 100" in err[0]
    assert not (tmp_path / "r.jsonl").exists()


def test_gguf_context_length_read_once_then_from_the_cache(tmp_path, monkeypatch):
    """A GGUF's context_length, parsed from its header the first time and then read from the
    cache (keyed by the file's sha256); a GGUF without the key gives None."""
    import gguf

    from loadgen.data.tokenizer import gguf_context_length

    monkeypatch.setenv("LOADGEN_CACHE", str(tmp_path / "cache"))

    def tiny_gguf(path, context_length):
        w = gguf.GGUFWriter(str(path), "llama")
        if context_length is not None:
            w.add_context_length(context_length)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path

    with_ctx = tiny_gguf(tmp_path / "a.gguf", 1234)
    without = tiny_gguf(tmp_path / "b.gguf", None)
    assert gguf_context_length(with_ctx) == 1234
    assert gguf_context_length(without) is None
    memos = sorted((tmp_path / "cache" / "tokenizers" / "gguf-context").iterdir())
    assert sorted(m.read_text() for m in memos) == ["", "1234"]
    for memo in memos:  # the second read comes from the memo, not from the file
        memo.write_text("777" if memo.read_text() else "")
    assert (gguf_context_length(with_ctx), gguf_context_length(without)) == (777, None)
    assert gguf_context_length(tmp_path / "missing.gguf") is None


def test_run_time_length_warnings():
    from loadgen.data.lengthguard import length_warnings, parse_max_model_len
    from loadgen.data.prompts import PromptRecord

    recs = [PromptRecord(id="a", category="c", prompt_token_ids=[1] * 100),
            PromptRecord(id="b", category="c", prompt_token_ids=[1] * 3000),
            PromptRecord(id="c", category="c", prompt_token_ids=[1] * 1000, turns=[[2] * 1100])]
    lines = length_warnings(recs, 2048, max_tokens=256)
    assert len(lines) == 1 and "2 of 3 prompts cannot fit" in lines[0] and "b, 3000" in lines[0]
    assert length_warnings(recs, None) == []
    tight = length_warnings(recs, 4000, max_tokens=2000)  # b: 3000 + 2000; c: 2100 + 2 x 2000
    assert len(tight) == 1 and "2 of 3 prompts plus max_tokens exceed" in tight[0]
    assert parse_max_model_len(models={"data": [{"id": "m", "max_model_len": 2048}]}) == 2048
    assert parse_max_model_len(props={"default_generation_settings": {"n_ctx": 4096}}) == 4096
    assert parse_max_model_len(models={"data": [{"id": "m"}]}) is None


@pytest.mark.parametrize("protocol", ["vllm", "llamacpp"])
def test_run_warns_before_sending_prompts_longer_than_the_server_allows(
        synthetic, tmp_path, capsys, protocol):
    """The server reports its max model length (vLLM /v1/models, llama.cpp /props): a prompt that
    cannot fit is a warning on stderr before the load starts and in summary.json."""
    from loadgen.config import RunConfig
    from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
    from loadgen.run.benchmark import run_benchmark

    ds = write_prompts(tmp_path / "p.jsonl", [
        PromptRecord(id="short", category="c", prompt_token_ids=[5, 6, 7]),
        PromptRecord(id="long", category="c", prompt_token_ids=list(range(10, 90)))])
    eng = synthetic("--protocol", protocol, "--step-base-ms", "1", "--model-name", "m",
                    "--max-model-len", "64")
    s = run_benchmark(RunConfig.build(endpoint=eng.url, engine=protocol, out=tmp_path / "o",
                                      model="m", output_len=4, concurrency=1, num_requests=2,
                                      warmup_requests=0, shuffle=False),
                      read_prompts(ds), ds)
    expect = "1 of 2 prompts cannot fit the server's max model length 64 (longest: long, 80"
    assert any(expect in w for w in s.warnings), s.warnings
    assert expect in capsys.readouterr().err
    assert s.requests.ok == 1 and s.requests.error == 1  # the server refused the long one
