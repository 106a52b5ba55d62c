"""The collector inside the timed window (loadgen/client/gcwindow.py): the heap frozen when the
window opens; an open loop holding the automatic collector and running the collections itself
where nothing is due, and once overdue."""

from __future__ import annotations

import gc
import json
import sys

import pytest

from loadgen.client import gcwindow
from tests.synthetic_data import make_dataset


@pytest.fixture
def collector():
    """The collector's state and thresholds restored after the test."""
    was, limits = gc.isenabled(), gc.get_threshold()
    yield
    gc.set_threshold(*limits)
    gc.enable() if was else gc.disable()


def _young(n: int) -> list[list[int]]:
    """``n`` new tracked containers (each one allocation the young generation counts)."""
    return [[i] for i in range(n)]


def test_window_freezes_the_heap_and_restores_the_collector(collector):
    gc.disable()
    was = gcwindow.open_window()
    try:
        assert was is False and gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gcwindow.close_window(was)
    assert not gc.isenabled() and gc.get_freeze_count() == 0


def test_collect_due_runs_the_collection_the_collector_would_have(collector):
    """Nothing while the young generation is under its threshold; past it, the oldest
    generation past its own threshold, as the automatic collector picks it."""
    gc.set_threshold(50, 3, 2)
    held = gcwindow.hold()
    try:
        assert not gc.isenabled()
        gc.collect()  # every count at zero
        keep = _young(20)
        assert gcwindow.collect_due() is None and gc.get_count()[0] >= 20
        picked = []
        for _ in range(20):
            keep += _young(60)
            picked.append(gcwindow.collect_due())
            assert gc.get_count()[0] == 0  # collected: the young generation is empty
        # gen 1 once four gen-0 collections put its count past 3; gen 2 once three gen-1
        # collections put its count past 2; each resets the younger counts
        assert picked[:16] == [0, 0, 0, 0, 1] * 3 + [2]
        assert picked[16:] == [0, 0, 0, 0]
    finally:
        gcwindow.release(held)
    assert gc.isenabled() == held


def test_collect_due_overdue_only_waits_for_ten_thresholds(collector):
    gc.set_threshold(40, 10, 10)
    held = gcwindow.hold()
    try:
        gc.collect()
        keep = _young(100)  # past the threshold, not ten times past it
        assert gcwindow.collect_due(overdue_only=True) is None
        keep += _young(gcwindow.OVERDUE * 40)
        assert gcwindow.collect_due(overdue_only=True) == 0
        assert len(keep) > 0
    finally:
        gcwindow.release(held)


def test_open_loop_collects_in_its_gaps_and_gives_the_collector_back(synthetic, loadgen_cli,
                                                                    tmp_path, collector):
    """A run at 80 requests/s (gaps of ~12 ms): collections inside the schedule come from the
    open loop (``collect_due``, the automatic collector held), at least one ran, every request
    is accounted, and the collector is on again after the run. The young generation's
    threshold is 10 here: the sends the loop holds prepared ahead (~16 within its 200 ms lead,
    each an Opening and a tuple) pass it by the first gap, whatever else the process holds."""
    gc.set_threshold(10, 10, 10)
    eng = synthetic("--protocol", "vllm", "--fast")
    ds = make_dataset(tmp_path / "ds.jsonl", n=24)
    seen: list[tuple[bool, bool]] = []  # (collector enabled, called by collect_due)

    def watch(phase: str, info: dict) -> None:
        if phase != "start":
            return
        f, ours = sys._getframe(1), False
        while f is not None and not ours:
            ours = f.f_code.co_name == "collect_due"
            f = f.f_back
        seen.append((gc.isenabled(), ours))

    gc.callbacks.append(watch)
    try:
        res = loadgen_cli("run", "--endpoint", eng.url, "--engine", "vllm", "--dataset", ds,
                          "--out", tmp_path / "run", "--request-rate", "80", "--num-requests", "24",
                          "--output-len", "16", "--quiet")
    finally:
        gc.callbacks.remove(watch)
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests"]["ok"] == 24
    held = [ours for enabled, ours in seen if not enabled]
    assert held and all(held)  # while held, only the open loop's own collections
    assert gc.isenabled()
