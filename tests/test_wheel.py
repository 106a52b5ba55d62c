"""A wheel built from this repository, installed in a fresh venv outside the clone, runs the
README's commands: the package carries everything it reads (built-in prompts, presets, recipes).

The venv sees the machine's site-packages (so the dependencies need not be downloaded again), but
loadgen itself comes from the wheel: the test checks where it was imported from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.run.benchmark import run_benchmark

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(python, loadgen console script, a folder outside the clone to run in)."""
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(REPO)], check=True, timeout=600,
                   cwd=root)
    wheels = list(dist.glob("loadgen-*.whl"))
    assert len(wheels) == 1, wheels
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # --ignore-installed: the machine's site-packages may hold loadgen itself (an editable
    # install of a checkout); the venv must get the wheel's copy regardless
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q",
                    "--no-deps", "--ignore-installed", str(wheels[0])], check=True,
                   timeout=600, cwd=root)
    work = root / "elsewhere"
    work.mkdir()
    return py, env_dir / "bin" / "loadgen", work


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_wheel_imports_loadgen_from_the_venv(wheel_env):
    py, _, work = wheel_env
    out = _run([str(py), "-c", "import loadgen, loadgen.resources as r; "
                "print(loadgen.__file__); print(r.resource_path('presets'))"], work)
    assert out.returncode == 0, out.stderr
    mod, presets = out.stdout.split()
    assert str(py.parent.parent) in mod and str(REPO) not in mod
    assert (Path(presets) / "ngram.yaml").is_file()


def test_wheel_runs_the_readme_commands(wheel_env, tmp_path):
    _, loadgen, work = wheel_env
    r = _run([str(loadgen), "run", "--help"], work)
    assert r.returncode == 0 and "--concurrency" in r.stdout, r.stderr
    r = _run([str(loadgen), "serve", "llamacpp", "--preset", "ngram", "--print-command"], work)
    assert r.returncode == 0, r.stderr
    assert "--spec-type" in r.stdout and "ngram" in r.stdout


def test_wheel_tokenizes_the_builtin_prompts(wheel_env, tmp_path):
    pytest.importorskip("transformers")
    _, loadgen, work = wheel_env
    out = tmp_path / "builtin.jsonl"
    r = _run([str(loadgen), "data", "tokenize", "--tokenizer", "smollm2", "--out", str(out)],
             work)
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]).get("loadgen_prompts") and len(lines) == 1 + 44


def test_wheel_builds_a_report(wheel_env, synthetic, tmp_path):
    pytest.importorskip("matplotlib")
    _, loadgen, work = wheel_env
    ds = write_prompts(tmp_path / "p.jsonl", [
        PromptRecord(id=str(i), category="c", prompt_token_ids=[5 + i, 6, 7]) for i in range(6)])
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m")
    run_dir = tmp_path / "run"
    run_benchmark(RunConfig.build(endpoint=eng.url, engine="vllm", out=run_dir, model="m",
                                  output_len=8, concurrency=2, num_requests=6),
                  read_prompts(ds), ds)
    r = _run([str(loadgen), "report", str(run_dir)], work)
    assert r.returncode == 0, r.stderr
    assert (run_dir / "report.html").stat().st_size > 0 and (run_dir / "report.md").is_file()
