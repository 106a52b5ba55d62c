"""A sweep against an endpoint with credentials in its URL and a secret header writes neither into
any file of the sweep directory (sweep.json, sweep.yaml, the cells' manifests and summaries)."""

from __future__ import annotations

import yaml

from loadgen.cli import main as cli_main
from tests.synthetic_data import make_dataset

SECRETS = ("hunter2pw", "querytok123", "headertok456")


def test_sweep_files_hold_no_secret(synthetic, tmp_path, monkeypatch):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "1", "--model-name", "m")
    host = eng.url.split("://", 1)[1]
    make_dataset(tmp_path / "ds.jsonl", n=4)
    monkeypatch.setenv("SWEEP_SECRET_HEADER", SECRETS[2])
    cfg = {
        "engine": "vllm",
        "sd_configs": [{"label": "ep", "endpoint": f"http://u:{SECRETS[0]}@{host}/?key={SECRETS[1]}"}],
        "datasets": [{"name": "d", "path": "ds.jsonl"}],
        "loads": {"concurrency": [2]},
        "run": {"output_len": 4, "num_requests": 4, "warmup_requests": 0, "model": "m",
                "headers": ["X-Token: env:SWEEP_SECRET_HEADER", f"X-Other: {SECRETS[2]}"]},
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    rc = cli_main(["sweep", "--config", str(tmp_path / "sweep.yaml"), "--out", str(out),
                   "--quiet"])
    assert rc == 0
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "summary.json" for p in files)
    for p in files:
        text = p.read_text(errors="replace")
        for s in SECRETS:
            assert s not in text, (p, s)
