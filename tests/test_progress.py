"""The live progress line: what it shows after some records (rendered, not mocked)."""

from __future__ import annotations

import time

from rich.console import Console

from loadgen.config import RunConfig
from loadgen.run.progress import LiveProgress


def test_progress_shows_done_in_flight_errors_rate_al_and_time_left(tmp_path):
    cfg = RunConfig.build(endpoint="http://127.0.0.1:1", engine="vllm", out=tmp_path,
                          concurrency=2, num_requests=10, warmup_requests=0)
    prog = LiveProgress(cfg, label="demo", in_flight=lambda: 2)
    now = time.monotonic_ns()
    for i, status in enumerate(["ok", "ok", "error"]):
        prog.on_record({"status": status, "output_tokens": 10, "acceptance_length": 2.0,
                        "arrivals_ns": [now - 1_000_000 * (10 - j) for j in range(10)],
                        "event_tokens": [1] * 10})
        assert prog.done == i + 1
    console = Console(record=True, width=200)
    console.print(prog)
    text = console.export_text()
    assert "done 3/10" in text and "in flight 2" in text and "errors 1" in text
    assert "AL 2.00" in text
    assert "6 tok/s" in text  # 30 tokens in the last 5 s
    assert "left ~" in text
