"""The fault matrix of docs/RELIABILITY.md: one regression test per defect, each run
as a user would (``loadgen run`` as a subprocess, real signals) against real servers on
loopback: the synthetic engine with its fault modes, a socket that never answers, a stdlib HTTP
server sending HTML errors."""

from __future__ import annotations

import contextlib
import http.server
import json
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loadgen.config import RunConfig
from loadgen.data.prompts import PromptFile, PromptRecord, read_prompts
from loadgen.results.records import read_records
from loadgen.results.summary import Summary
from loadgen.run.benchmark import run_benchmark
from tests.synthetic_data import make_dataset

# cold requests measured: the tests count every record (the default warm-up adds requests)
RUN_ARGS = ["run", "--warmup-requests", "0"]
RUN = [sys.executable, "-m", "loadgen", *RUN_ARGS]  # as a user runs it: signals, limits


def loadgen_run(*args: str, limits: dict[int, tuple[int, int]] | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    def preexec() -> None:
        for which, value in (limits or {}).items():
            resource.setrlimit(which, value)

    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=120,
                          preexec_fn=preexec if limits else None, env=env)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("loadgen"), proc.stderr
    return lines[0]


def summary_of(out: Path) -> Summary:
    return Summary.from_dict(json.loads((out / "summary.json").read_text()))


def status_of(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["status"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_line(path: Path, proc: subprocess.Popen[str]) -> None:
    """Block until ``path`` holds a complete line (an event), or the process ended."""
    while proc.poll() is None:
        if path.exists() and b"\n" in path.read_bytes():
            return
        time.sleep(0.02)  # a polling interval, not a timing assumption
    raise AssertionError(f"process ended before {path} got a line: {proc.stderr.read()}")


FD_DIR = Path("/proc/self/fd")


def _open_descriptors() -> list[str]:
    out = []
    for f in FD_DIR.iterdir():
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            out.append(str(f.readlink()))
    return sorted(out)


@pytest.mark.skipif(not FD_DIR.is_dir(), reason="needs /proc")
def test_runs_in_one_process_hold_no_descriptors(synthetic, tmp_path):
    """A capacity search or a sweep runs many benchmarks in one process: each run gives back
    its event loop (six descriptors), connections and files; a process left holding over
    1024 descriptors cannot use select()."""
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=8)
    held = []
    for k in range(4):
        cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / f"o{k}",
                              output_len=4, concurrency=2, num_requests=8, warmup_requests=0)
        s = run_benchmark(cfg, read_prompts(ds), ds, argv=["t"])
        assert s.requests.ok == 8
        held.append(_open_descriptors())
    # the first runs may open what a process keeps (caches); later runs add nothing
    assert held[3] == held[1]


# -- 1. requests lost silently --------------------------------------------------------------
def test_lost_requests_an_exception_in_encode_is_that_requests_error(synthetic, tmp_path):
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m")
    recs = [PromptRecord(id=f"p{i}", category="c",
                         prompt_token_ids=[5, 6, 2**70 if i % 2 else 7]) for i in range(8)]
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / "o", output_len=4,
                          concurrency=2, num_requests=8, warmup_requests=0)
    s = run_benchmark(cfg, PromptFile(header={}, records=recs), argv=["t"])
    assert (s.requests.total, s.requests.ok, s.requests.error) == (8, 4, 4)
    assert len(read_records(tmp_path / "o" / "requests.jsonl")) == 8
    assert all("client error" in k for k in s.error_reasons)


def test_lost_requests_a_record_that_cannot_be_written_stops_the_run_loudly(synthetic,
                                                                            tmp_path):
    """A full disk, as the per-file size limit (EFBIG) of a child process: one line, exit 1,
    a summary of every request that ended, manifest ``failed``."""
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    out = tmp_path / "out"
    proc = loadgen_run("--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds),
                       "--output-len", "64", "--concurrency", "2", "--num-requests", "400",
                       "--out", str(out), "--quiet",
                       limits={resource.RLIMIT_FSIZE: (60_000, 60_000)})
    assert proc.returncode == 1, proc.stderr
    assert "cannot write a record" in one_line_error(proc)
    assert status_of(out) == "failed"
    s = summary_of(out)
    assert 0 < s.requests.total < 400
    assert any("cannot write a record" in w for w in s.warnings)


