"""`loadgen serve <engine> --print-command`: the exact argv, flag by flag, against ENGINES.md.

Runs the real CLI (loadgen.cli.main) and parses what it prints; nothing is started or downloaded.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loadgen.cli import main

REPO = Path(__file__).resolve().parents[1]
M = "org/target-model"
D = "org/draft-model"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LOADGEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LOADGEN_LLAMA_SERVER", raising=False)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


PRESETS = Path(__file__).resolve().parents[1] / "loadgen" / "resources" / "presets"


def printed(capsys, *argv: str) -> tuple[list[str], dict[str, str]]:
    """(argv, {config path: text}) from --print-command."""
    args = list(argv)
    cut = args.index("--") if "--" in args else len(args)
    rc, out, err = run_cli(capsys, *args[:cut], "--print-command", *args[cut:])
    assert rc == 0, err
    lines = out.rstrip("\n").split("\n")
    files: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        if line.startswith("# file: "):
            current = line[len("# file: "):]
            files[current] = []
        else:
            assert current is not None, out
            files[current].append(line)
    return shlex.split(lines[0]), {k: "\n".join(v) + "\n" for k, v in files.items()}


def opt(argv: list[str], flag: str) -> str:
    """The value after ``flag`` (which must appear exactly once)."""
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


def opts(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def serve_args(engine: str, method: str, k: int | None = None, draft: str | None = None):
    args = ["serve", engine, "--model", M, "--spec", method]
    if draft:
        args += ["--draft", draft]
    if k is not None:
        args += ["--num-spec-tokens", str(k)]
    return args


DRAFT_FOR = {"none": None, "ngram": None, "draft": D, "eagle3": D, "mtp": None}


# ---------------------------------------------------------------------------------------- vLLM
@pytest.mark.parametrize("method", ["none", "ngram", "draft", "eagle3", "mtp"])
def test_vllm(capsys, method):
    argv, files = printed(capsys, *serve_args("vllm", method, 3, DRAFT_FOR[method])
                          if method != "none" else serve_args("vllm", method))
    assert argv[:3] == ["vllm", "serve", M]
    assert opt(argv, "--host") == "127.0.0.1"
    assert opt(argv, "--port") == "8000"
    assert "--disable-log-stats" not in argv  # would freeze the spec_decode counters
    assert files == {}
    if method == "none":
        assert "--speculative-config" not in argv
        return
    cfg = json.loads(opt(argv, "--speculative-config"))
    expected = {
        "ngram": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
                  "prompt_lookup_min": 1},
        "draft": {"method": "draft_model", "model": D, "num_speculative_tokens": 3},
        "eagle3": {"method": "eagle3", "model": D, "num_speculative_tokens": 3},
        "mtp": {"method": "mtp", "num_speculative_tokens": 3},
    }[method]
    assert cfg == expected


def test_vllm_with_python_uses_the_api_server_module(capsys):
    argv, _ = printed(capsys, "serve", "vllm", "--model", M, "--python", "/venv/bin/python",
                      "--spec", "ngram", "--port", "8123")
    assert argv[:5] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
                        "--model", M]
    assert opt(argv, "--port") == "8123"
    assert json.loads(opt(argv, "--speculative-config"))["num_speculative_tokens"] == 4


# -------------------------------------------------------------------------------------- SGLang
@pytest.mark.parametrize("method", ["none", "ngram", "draft", "eagle3", "mtp"])
def test_sglang(capsys, method):
    k = None if method == "none" else 3
    argv, files = printed(capsys, *serve_args("sglang", method, k, DRAFT_FOR[method]))
    assert argv[:5] == ["python3", "-m", "sglang.launch_server", "--model-path", M]
    assert "--enable-metrics" in argv
    assert opt(argv, "--host") == "127.0.0.1"
    assert opt(argv, "--port") == "30000"
    assert files == {}
    if method == "none":
        assert not [a for a in argv if a.startswith("--speculative")]
        return
    algo = {"ngram": "NGRAM", "draft": "STANDALONE", "eagle3": "EAGLE3", "mtp": "NEXTN"}[method]
    assert opt(argv, "--speculative-algorithm") == algo
    assert opt(argv, "--speculative-num-draft-tokens") == "4"  # K + 1
    if method == "ngram":
        assert "--speculative-num-steps" not in argv
    else:
        assert opt(argv, "--speculative-num-steps") == "3"
        assert opt(argv, "--speculative-eagle-topk") == "1"
    if DRAFT_FOR[method]:
        assert opt(argv, "--speculative-draft-model-path") == D
    else:
        assert "--speculative-draft-model-path" not in argv


def test_sglang_mtp_accepts_an_explicit_draft(capsys):
    argv, _ = printed(capsys, *serve_args("sglang", "mtp", 2, "org/nextn"))
    assert opt(argv, "--speculative-algorithm") == "NEXTN"
    assert opt(argv, "--speculative-draft-model-path") == "org/nextn"


# -------------------------------------------------------------------------------- TensorRT-LLM
@pytest.mark.parametrize("method", ["none", "ngram", "draft", "eagle3", "mtp"])
def test_trtllm(capsys, method):
    k = None if method == "none" else 3
    argv, files = printed(capsys, *serve_args("trtllm", method, k, DRAFT_FOR[method]))
    assert argv[:2] == ["trtllm-serve", M]
    assert opt(argv, "--backend") == "pytorch"
    assert opt(argv, "--host") == "127.0.0.1"
    assert opt(argv, "--port") == "8000"
    path = opt(argv, "--extra_llm_api_options")
    # The YAML is written where the command points, and printed verbatim.
    assert list(files) == [path]
    assert Path(path).read_text() == files[path]
    cfg = yaml.safe_load(files[path])
    assert cfg["enable_iter_perf_stats"] is True
    assert cfg["return_perf_metrics"] is True
    if method == "none":
        assert "speculative_config" not in cfg
        return
    expected = {
        "ngram": {"decoding_type": "NGram", "max_draft_len": 3, "max_matching_ngram_size": 3},
        "draft": {"decoding_type": "DraftTarget", "max_draft_len": 3, "speculative_model": D},
        "eagle3": {"decoding_type": "Eagle3", "max_draft_len": 3, "speculative_model": D},
        "mtp": {"decoding_type": "MTP", "num_nextn_predict_layers": 3},
    }[method]
    assert cfg["speculative_config"] == expected


def test_trtllm_yaml_differs_per_config(capsys):
    a, _ = printed(capsys, *serve_args("trtllm", "eagle3", 3, D))
    b, _ = printed(capsys, *serve_args("trtllm", "eagle3", 4, D))
    assert opt(a, "--extra_llm_api_options") != opt(b, "--extra_llm_api_options")


# ----------------------------------------------------------------------------------- llama.cpp
@pytest.mark.parametrize("method", ["none", "ngram", "draft", "eagle3", "mtp"])
def test_llamacpp(capsys, method, tmp_path):
    draft = str(tmp_path / "draft.gguf") if method in ("draft", "eagle3") else None
    k = None if method == "none" else 5
    args = ["serve", "llamacpp", "--model", "/m/target.gguf", "--binary", "/opt/llama-server",
            "--spec", method]
    if draft:
        args += ["--draft", draft]
    if k:
        args += ["-k", str(k)]
    argv, files = printed(capsys, *args)
    assert argv[0] == "/opt/llama-server"
    assert opt(argv, "-m") == "/m/target.gguf"
    assert opt(argv, "--host") == "127.0.0.1"
    assert opt(argv, "--port") == "8080"
    assert "--metrics" in argv
    assert files == {}
    # Removed in this llama.cpp: they abort the server ("argument has been removed").
    assert not {"--draft", "--draft-max", "--draft-min", "--draft-n"} & set(argv)
    if method == "none":
        assert "--spec-type" not in argv and "-md" not in argv
        return
    spec_type = {"ngram": "ngram-simple", "draft": "draft-simple", "eagle3": "draft-eagle3",
                 "mtp": "draft-mtp"}[method]
    assert opt(argv, "--spec-type") == spec_type
    if method == "ngram":
        assert opt(argv, "--spec-ngram-simple-size-n") == "3"
        assert opt(argv, "--spec-ngram-simple-size-m") == "5"
        assert "--spec-draft-n-max" not in argv and "-md" not in argv
    else:
        assert opt(argv, "--spec-draft-n-max") == "5"
        if draft:
            assert opt(argv, "-md") == draft
        else:
            assert "-md" not in argv


def test_llamacpp_defaults_to_smollm2_and_the_cached_binary(capsys, tmp_path):
    argv, _ = printed(capsys, "serve", "llamacpp", "--spec", "ngram")
    cache = tmp_path / "cache"
    assert argv[0] == str(cache / "llama.cpp" / "11434.0.0" / "bin" / "llama-server")
    assert opt(argv, "-m") == str(cache / "models" / "smollm2-0.1.2" /
                                  "SmolLM2-135M-Instruct.Q4_1.gguf")
    # ENGINES.md sizes: n=3, m=4 by default.
    assert opt(argv, "--spec-ngram-simple-size-n") == "3"
    assert opt(argv, "--spec-ngram-simple-size-m") == "4"
    assert not list(cache.rglob("*.gguf"))  # --print-command downloads nothing


def test_llamacpp_draft_specs(capsys):
    argv, _ = printed(capsys, "serve", "llamacpp", "--model", "/m/t.gguf", "--spec", "draft",
                      "--draft", "self")
    assert opt(argv, "-md") == "/m/t.gguf"
    assert opt(argv, "--spec-type") == "draft-simple"
    assert opt(argv, "--spec-draft-n-max") == "4"
    argv, _ = printed(capsys, "serve", "llamacpp", "--spec", "draft", "--draft",
                      "smollm2:layers=8", "-k", "2")
    md = opt(argv, "-md")
    assert Path(md).name.startswith("SmolLM2-135M-Instruct.Q4_1.layers8.")
    assert md.endswith(".gguf")
    assert opt(argv, "--spec-draft-n-max") == "2"


# ------------------------------------------------------------------------ common behaviour
@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "llamacpp"])
def test_host_port_and_passthrough_come_last(capsys, engine):
    argv, _ = printed(capsys, "serve", engine, "--model", M, "--host", "0.0.0.0", "--port",
                      "9123", "--spec", "ngram", "--", "--extra-flag", "7")
    assert opt(argv, "--host") == "0.0.0.0"
    assert opt(argv, "--port") == "9123"
    assert argv[-2:] == ["--extra-flag", "7"]


def test_port_zero_picks_a_free_port(capsys):
    argv, _ = printed(capsys, "serve", "vllm", "--model", M, "--port", "0")
    assert 1024 <= int(opt(argv, "--port")) <= 65535


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "vllm", "--model", M, "--spec", "draft"], "--spec draft needs --draft"),
        (["serve", "sglang", "--model", M, "--spec", "eagle3"], "--spec eagle3 needs --draft"),
        (["serve", "trtllm", "--model", M, "--spec", "draft"], "--spec draft needs --draft"),
        (["serve", "llamacpp", "--spec", "eagle3"], "--spec eagle3 needs --draft"),
        (["serve", "vllm", "--model", M, "--spec", "ngram", "--draft", D],
         "--draft is only used with"),
        (["serve", "vllm", "--model", M, "--draft", D], "--draft is only used with"),
        (["serve", "vllm", "--model", M, "-k", "3"], "--num-spec-tokens needs an SD method"),
        (["serve", "vllm", "--model", M, "--spec", "ngram", "-k", "0"], "must be >= 1"),
        (["serve", "llamacpp", "--spec", "mtp", "--draft", "x.gguf"], "drop --draft"),
        (["serve", "trtllm", "--model", M, "--spec", "mtp", "--draft", D], "drop --draft"),
        (["serve", "vllm", "--spec", "ngram"], "--model is required for vllm"),
        (["serve", "llamacpp", "--spec", "draft", "--draft", "tiny:layers=4"],
         "unknown base model"),
        (["serve", "vllm", "--model", M, "--preset", "no-such-preset"], "not found"),
        (["serve", "llamacpp", "--preset", "llama33-70b-eagle3"], "not llamacpp"),
    ],
)
def test_bad_combinations_error_clearly(capsys, args, message):
    rc, out, err = run_cli(capsys, *args, "--print-command")
    assert rc == 2
    assert out == ""
    assert message in err
    assert "error:" in err


def test_unknown_spec_is_rejected_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "vllm", "--model", M, "--spec", "medusa", "--print-command"])
    assert exc.value.code == 2
    assert "invalid choice: 'medusa'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ presets
def test_preset_fills_in_and_options_override(capsys):
    argv, _ = printed(capsys, "serve", "vllm", "--preset", "llama33-70b-eagle3")
    assert argv[:3] == ["vllm", "serve", "meta-llama/Llama-3.3-70B-Instruct"]
    assert json.loads(opt(argv, "--speculative-config")) == {
        "method": "eagle3", "model": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
        "num_speculative_tokens": 3}
    assert opt(argv, "--tensor-parallel-size") == "8"
    argv, _ = printed(capsys, "serve", "vllm", "--preset", "llama33-70b-eagle3", "-k", "5",
                      "--", "--max-model-len", "8192")
    assert json.loads(opt(argv, "--speculative-config"))["num_speculative_tokens"] == 5
    assert argv[-4:] == ["--tensor-parallel-size", "8", "--max-model-len", "8192"]


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm"])
@pytest.mark.parametrize("preset", ["llama33-70b-eagle3", "gpt-oss-120b-eagle3",
                                    "qwen3-next-mtp", "ngram"])
def test_every_preset_prints_for_its_engines(capsys, engine, preset):
    """Each preset's draft length reaches the engine's own speculative setting."""
    extra = ["--model", M] if preset == "ngram" else []
    argv, files = printed(capsys, "serve", engine, "--preset", preset, *extra)
    want = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())["num_spec_tokens"]
    if engine == "vllm":
        k = json.loads(opt(argv, "--speculative-config"))["num_speculative_tokens"]
    elif engine == "sglang":
        k = (int(opt(argv, "--speculative-num-steps")) if "--speculative-num-steps" in argv
             else int(opt(argv, "--speculative-num-draft-tokens")) - 1)  # NGRAM: K + 1
    else:
        spec = yaml.safe_load(files[opt(argv, "--extra_llm_api_options")])["speculative_config"]
        k = spec.get("max_draft_len") or spec.get("num_nextn_predict_layers")
    assert k == want


@pytest.mark.parametrize("preset", ["ngram", "smollm2-draft-l8", "smollm2-self"])
def test_llamacpp_presets(capsys, preset):
    argv, _ = printed(capsys, "serve", "llamacpp", "--preset", preset)
    assert "--spec-type" in argv


def test_preset_by_path(capsys, tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("model: my/model\nspec: ngram\nnum_spec_tokens: 6\nextra_args: [--x]\n")
    argv, _ = printed(capsys, "serve", "sglang", "--preset", str(p))
    assert opt(argv, "--model-path") == "my/model"
    assert opt(argv, "--speculative-num-draft-tokens") == "7"
    assert argv[-1] == "--x"


def test_preset_with_unknown_key_is_an_error(capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: m\nspek: ngram\n")
    rc, _, err = run_cli(capsys, "serve", "vllm", "--preset", str(p), "--print-command")
    assert rc == 2 and "unknown keys ['spek']" in err


def test_server_script_execs_the_cli(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
           "LOADGEN_CACHE": str(tmp_path / "c"), "HOME": str(tmp_path)}
    proc = subprocess.run([str(REPO / "servers" / "sglang.sh"), "--model", M, "--spec", "ngram",
                           "--print-command"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert shlex.split(proc.stdout.splitlines()[0])[:3] == ["python3", "-m",
                                                             "sglang.launch_server"]
