"""Whether two runs measure the same thing: dataset, prompts, output length, load, engine
(docs/COMPARE.md)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from loadgen.compare.load import RunData
from loadgen.engines.sampling import sampling_label


def sampling_of(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest config's sampling (files from before the sampling flags: greedy)."""
    return {k: config.get(k) for k in ("temperature", "top_p", "top_k", "seed_per_request")}

# Keys of manifest.json's config that define the load and the work, checked for comparability.
LOAD_KEYS = ("concurrency", "request_rate", "arrival", "burstiness", "max_concurrency")


def comparability(a: RunData, b: RunData) -> tuple[list[str], list[str]]:
    """(warnings: the runs may not measure the same thing; notes: differences that are fine
    but worth saying)."""
    warnings: list[str] = []
    notes: list[str] = []
    for r in (a, b):
        if r.manifest is None:
            warnings.append(f"{r.label}: no manifest.json, so dataset, load and output length "
                            f"cannot be checked")
        if r.summary is None:
            warnings.append(f"{r.label}: no summary.json (interrupted?): throughput and counter "
                            f"AL are missing")
        status = (r.manifest or {}).get("status")
        if status and status != "complete":
            warnings.append(f"{r.label}: run status is {status!r}")
        bad = [x for x in r.measured if x.get("status") != "ok"]
        if bad:
            warnings.append(f"{r.label}: {len(bad)} of {len(r.measured)} measured requests did "
                            f"not complete (statistics use the ok ones only)")
        for w in (r.summary or {}).get("warnings") or []:
            warnings.append(f"{r.label}: {w}")
    ma, mb = a.manifest or {}, b.manifest or {}
    da, db = ma.get("dataset") or {}, mb.get("dataset") or {}
    if a.manifest and b.manifest:
        sa, sb = da.get("sha256"), db.get("sha256")
        if sa and sb and sa != sb:
            warnings.append(f"different datasets: sha256 {sa[:12]}… vs {sb[:12]}… "
                            f"({da.get('path')} vs {db.get('path')})")
        elif not (sa and sb):
            notes.append("dataset sha256 missing in at least one manifest: cannot check that "
                         "the prompt files are identical")
        ha, hb = da.get("header") or {}, db.get("header") or {}
        for key in ("tokenizer", "chat_template_sha256"):
            if ha.get(key) != hb.get(key) and (ha.get(key) or hb.get(key)):
                warnings.append(f"different {key} in the datasets' headers: "
                                f"{ha.get(key)!r} vs {hb.get(key)!r}")
    # What was actually sent: prompts and their token counts.
    pa = Counter((r["prompt_id"], r.get("turn", 0)) for r in a.measured)
    pb = Counter((r["prompt_id"], r.get("turn", 0)) for r in b.measured)
    if pa and pb and pa != pb:
        common = sum((pa & pb).values())
        warnings.append(f"the runs sent different prompts: {common} of {sum(pa.values())} "
                        f"(A) / {sum(pb.values())} (B) measured requests in common; latency "
                        f"and AL depend on the prompts")
    la = {(r["prompt_id"], r.get("turn", 0)): r["input_tokens"] for r in a.measured}
    lb = {(r["prompt_id"], r.get("turn", 0)): r["input_tokens"] for r in b.measured}
    diff_len = [k for k in la.keys() & lb.keys() if la[k] != lb[k] and k[1] == 0]
    if diff_len:
        k = diff_len[0]
        warnings.append(f"{len(diff_len)} prompt(s) have different input token counts (e.g. "
                        f"{k[0]!r}: {la[k]} vs {lb[k]}): different input token ids")
    ca, cb = a.config, b.config
    if a.manifest and b.manifest:
        if ca.get("output_len") != cb.get("output_len"):
            warnings.append(f"different output length: {ca.get('output_len')} vs "
                            f"{cb.get('output_len')}")
        ea = {(r["prompt_id"], r.get("turn", 0)): r["expected_tokens"] for r in a.measured}
        eb = {(r["prompt_id"], r.get("turn", 0)): r["expected_tokens"] for r in b.measured}
        if ca.get("output_len") == cb.get("output_len") and any(
                ea[k] != eb[k] for k in ea.keys() & eb.keys()):
            warnings.append("the same prompts asked for different output lengths")
        rate_mode = ca.get("request_rate") is not None or cb.get("request_rate") is not None
        keys = LOAD_KEYS if rate_mode else ("concurrency",)
        load_a = {k: ca.get(k) for k in keys}
        load_b = {k: cb.get(k) for k in keys}
        if load_a != load_b:
            def fmt(d: dict[str, Any]) -> str:
                return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None) or "?"
            warnings.append(f"different load: {fmt(load_a)} vs {fmt(load_b)}")
        if ca.get("warmup_requests") != cb.get("warmup_requests"):
            notes.append(f"different warm-up: {ca.get('warmup_requests')} vs "
                         f"{cb.get('warmup_requests')} requests")
        if (ca.get("num_requests"), ca.get("duration_s")) != (cb.get("num_requests"),
                                                             cb.get("duration_s")):
            notes.append(f"different run length: num_requests {ca.get('num_requests')} / "
                         f"duration {ca.get('duration_s')} vs {cb.get('num_requests')} / "
                         f"{cb.get('duration_s')} (CIs account for the sample sizes)")
        if ca.get("engine") != cb.get("engine"):
            notes.append(f"different engine protocols: {ca.get('engine')} vs "
                         f"{cb.get('engine')} (expected when comparing a vendor endpoint with "
                         f"a self-hosted one). Per-request AL is each engine's own definition "
                         f"(docs/METRICS.md), so AL is not like for like across engines")
        if ca.get("model") != cb.get("model"):
            notes.append(f"different model names sent: {ca.get('model')!r} vs "
                         f"{cb.get('model')!r}")
        samp_a, samp_b = sampling_label(sampling_of(ca)), sampling_label(sampling_of(cb))
        if samp_a != samp_b:  # acceptance (and so speed) depends on sampling
            warnings.append(f"different sampling: {samp_a} vs {samp_b}")
        if ca.get("multi_turn") != cb.get("multi_turn"):
            warnings.append("one run replays multi-turn conversations and the other does not")
        ha_, hb_ = ma.get("host") or {}, mb.get("host") or {}
        if ha_.get("hostname") != hb_.get("hostname"):
            notes.append(f"different client hosts: {ha_.get('hostname')} vs "
                         f"{hb_.get('hostname')}")
    src_a = ((a.summary or {}).get("acceptance") or {}).get("source")
    src_b = ((b.summary or {}).get("acceptance") or {}).get("source")
    if src_a and src_b and src_a != src_b:
        notes.append(f"counter AL comes from different sources: {src_a} vs {src_b}")
    return warnings, notes
