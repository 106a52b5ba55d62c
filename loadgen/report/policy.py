"""Report sections for the answers: SD policy (crossover, K per band), the lossless check and a
capacity search's result (docs/METRICS.md, "SD policy", "Lossless check", "Capacity search")."""

from __future__ import annotations

import base64
import json
from typing import Any

from loadgen.report import data as D
from loadgen.report.blocks import Section, Table, V, num, text
from loadgen.report.plots import Plot


def _analysis(inp: D.ReportInput, key: str) -> dict[str, Any] | None:
    """The sweep's stored analysis, else computed from its readable cells."""
    got = (inp.analysis or {}).get(key)
    if got is not None:
        return got
    sweep = inp.readable_sweep()
    if sweep is None:
        return None
    from loadgen.analysis.sweeps import speedup_rows

    if key == "sd_policy":
        from loadgen.analysis.sdpolicy import sd_policy

        return sd_policy(sweep, speedup_rows(sweep))
    from loadgen.analysis.lossless import lossless

    return lossless(sweep)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def policy_section(inp: D.ReportInput) -> Section:
    from loadgen.analysis.sdpolicy import band_text

    sec = Section("sd_policy", "Where SD stops paying, and which K")
    pol = _analysis(inp, "sd_policy")
    if not pol or not pol.get("crossover"):
        sec.text.append("n/a (no SD configuration with a baseline at the same load)")
        return sec
    sec.text.append(
        "Crossover: the load at which SD's per-user speedup crosses 1, interpolated between the "
        "two measured levels around it on the per-token time difference (SD − baseline), with "
        "the Student-t interval of the repetitions' own crossovers. Recommended SD per band of "
        "load: the configuration with the best lower interval bound on per-user speedup, 'off' "
        "where none is above 1 (docs/METRICS.md, 'SD policy').")
    t = Table("Crossover of per-user speedup", ["dataset", "SD", "category", "crossover",
                                                 "interval", "between levels"], [])
    for c in pol["crossover"]:
        x = c["crossover"]
        if x.get("value") is not None:
            ci = x.get("interval")
            t.rows.append([text(c["dataset"]), text(c["sd"]), text(c["category"]),
                           num(x["value"], 1),
                           text(f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a"),
                           text(f"{x['between'][0]:g} - {x['between'][1]:g}")])
        else:
            where = (f"pays at every level up to {x['above']:g}" if "above" in x else
                     f"pays at no level from {x['below']:g}" if "below" in x else "no data")
            t.rows.append([text(c["dataset"]), text(c["sd"]), text(c["category"]),
                           V(f"none ({where})", "na"), text("-"), text("-")])
    sec.tables.append(t)
    k = Table("Recommended SD per band of load", ["dataset", "category", "bands",
                                                   "engine settings (first SD band)"], [])
    for r in pol.get("recommended_k", []):
        first = next((b for b in r["bands"] if b.get("settings")), None)
        k.rows.append([text(r["dataset"]), text(r["category"]),
                       text("; ".join(band_text(b) for b in r["bands"])),
                       text(json.dumps(first["settings"], separators=(",", ":"))
                            if first else "-")])
    sec.tables.append(k)
    return sec


def lossless_section(inp: D.ReportInput) -> Section:
    sec = Section("lossless", "Lossless check: greedy outputs with SD against the baseline")
    ll = _analysis(inp, "lossless")
    if not ll or not ll.get("checked"):
        sec.text.append(f"n/a ({(ll or {}).get('reason') or 'not a sweep'})")
        return sec
    sec.text.append("Each prompt's output token ids with SD against the baseline's at the same "
                    "load and repetition; a divergence is a warning (batched numerics can flip "
                    "near-ties), with its first divergent token position.")
    sec.items.extend(f"warning: {w}" for w in ll["warnings"])
    t = Table("Divergences", ["dataset", "SD", "category", "compared", "diverged",
                              "first divergent position", "examples"], [])
    for r in ll["rows"]:
        ex = ", ".join(f"{e['prompt_id']}@{e['position']}" for e in r["examples"]) or "-"
        t.rows.append([text(r["dataset"]), text(r["sd"]), text(r["category"]),
                       num(r["compared"], 0),
                       V(str(r["diverged"]), "num slower" if r["diverged"] else "num"),
                       text(r["first_divergence_min"] if r["first_divergence_min"] is not None
                            else "-"), text(ex)])
    sec.tables.append(t)
    return sec


def capacity_search_sections(inp: D.ReportInput) -> list[Section]:
    """A ``loadgen capacity`` directory: the answer per configuration, its probes, the plot."""
    from loadgen.capacity.output import lines

    doc = inp.config
    sec = Section("capacity_search", "Capacity within the SLOs (search)")
    slos = ", ".join(f"{k} <= {v:g}" for k, v in doc["slos"].items())
    sec.text.append(f"SLOs: {slos}. Value: where the binding SLO's margin crosses 1 between "
                    "the highest level that met every SLO and the lowest that did not "
                    "(docs/METRICS.md, 'Capacity search').")
    sec.pre = "\n".join(lines(doc))
    png = inp.root / "capacity.png"
    if png.exists():
        sec.plot = Plot("capacity", "SLO figures against load",
                        "Each SLO's figure per probe; dashed: the capacity; dotted: a step cut "
                        "as over-saturated.", base64.b64encode(png.read_bytes()).decode())
    probes = Section("capacity_probes", "Probes")
    trace = any(c.get("trace") for c in doc["configs"])  # levels are time scales
    t = Table("Every probe, in the order run",
              ["configuration", "level", *(["requests/s (mean)"] if trace else []),
               "meets SLOs", "binding SLO", "margin", "cut", "summary"], [])
    for c in doc["configs"]:
        for p in c["probes"]:
            t.rows.append([text(c["label"]), num(p["level"], 3),
                           *([num(p.get("offered_rate"), 3)] if trace else []),
                           V("yes") if p["meets_slos"] else V("no", "slower"),
                           text(p.get("binding_slo") or "-"), num(p.get("margin"), 3),
                           text(p.get("cut") or "-"), text(p.get("summary") or "-")])
    probes.tables.append(t)
    return [sec, probes]
