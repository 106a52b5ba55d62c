"""`loadgen report DIR` on a sweep built by really running the synthetic engine (SD on with a
different acceptance per category, SD off, a real-like and a "random" dataset, three concurrency
levels, one failed cell), and on single run directories. Headless Chromium (Debian's package)
renders the HTML and must report no console error, no uncaught exception and no failed load;
the detector itself is checked on copies with deliberate errors."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import random
import re
import select
import shutil
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path

import pytest

from loadgen.analysis.sweeps import speedup_rows
from loadgen.cli import main as cli_main
from loadgen.config import RunConfig
from loadgen.data.prompts import PromptRecord, read_prompts, write_prompts
from loadgen.report.build import build_report
from loadgen.results.sweepdir import Cell, Sweep, load_sweep
from loadgen.run.benchmark import run_benchmark
from loadgen.synthetic.process import SyntheticProcess
from tests.needs import installed_or_skip

installed_or_skip("matplotlib")

# Each category's prompts start with its own marker token, so the engine gives it its own
# acceptance; the random dataset's prompts start with other tokens and get the default rates.
CATEGORIES = {"coding": (7, "0.9,0.8,0.7"), "roleplay": (9, "0.2,0.1"), "math": (11, "0.7,0.5")}
RANDOM_RATES = "0.95,0.9,0.9"
LOADS = (1, 4, 8)
FAILED = "engine exited with code 137 (out of memory)"
# In the report's order: what a reader came for first (AL per category, speedup), detail after.
SWEEP_PLOTS = ("Acceptance length (AL) per category",
               "SD speedup over the baseline (category × load)",
               "Pareto: output tokens/s per GPU against per-user tokens/s",
               "Acceptance by draft position",
               "TTFT and TPOT percentiles against load",
               "Random vs real prompts: output tokens/s and AL")
RUN_PLOTS = ("Acceptance length (AL) per category", "Acceptance by draft position",
             "Latency percentiles")


def _dataset(path: Path, random_ids: bool, seed: int, n: int = 24) -> Path:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        cat = list(CATEGORIES)[i % len(CATEGORIES)]
        first = rng.randrange(100, 40000) if random_ids else CATEGORIES[cat][0]
        ids = [first] + [rng.randrange(100, 40000) for _ in range(rng.randrange(16, 64))]
        recs.append(PromptRecord(id=f"p{i}", category=cat, prompt_token_ids=ids))
    return write_prompts(path, recs, {"tokenizer": "synthetic"})


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    """A real sweep: 2 SD configurations (k=3 and off) x 2 datasets x 3 loads, plus one failed
    cell. About 5-10 s."""
    root = tmp_path_factory.mktemp("sweep")
    data = {"qual": _dataset(root / "qual.jsonl", False, 0),
            "random-qual": _dataset(root / "random.jsonl", True, 1)}
    common = ["--protocol", "vllm", "--step-base-ms", "1", "--draft-ms", "0.1",
              "--model-name", "m"]
    for marker, rates in CATEGORIES.values():
        common += ["--accept-rates-for", f"{marker}={rates}"]
    engines = {"ngram-k3": (["-k", "3", "--accept-rates", RANDOM_RATES,
                             "--per-request-spec-metrics", "summary"], False),
               "off": (["--no-spec"], True)}
    cells = []
    for sd, (extra, baseline) in engines.items():
        with SyntheticProcess(common + extra) as eng:
            for name, path in data.items():
                prompts = read_prompts(path)
                for c in LOADS:
                    cid = f"{sd}__c{c}__{name}"
                    cell = Cell(id=cid, sd=sd, dataset=name, load={"concurrency": c},
                                dir=f"cells/{cid}", baseline=baseline,
                                sd_config={} if baseline else {"num_spec_tokens": 3})
                    cfg = RunConfig.build(endpoint=eng.url, engine="vllm", out=root / cell.dir,
                                          model="m", output_len=24, concurrency=c,
                                          num_requests=max(12, 3 * c), warmup_requests=c,
                                          progress=False)
                    run_benchmark(cfg, prompts, path, argv=["test"])
                    cell.status = "complete"
                    cells.append(cell)
    cells.append(Cell(id="ngram-k3__c16__qual", sd="ngram-k3", dataset="qual",
                      load={"concurrency": 16}, dir="cells/ngram-k3__c16__qual",
                      sd_config={"num_spec_tokens": 3}, status="failed", error=FAILED))
    Sweep(root=root, config={"engine": "vllm", "output_len": 24, "concurrency": list(LOADS)},
          cells=cells).save()
    return root


@pytest.fixture(scope="module")
def sweep_report(sweep_dir) -> tuple[Path, Path]:
    return build_report(sweep_dir, gpus=2, slos={"ttft_p99_ms": 1000.0, "tpot_p99_ms": 100.0})


def _summaries(root: Path) -> dict[str, dict]:
    sw = load_sweep(root)
    return {c.id: json.loads((root / c.dir / "summary.json").read_text())
            for c in sw.cells if c.status == "complete"}


def _img_titles(html: str) -> list[str]:
    return re.findall(r'<img alt="([^"]*)"', html)


def _assert_self_contained(html: str) -> None:
    for attr, value in re.findall(r'\b(src|href|action|srcset)\s*=\s*"([^"]*)"', html, re.I):
        assert value.startswith(("data:image/png;base64,", "#")), (attr, value[:80])
    low = html.lower()
    for bad in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "url(", "//cdn"):
        assert bad not in low, bad
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', html, re.I)
    assert "could not be built" not in html and "plot failed" not in html


# ------------------------------------------------------------------ files and content

def test_sweep_report_files_plots_and_self_contained(sweep_dir, sweep_report):
    html_path, md_path = sweep_report
    assert html_path == sweep_dir / "report.html" and md_path == sweep_dir / "report.md"
    html, md = html_path.read_text(), md_path.read_text()
    _assert_self_contained(html)
    assert "http://" not in md.split("```")[0]  # the Markdown links nowhere either
    assert f"<title>loadgen report: sweep {sweep_dir.name}</title>" in html
    titles = _img_titles(html)
    assert titles == list(SWEEP_PLOTS)
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        png = base64.b64decode(b64, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for t in SWEEP_PLOTS:
        assert t in md  # each plot named in the summary, pointing at report.html
    assert "docs/METRICS.md" in html and "docs/METRICS.md" in md
    assert '"output_len": 24' in unescape(html)  # the sweep config
    assert "per GPU" in html and "÷2" in html


def test_sweep_report_shows_the_summaries_numbers(sweep_dir, sweep_report):
    html, md = (p.read_text() for p in sweep_report)
    sums = _summaries(sweep_dir)
    sw = load_sweep(sweep_dir)
    for c in sw.cells:
        if c.status != "complete":
            continue
        s = sums[c.id]
        tps = s["throughput"]["output_tokens_per_s"]
        for doc in (html, md):
            assert f"{tps:,.1f}" in doc and f"{tps / 2:,.1f}" in doc  # total and per GPU
            assert f"{s['latency_ms']['ttft']['p99']:,.2f}" in doc
            assert f"{s['latency_ms']['tpot']['p50']:,.2f}" in doc
        if c.baseline:
            continue
        for doc in (html, md):
            assert f"{s['acceptance']['acceptance_length']:,.3f}" in doc
            assert f"{s['acceptance']['per_request']['token_weighted']:,.3f}" in doc
            for cat, cs in s["categories"].items():  # AL per category, every cell
                assert f"{cs['acceptance_length']:,.3f}" in doc, (c.id, cat)
    # AL per category over the loads: Σ tokens / Σ tokens/AL, computed here independently
    for ds in ("qual", "random-qual"):
        for cat in CATEGORIES:
            cs = [sums[c.id]["categories"][cat] for c in sw.cells
                  if c.id in sums and c.dataset == ds and not c.baseline]
            al = sum(x["output_tokens"] for x in cs) / sum(
                x["output_tokens"] / x["acceptance_length"] for x in cs)
            assert f"{al:,.3f}" in html and f"{al:,.3f}" in md
    # the categories' acceptance profiles come through: coding > math > roleplay on real prompts
    k3 = sums["ngram-k3__c4__qual"]["categories"]
    assert (k3["coding"]["acceptance_length"] > k3["math"]["acceptance_length"]
            > k3["roleplay"]["acceptance_length"])


def test_speedups_below_one_are_marked(sweep_dir, sweep_report):
    html, md = (p.read_text() for p in sweep_report)
    rows = speedup_rows(load_sweep(sweep_dir))
    values = [(r["category"], r["speedup_per_user_tokens_per_s"]) for r in rows]
    values += [("all", r["speedup_output_tokens_per_s"]) for r in rows if r["category"] == "all"]
    assert values
    for _, v in values:
        mark = f"{v:.2f}× ▼ slower" if v < 1 else f"{v:.2f}×"
        assert mark in html and mark in md
    if any(v < 1 for _, v in values):
        assert 'class="num slower">' in html
        assert re.search(r"\*\*\d\.\d\d× ▼ slower \(single run\)\*\*", md)
        assert "SD is slower than the baseline" in html


def test_failed_cell_and_sd_off_show_na_with_reason(sweep_report):
    html, md = (p.read_text() for p in sweep_report)
    for doc in (html, md):
        assert f"n/a (cell failed: {FAILED})" in doc
        assert "n/a (SD off)" in doc
        assert not re.search(r"\b(nan|None|inf)\b", doc.split("Configuration")[-1])
        assert "could not be built" not in doc and "plot failed" not in doc


def test_random_vs_real_and_capacity(sweep_dir, sweep_report):
    html, md = (p.read_text() for p in sweep_report)
    sums = _summaries(sweep_dir)
    sec = html.split('<section id="random_vs_real">')[1].split("</section>")[0]
    assert sec.count("<tr>") == 1 + 2 * len(LOADS)  # header + (k3, off) x loads
    for c in LOADS:
        r = sums[f"ngram-k3__c{c}__random-qual"]["throughput"]["output_tokens_per_s"] / 2
        q = sums[f"ngram-k3__c{c}__qual"]["throughput"]["output_tokens_per_s"] / 2
        assert f"{r:,.1f}" in sec and f"{q:,.1f}" in sec and f"{r / q:,.2f}" in sec
    # capacity under the SLOs: every measured level meets these generous limits
    assert "Recommendation:" in html and "carries the most load" in html
    assert "SLOs (--slo): ttft_p99_ms &lt;= 1000, tpot_p99_ms &lt;= 100" in html
    assert "up to 8 concurrent requests" in md
    assert "Cells without a summary are not part of the capacity: ngram-k3__c16__qual" in md


def test_warnings_of_each_summary_are_listed(tmp_path, sweep_dir):
    root = tmp_path / "sw"
    shutil.copytree(sweep_dir, root, ignore=shutil.ignore_patterns("report.*"))
    p = root / "cells" / "ngram-k3__c4__qual" / "summary.json"
    s = json.loads(p.read_text())
    s["warnings"].append("the server generated 999 tokens during the run (test warning)")
    p.write_text(json.dumps(s))
    broken = root / "cells" / "off__c8__qual" / "summary.json"
    broken.write_text("{not json")
    html_path, md_path = build_report(root)  # no --slo: capacity n/a with the reason
    html, md = html_path.read_text(), md_path.read_text()
    _assert_self_contained(html)
    for doc in (html, md):
        assert "ngram-k3__c4__qual: the server generated 999 tokens" in doc
        assert "summary.json unreadable" in doc
        assert "n/a (no SLO given" in doc
    assert len(_img_titles(html)) == len(SWEEP_PLOTS)


def test_single_run_reports(tmp_path, sweep_dir):
    run = sweep_dir / "cells" / "ngram-k3__c4__qual"
    html_path, md_path = build_report(run, out=tmp_path / "sd")
    html = html_path.read_text()
    _assert_self_contained(html)
    assert _img_titles(html) == list(RUN_PLOTS)
    s = json.loads((run / "summary.json").read_text())
    for cat, cs in s["categories"].items():
        assert f"<td>{cat}</td>" in html and f"{cs['acceptance_length']:,.3f}" in html
    assert "Pareto" not in "".join(_img_titles(html))
    base = sweep_dir / "cells" / "off__c4__qual"
    html_path, md_path = build_report(base, out=tmp_path / "off")
    html, md = html_path.read_text(), md_path.read_text()
    assert _img_titles(html) == ["Latency percentiles"]
    assert "Acceptance length (AL) per category: n/a (SD off in every run here" in html
    assert "n/a (SD off)" in md


def test_cli_writes_and_prints_both_paths(tmp_path, sweep_dir, capsys):
    out = tmp_path / "rep"
    rc = cli_main(["report", str(sweep_dir / "cells" / "ngram-k3__c1__qual"), "--out", str(out),
                   "--gpus", "4", "--slo", "ttft_p99_ms=0.001"])
    assert rc == 0
    assert capsys.readouterr().out.split() == [str(out / "report.html"), str(out / "report.md")]
    md = (out / "report.md").read_text()
    assert "The run does not meet the SLOs: ttft p99" in md and "÷4" in md
    assert cli_main(["report", str(tmp_path)]) == 2  # neither a run nor a sweep
    assert "neither a sweep directory" in capsys.readouterr().err
    assert cli_main(["report", str(sweep_dir), "--slo", "ttft=1"]) == 2


# ------------------------------------------------------------------ headless Chromium

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe")
PAGE_FACTS = """JSON.stringify({
  title: document.title,
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length,
  sections: Array.from(document.querySelectorAll('h2')).map(e => e.textContent)})"""


class _DevTools:
    """The Chrome DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out; messages
    end with NUL), so no websocket library is needed."""

    def __init__(self, wfd: int, rfd: int) -> None:
        self.wfd, self.rfd, self.buf, self.id, self.events = wfd, rfd, b"", 0, []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            poller = select.poll()  # not select(): the worker may hold over 1024 descriptors
            poller.register(self.rfd, select.POLLIN)
            if poller.poll(left * 1000):
                chunk = os.read(self.rfd, 1 << 16)
                if not chunk:
                    raise EOFError("chromium closed the DevTools pipe")
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.id += 1
        msg: dict = {"id": self.id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.wfd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(m.get("method") == method for m in self.events):
            self.events.append(self._read(deadline))

    def settle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read(deadline))
        except TimeoutError:
            pass


def render_in_chromium(path: Path) -> tuple[str, list[str], dict]:
    """Open a file in headless Chromium; return (version, errors, page facts). Errors are
    uncaught exceptions, console.error/assert calls and log entries of level error (failed
    loads, Content-Security-Policy violations); warnings and info are not errors."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    # the child's ends, above fd 10 so that dup2 onto 3 and 4 cannot clobber them
    child_in, child_out = (fcntl.fcntl(to_r, fcntl.F_DUPFD, 10),
                           fcntl.fcntl(from_w, fcntl.F_DUPFD, 10))

    def wire() -> None:
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    profile = tempfile.mkdtemp(prefix="loadgen-chromium-")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}"],
                            preexec_fn=wire, close_fds=False, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for fd in (to_r, from_w, child_in, child_out):
        os.close(fd)
    dt = _DevTools(to_w, from_r)
    try:
        version = dt.call("Browser.getVersion")["product"]
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = dt.call("Target.attachToTarget", {"targetId": target,
                                                    "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            dt.call(f"{domain}.enable", session=session)
        dt.events.clear()
        dt.call("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        dt.wait_for("Page.loadEventFired")
        dt.settle(0.5)
        facts = json.loads(dt.call("Runtime.evaluate", {"expression": PAGE_FACTS,
                                                        "returnByValue": True},
                                   session=session)["result"]["value"])
        errors = []
        for m in dt.events:
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                errors.append("uncaught " + (d.get("exception", {}).get("description")
                                             or d.get("text", "")))
            elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                errors.append(f"console.{p['type']}: " + " ".join(
                    str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                errors.append(f"{p['entry']['source']}: {p['entry']['text']}")
        with contextlib.suppress(TimeoutError, EOFError, RuntimeError):
            dt.call("Browser.close", timeout=5)
        return version, errors, facts
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(to_w)
        os.close(from_r)
        shutil.rmtree(profile, ignore_errors=True)


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="Debian's chromium is not installed (scripts/setup.sh)")


@pytest.mark.slow
@needs_chromium
def test_chromium_renders_the_reports_without_console_errors(tmp_path, sweep_dir, sweep_report):
    html_path, _ = sweep_report
    version, errors, facts = render_in_chromium(html_path)
    assert version.startswith(("Chrome/", "HeadlessChrome/"))
    assert errors == []
    assert facts["title"] == f"loadgen report: sweep {sweep_dir.name}"
    assert facts["images"] == len(SWEEP_PLOTS) and facts["broken"] == 0  # every PNG decoded
    assert "SD speedup (category × load)" in facts["sections"]
    run_html, _ = build_report(sweep_dir / "cells" / "ngram-k3__c8__qual", out=tmp_path / "run")
    _, errors, facts = render_in_chromium(run_html)
    assert errors == [] and facts["images"] == len(RUN_PLOTS) and facts["broken"] == 0


@pytest.mark.slow
@needs_chromium
def test_chromium_detector_catches_deliberate_errors(tmp_path, sweep_report):
    html = sweep_report[0].read_text()
    # A JS error: the report's Content-Security-Policy is taken out so the script runs.
    bad = tmp_path / "js_error.html"
    bad.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
                   .replace("</body>", "<script>console.warn('only a warning')</script>"
                                       "<script>console.error('boom')</script>"
                                       "<script>undefinedFn()</script></body>"))
    _, errors, _ = render_in_chromium(bad)
    assert any("ReferenceError: undefinedFn is not defined" in e for e in errors), errors
    assert "console.error: boom" in errors
    assert len(errors) == 2  # the warning is not an error
    # With the report's own policy in place, an injected script or outside resource is refused,
    # and the refusal is an error too (nothing is fetched: the policy blocks it first).
    bad = tmp_path / "outside.html"
    bad.write_text(html.replace("</body>", '<img src="http://127.0.0.1:9/x.png">'
                                           "<script>undefinedFn()</script></body>"))
    _, errors, facts = render_in_chromium(bad)
    assert any("Content Security Policy" in e and "img-src" in e for e in errors), errors
    assert any("inline script" in e for e in errors), errors
    assert facts["broken"] == 1


def test_report_opens_with_the_key_numbers_and_ends_with_the_folded_manifest(sweep_report):
    html = sweep_report[0].read_text()
    ids = re.findall(r'<section id="([a-z_]+)">', html)
    assert ids[:4] == ["overview", "key_numbers", "warnings", "al_per_category"], ids
    assert ids[-1] == "config"
    config = html[html.index('<section id="config">'):]
    assert config.index("<details><summary>Configuration") < config.index("<pre>")