# -- 2. hangs and endless runs from unchecked values ----------------------------------------
@pytest.mark.parametrize("flags", [
    ["--request-rate", "0"], ["--request-rate", "-5"], ["--request-rate", "nan"],
    ["--request-rate", "1", "--max-concurrency", "-1"],
    ["--request-rate", "1", "--burstiness", "0"], ["--duration", "0"], ["--duration", "-5"],
    ["--timeout", "-1"], ["--warmup-requests", "-3"], ["--concurrency", "0"],
    ["--num-requests", "0"], ["--output-len", "-2"], ["--max-error-rate", "-0.1"],
    ["--max-error-rate", "1.5"], ["--max-error-rate", "nan"],
])
def test_hangs_from_unchecked_values_are_refused_up_front(loadgen_cli, tmp_path, flags):
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    out = tmp_path / "out"
    proc = loadgen_cli(*RUN_ARGS, "--endpoint", f"http://127.0.0.1:{closed_port()}",
                       "--dataset", str(ds), "--out", str(out), *flags)
    assert proc.returncode == 2
    assert flags[-2] in one_line_error(proc)
    assert not out.exists()


# -- 3. a server that accepts connections and never answers ---------------------------------
def test_server_that_never_answers_ends_with_timeouts_and_a_reason(synthetic, tmp_path,
                                                                    loadgen_cli):
    eng = synthetic("--protocol", "vllm", "--never-answer")
    ds = make_dataset(tmp_path / "ds.jsonl", n=4)
    out = tmp_path / "out"
    proc = loadgen_cli(*RUN_ARGS, "--endpoint", eng.url, "--engine", "vllm", "--dataset",
                       str(ds), "--timeout", "1", "--num-requests", "2", "--concurrency", "2",
                       "--probe-timeout", "0.5", "--out", str(out), "--quiet")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "no request succeeded" in line and "timed out after 1 s" in line
    s = summary_of(out)
    assert s.error_reasons == {"timed out after 1 s": 2}
    # one scrape waited for its bound, the later ones were skipped (not waited for again)
    assert sum("scrape" in w for w in s.warnings) == 1, s.warnings
    assert "0.5 s" in next(w for w in s.warnings if "scrape" in w)


