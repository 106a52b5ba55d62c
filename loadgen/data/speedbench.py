"""``loadgen data import speed-bench``: the official nvidia/SPEED-Bench parquet, through
``datasets`` when online or from a local parquet file, with placeholder turns resolved from their
source datasets when online. Offline, a placeholder that cannot be resolved is a clear error that
names the missing datasets (or, with ``allow_unresolved``, the row is dropped and reported).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from loadgen.data.sources import hub_offline_reason
from loadgen.data.speedbench_files import CONFIGS, SpeedBenchError, read_rows, validate
from loadgen.data.textfmt import TextPrompt

__all__ = ["CONFIGS", "PLACEHOLDER", "SpeedBenchError", "import_speed_bench", "load_rows"]

REPO = "nvidia/SPEED-Bench"
PLACEHOLDER = "FULL BENCHMARK DATA SHOULD BE FETCHED FROM THE SOURCE USING SPECDEC_BENCH"


def load_rows(config: str, file: str | Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """(validated rows, where they came from): a local file, config folder or snapshot root
    (loadgen.data.speedbench_files), else the hub."""
    if config not in CONFIGS:
        raise SpeedBenchError(f"unknown config {config!r}; one of {', '.join(CONFIGS)}")
    if file:
        rows, files = read_rows(config, file)
        return rows, files[0] if len(files) == 1 else f"{file} ({len(files)} files)"
    offline = hub_offline_reason()
    if offline:
        raise SpeedBenchError(
            f"{REPO} config {config!r} is not available offline ({offline}). Download "
            f"{REPO} on a connected machine and pass the file, its folder or the snapshot root "
            "with --file.")
    try:
        from datasets import load_dataset
    except ImportError:
        raise SpeedBenchError("reading from the hub needs 'datasets': pip install "
                              "'loadgen[data]'") from None
    try:
        ds = load_dataset(REPO, config, split="test")
    except Exception as exc:  # hub errors come in many types
        raise SpeedBenchError(f"{REPO} {config}: {type(exc).__name__}: {exc}") from None
    where = f"hub:{REPO}/{config}"
    return validate(config, [(f"{where}:row {n}", dict(r)) for n, r in enumerate(ds, 1)],
                    where), where


def _strip(turn: str) -> str:
    return turn.removeprefix(PLACEHOLDER).lstrip("\n")


class Resolver:
    """Fills placeholder turns from the source datasets on the hub (online only).

    Resolved here: CNN/DailyMail, MT-Bench-101, OPUS-100, MMLU-Pro, code_contests and HLE
    (qualitative). Other placeholder sources are reported as unresolved.
    """

    def __init__(self):
        self._cache: dict[tuple, Any] = {}

    def _ds(self, path: str, name: str | None = None, split: str = "test",
            revision: str | None = None, data_files: Any = None):
        key = (path, name, split, revision, str(data_files))
        if key not in self._cache:
            from datasets import load_dataset

            if data_files is not None:
                self._cache[key] = load_dataset(path, data_files={"test": data_files},
                                                split="test")
            else:
                self._cache[key] = load_dataset(path, name, split=split, revision=revision)
        return self._cache[key]

    def _by(self, ds, field: str, value: Any) -> dict[str, Any]:
        key = (id(ds), field)
        if key not in self._cache:
            self._cache[key] = {str(r[field]): i for i, r in enumerate(ds)}
        return ds[self._cache[key][str(value)]]

    def resolve(self, row: dict[str, Any]) -> list[str]:
        src, sid, turns = row.get("source") or "", str(row.get("src_id") or ""), row["turns"]
        if "cnn_dailymail" in src:
            art = self._by(self._ds("abisee/cnn_dailymail", "3.0.0"), "id", sid)["article"]
            return [_strip(turns[0]).format(article=art)]
        if "mt-bench-101" in src:
            ds = self._ds("json", data_files=src)
            return [h["user"] for h in ds[int(sid.rsplit("_", 1)[1])]["history"]]
        if "opus-100" in src:
            _, pair, idx = sid.split("_")
            ex = self._ds("Helsinki-NLP/opus-100", pair)[int(idx)]
            return [_strip(turns[0]).format(question=ex["translation"])]
        if "MMLU-Pro" in src:
            ds = self._ds("TIGER-Lab/MMLU-Pro")
            start = int(sid.split("(")[1].split(",")[0])
            out = []
            for n in range(len(turns)):
                ex = ds[start + n]
                opts = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(ex["options"]))
                q = f"Question: {ex['question']}\n\nOptions: {opts}\n\n"
                if n == 0:
                    q = (f"The following are multiple choice questions (with answers) about "
                         f"{row.get('sub_category')}. Think step by step and then finish your "
                         f"answer with \"the answer is (X)\" where X is the correct letter "
                         f"choice.\n\n") + q
                out.append(q)
            return out
        if "code_contests" in src:
            ex = self._by(self._ds("deepmind/code_contests"), "name", sid)
            return [_strip(turns[0]).format(question=ex["description"])]
        if "cais/hle" in src and len(turns) == 1:
            ex = self._by(self._ds("cais/hle"), "id", sid)
            return [ex["question"]]
        raise KeyError(src)


def import_speed_bench(config: str, file: str | Path | None = None,
                       allow_unresolved: bool = False) -> tuple[list[TextPrompt], dict[str, Any]]:
    rows, origin = load_rows(config, file)
    needs = [r for r in rows if r["turns"][0].startswith(PLACEHOLDER)]
    report: dict[str, Any] = {"config": config, "from": origin, "rows": len(rows),
                              "categories": dict(Counter(r["category"] for r in rows)),
                              "placeholders": len(needs)}
    unresolved: Counter[str] = Counter()
    resolved_turns: dict[int, list[str]] = {}
    if needs:
        offline = hub_offline_reason()
        if offline:
            missing = Counter(r.get("source") for r in needs)
            if not allow_unresolved:
                lines = "\n".join(f"  {n:5d} rows from {s}" for s, n in missing.most_common())
                raise SpeedBenchError(
                    f"{len(needs)} of {len(rows)} rows of {config} are placeholders that must be "
                    f"resolved from their source datasets on the hub, which is unreachable "
                    f"({offline}):\n{lines}\nRun the import online, or pass --allow-unresolved "
                    "to keep only the rows that are complete.")
            unresolved.update(missing)
        else:
            res = Resolver()
            for r in needs:
                try:
                    resolved_turns[id(r)] = res.resolve(r)
                except Exception:  # any failure of a source is reported per source
                    unresolved[r.get("source")] += 1
            if unresolved and not allow_unresolved:
                raise SpeedBenchError(
                    "placeholders that could not be resolved: " + ", ".join(
                        f"{s} ({n})" for s, n in unresolved.most_common())
                    + "; pass --allow-unresolved to drop them")
    prompts: list[TextPrompt] = []
    for r in rows:
        turns = resolved_turns.get(id(r), r["turns"])
        if turns and str(turns[0]).startswith(PLACEHOLDER):
            continue
        meta = {"source": r.get("source"), "license": "NVIDIA Evaluation Dataset License "
                "(SPEED-Bench); see the source dataset's license",
                "original_id": r.get("src_id"), "sub_category": r.get("sub_category"),
                "question_id": r.get("question_id"), "difficulty": r.get("difficulty"),
                "speed_bench_config": config}
        prompts.append(TextPrompt(id=r["question_id"], category=r["category"],
                                  turns=[str(t) for t in turns], meta=meta))
    report["unresolved"] = dict(unresolved)
    report["prompts"] = len(prompts)
    return prompts, report