def test_hang_fault_bounds_only_the_hung_requests(synthetic, tmp_path):
    eng = synthetic("--protocol", "sglang", "--fast", "--fault", "hang:every=3",
                    "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=9)
    cfg = RunConfig.build(endpoint=eng.url, engine="sglang", out=tmp_path / "o", output_len=8,
                          concurrency=3, num_requests=9, timeout_s=1.0, warmup_requests=0)
    s = run_benchmark(cfg, read_prompts(ds), argv=["t"])
    assert (s.requests.ok, s.requests.error) == (6, 3)
    assert s.error_reasons == {"timed out after 1 s": 3}


# -- 6. Ctrl-C: first stops within the run, second exits at once; SIGTERM likewise -----------
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signals_stop_the_run_with_a_partial_summary(synthetic, tmp_path, sig, code):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--fault", "hang:p=1", "--truth-log", str(truth))
    ds = make_dataset(tmp_path / "ds.jsonl", n=4)
    out = tmp_path / "out"
    proc = subprocess.Popen([*RUN, "--endpoint", eng.url, "--engine", "vllm", "--dataset",
                             str(ds), "--concurrency", "2", "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(truth, proc)  # a request is in flight (the server holds it)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    s = summary_of(out)
    assert s.interrupted and s.requests.cancelled == s.requests.total >= 1
    assert status_of(out) == "interrupted"


def test_two_quick_ctrl_c_still_leave_a_summary(synthetic, tmp_path):
    truth = tmp_path / "truth.jsonl"
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "5", "--truth-log", str(truth),
                    "--fault", "hang:every=4")
    ds = make_dataset(tmp_path / "ds.jsonl", n=40)
    out = tmp_path / "out"
    proc = subprocess.Popen([*RUN, "--endpoint", eng.url, "--engine", "vllm", "--dataset",
                             str(ds), "--concurrency", "4", "--output-len", "50", "--out",
                             str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(out / "requests.jsonl", proc)  # at least one record is written
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    s = summary_of(out)
    assert s.interrupted and s.requests.total == len(read_records(out / "requests.jsonl"))
    assert status_of(out) == "interrupted"


def test_ctrl_c_while_the_run_starts_is_one_line(tmp_path):
    """A listener that accepts and never answers: the run is stuck in its start (probes);
    Ctrl-C there ends it at once with a valid (empty) summary, no traceback: the probe and
    the first scrape are cut, not waited for until their bound (no timeout warning)."""
    ds = make_dataset(tmp_path / "ds.jsonl", n=2)
    out = tmp_path / "out"
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        proc = subprocess.Popen([*RUN, "--endpoint", f"http://127.0.0.1:{port}", "--dataset",
                                 str(ds), "--out", str(out), "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn, _ = srv.accept()  # the client's first probe connected
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        conn.close()
    assert proc.returncode == 130 and "Traceback" not in err, err
    s = summary_of(out)
    assert s.interrupted and status_of(out) == "interrupted"
    assert any("interrupted during start-up" in w for w in s.warnings), s.warnings
    assert not any("probe failed" in w or "within 5 s" in w for w in s.warnings), s.warnings


# -- 7. run directories are never replaced silently -----------------------------------------
def test_run_directory_is_not_destroyed(synthetic, loadgen_cli, tmp_path, monkeypatch):
    eng = synthetic("--protocol", "vllm", "--fast")
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    out = tmp_path / "out"
    base = ["--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds), "--output-len",
            "4", "--out", str(out), "--quiet"]
    assert loadgen_cli(*RUN_ARGS, *base).returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = loadgen_cli(*RUN_ARGS, *base)
    assert proc.returncode == 2 and "already holds a run" in one_line_error(proc)
    monkeypatch.delenv("LOADGEN_UNSET_KEY", raising=False)
    proc = loadgen_cli(*RUN_ARGS, *base, "--overwrite", "--api-key-env", "LOADGEN_UNSET_KEY")
    assert proc.returncode == 2 and "LOADGEN_UNSET_KEY" in one_line_error(proc)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    assert loadgen_cli(*RUN_ARGS, *base, "--overwrite", "--num-requests", "2").returncode == 0
    assert summary_of(out).requests.total == 2 and status_of(out) == "complete"


# -- 8. oversized SSE events ----------------------------------------------------------------
def test_oversized_event_is_the_requests_error(synthetic, tmp_path):
    eng = synthetic("--protocol", "vllm", "--fast", "--fault", "oversized:every=2,after=2",
                    "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=4)
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / "o", output_len=8,
                          concurrency=2, num_requests=4, warmup_requests=0)
    s = run_benchmark(cfg, read_prompts(ds), argv=["t"])
    assert (s.requests.ok, s.requests.error) == (2, 2)
    (reason,) = s.error_reasons
    assert reason.startswith("stream event larger than 16777216 bytes")


# -- 9. a restarted server ------------------------------------------------------------------
def test_restarted_server_counters_are_detected(synthetic, tmp_path):
    eng = synthetic("--protocol", "vllm", "--step-base-ms", "2", "-k", "3",
                    "--fault", "counter_reset:at=30", "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=60)
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / "o", output_len=32,
                          concurrency=2, num_requests=60, scrape_interval_s=0.1, warmup_requests=0)
    s = run_benchmark(cfg, read_prompts(ds), argv=["t"])
    assert any("went backwards" in w and "consistent segments" in w for w in s.warnings)
    delta = s.server_counters.window_delta
    assert delta and all(v >= 0 for v in delta.values())
    assert s.acceptance.acceptance_length is not None and s.acceptance.acceptance_length > 1


def test_restarted_server_without_consistent_segments_has_no_acceptance(synthetic, tmp_path):
    """One segment only (no scrape inside the window): the restart after the warm-up leaves
    the counters below their window-start values, and nothing consistent remains."""
    eng = synthetic("--protocol", "vllm", "--fast", "--fault", "counter_reset:at=12",
                    "--model-name", "m")
    ds = make_dataset(tmp_path / "ds.jsonl", n=16)
    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=tmp_path / "o", output_len=16,
                          concurrency=2, warmup_requests=10, num_requests=6, scrape_interval_s=3600,
                          category_windows=False)  # one window: the segment this test is about
    s = run_benchmark(cfg, read_prompts(ds), argv=["t"])
    assert any("went backwards" in w and "unavailable" in w for w in s.warnings)
    assert s.acceptance.acceptance_length is None
    assert s.server_counters.window_delta is None


# -- 10. bad inputs are one line ------------------------------------------------------------
def _parquet_with_bad_json(path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["a"], "category": ["c"], "prompt_token_ids": [[1, 2]],
                             "meta": ["{not json"]}), path)
    return path


@pytest.mark.parametrize("kind, expect", [
    ("binary", "not UTF-8"), ("latin1", "not UTF-8"), ("notgzip", "not a valid gzip"),
    ("parquet", "column 'meta' is not valid JSON"), ("directory", "is a directory"),
    ("bigid", "below 2**32"),
])
def test_bad_inputs_are_one_line(loadgen_cli, tmp_path, kind, expect):
    p = tmp_path / "ds.jsonl"
    if kind == "binary":
        p.write_bytes(bytes(range(256)))
    elif kind == "latin1":
        p.write_bytes('{"id": "a", "category": "caf\xe9", "prompt_token_ids": [1]}\n'
                      .encode("latin-1"))
    elif kind == "notgzip":
        p = tmp_path / "ds.jsonl.gz"
        p.write_text('{"id": "a"}\n')
    elif kind == "parquet":
        p = _parquet_with_bad_json(tmp_path / "ds.parquet")
    elif kind == "directory":
        p.mkdir()
    else:
        p.write_text(json.dumps({"id": "a", "category": "c", "prompt_token_ids": [2**70]}))
    proc = loadgen_cli(*RUN_ARGS, "--endpoint", f"http://127.0.0.1:{closed_port()}",
                       "--dataset", str(p), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert expect in one_line_error(proc)


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_bad_out_is_one_line(loadgen_cli, tmp_path, where):
    ds = make_dataset(tmp_path / "ds.jsonl", n=2)
    f = tmp_path / "afile"
    f.write_text("x")
    out = f if where == "file" else f / "sub"
    proc = loadgen_cli(*RUN_ARGS, "--endpoint", f"http://127.0.0.1:{closed_port()}",
                       "--dataset", str(ds), "--out", str(out))
    assert proc.returncode == 2
    assert str(out) in one_line_error(proc)


# -- 11. exit codes and the open-file limit -------------------------------------------------
def test_exit_nonzero_when_everything_failed(tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    out = tmp_path / "out"
    proc = loadgen_run("--endpoint", f"http://127.0.0.1:{closed_port()}", "--dataset", str(ds),
                       "--out", str(out), "--quiet")
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "no request succeeded" in line and "cannot connect" in line
    assert summary_of(out).requests.error == 3


def test_exit_nonzero_above_the_max_error_rate(synthetic, loadgen_cli, tmp_path):
    """Every 4th request answered 500: 5 of 20 failed (25%). Above --max-error-rate (default
    0.05, then 0.2) the run ends with exit 1 and one line; at 0.25 (not above) exit 0; the
    summary warns either way, and says so again when rebuilt from the run directory."""
    eng = synthetic("--protocol", "vllm", "--fast", "--model-name", "m",
                    "--fault", "http500:every=4")
    ds = make_dataset(tmp_path / "ds.jsonl", n=20)
    common = ("--endpoint", eng.url, "--engine", "vllm", "--dataset", ds, "--num-requests",
              "20", "--warmup-requests", "0", "--concurrency", "2", "--output-len", "4",
              "--quiet")
    for k, (flags, code) in enumerate([((), 1), (("--max-error-rate", "0.2"), 1),
                                       (("--max-error-rate", "0.25"), 0)]):
        out = tmp_path / f"o{k}"
        proc = loadgen_cli("run", *common, "--out", out, *flags)
        assert proc.returncode == code, proc.stderr
        s = summary_of(out)
        assert (s.requests.total, s.requests.ok, s.requests.error) == (20, 15, 5)
        assert s.warnings[0].startswith("5 of 20 measured requests failed (25.0%)")
        if code:
            line = one_line_error(proc)
            limit = flags[1] if flags else "0.05"
            assert f"5 of 20 measured requests failed (25.0%, above --max-error-rate {limit})" \
                in line and "500" in line and str(out) in line
        else:
            assert proc.stderr == ""
    rebuilt = loadgen_cli("summarize", tmp_path / "o2")
    assert rebuilt.returncode == 0 and "5 of 20 measured requests failed" in rebuilt.stdout


def test_open_file_limit_below_the_concurrency_is_refused(tmp_path):
    ds = make_dataset(tmp_path / "ds.jsonl", n=3)
    proc = loadgen_run("--endpoint", f"http://127.0.0.1:{closed_port()}", "--dataset", str(ds),
                       "--concurrency", "500", "--out", str(tmp_path / "out"),
                       limits={resource.RLIMIT_NOFILE: (256, 256)})
    assert proc.returncode == 2
    assert "needs about 564 open files" in one_line_error(proc)
    assert not (tmp_path / "out").exists()


def test_open_file_limit_is_raised_to_the_hard_limit(synthetic, tmp_path):
    eng = synthetic("--protocol", "vllm", "--fast", "--max-num-seqs", "400")
    ds = make_dataset(tmp_path / "ds.jsonl", n=300)
    out = tmp_path / "out"
    proc = loadgen_run("--endpoint", eng.url, "--engine", "vllm", "--dataset", str(ds),
                       "--concurrency", "300", "--output-len", "2", "--out", str(out),
                       "--quiet", limits={resource.RLIMIT_NOFILE: (128, 4096)})
    assert proc.returncode == 0, proc.stderr
    s = summary_of(out)
    assert s.requests.ok == 300 and not s.error_reasons


# -- 12. a server's error pages are one line ------------------------------------------------
class _HtmlErrors(http.server.BaseHTTPRequestHandler):
    status = 502

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        body = (b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
                b"<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
                b"</body>\n</html>\n")
        self.send_response(self.status)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: object) -> None:
        pass


def _run_against(handler: type[http.server.BaseHTTPRequestHandler], tmp_path: Path,
                 n: int) -> Summary:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        ds = make_dataset(tmp_path / "ds.jsonl", n=n)
        cfg = RunConfig.build(endpoint=f"http://127.0.0.1:{srv.server_address[1]}", engine="vllm",
                              out=tmp_path / "o", output_len=4, concurrency=1, num_requests=n,
                              warmup_requests=0)
        return run_benchmark(cfg, read_prompts(ds), argv=["t"], use_uvloop=False)
    finally:
        srv.shutdown()


def test_error_reasons_are_one_line_without_markup(tmp_path):
    s = _run_against(_HtmlErrors, tmp_path, 3)
    assert s.error_reasons == {"HTTP 502: 502 Bad Gateway 502 Bad Gateway nginx": 3}


class _HtmlOk(_HtmlErrors):
    status = 200  # a portal page or a misrouted gateway answering 200


def test_a_200_page_that_is_not_an_event_stream_says_so(tmp_path):
    s = _run_against(_HtmlOk, tmp_path, 2)
    [(reason, n)] = s.error_reasons.items()
    assert n == 2 and reason.startswith("answered text/html, not an event stream ("), reason
