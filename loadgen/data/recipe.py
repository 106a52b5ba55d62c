"""Recipes: YAML files that map each source to a category and say how a record becomes a prompt.

A recipe (datasets/*.yaml, documented in docs/DATASETS.md)::

    name: qualitative-open
    categories: [coding, humanities, ...]
    defaults: {min_chars: 16, max_chars: 12000}
    sources:
      - name: humaneval                       # provenance: meta.source
        path: prompts/HumanEval.jsonl.gz      # glob(s) under the data root
                                              # (or hub: {path, name, split, revision})
        license: MIT                          # provenance: meta.license
        origin: openai/human-eval
        category: coding                      # or category_by: {field, map, default}
        sub_category: python                  # a template
        id: "{task_id}"                       # a template: meta.original_id
        turns: ["Complete ...\\n{prompt}"]     # one template per user turn, or:
        # turns_from: history   turn: "{user}"   (a list field; dict items formatted with `turn`)
        where: {category: coding}             # keep records whose field is (one of) the value(s)
        parse: {choices: pylist}              # fields stored as Python/JSON literals in a string
        replace: {"<SEED>": "{seed_modifiers[0]}"}
        max_records: 300                      # a seeded sample when the source has more

Templates are Python format strings over the record, with three extra format specs:
``{choices:letters}`` (A. .. / B. .. lines), ``{items:lines}`` (one per line) and ``{x:strip}``.
"""

from __future__ import annotations

import glob
import hashlib
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.data.sources import (
    ADAPTERS,
    SourceError,
    parse_field,
    read_file_records,
    read_hub_records,
)
from loadgen.data.textfmt import TextPrompt

CATEGORIES = ("coding", "humanities", "math", "multilingual", "qa", "rag", "reasoning",
              "roleplay", "stem", "summarization", "writing")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the recipe and source."""


class _Formatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "letters":
            items = value if isinstance(value, list) else [value]
            return "\n".join(f"{chr(ord('A') + i)}. {v}" for i, v in enumerate(items))
        if format_spec == "lines":
            items = value if isinstance(value, list) else [value]
            return "\n".join(str(v) for v in items)
        if format_spec == "strip":
            return str(value).strip()
        return super().format_field(value, format_spec)


_FMT = _Formatter()


def render(template: str, rec: dict[str, Any]) -> str:
    return _FMT.vformat(template, (), rec)


@dataclass
class Recipe:
    name: str
    path: Path | None
    sha256: str
    categories: list[str]
    defaults: dict[str, Any]
    sources: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe")
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data.get("sources"), list) or not data["sources"]:
        raise RecipeError(f"{path}: a recipe needs a non-empty 'sources' list")
    cats = list(data.get("categories") or CATEGORIES)
    for i, src in enumerate(data["sources"]):
        where = f"{path}: source #{i + 1} ({src.get('name', '?')})"
        if not isinstance(src, dict) or not src.get("name"):
            raise RecipeError(f"{where}: needs a 'name'")
        if not (src.get("path") or src.get("hub")):
            raise RecipeError(f"{where}: needs 'path' or 'hub'")
        if not (src.get("category") or src.get("category_by")):
            raise RecipeError(f"{where}: needs 'category' or 'category_by'")
        if src.get("category") and src["category"] not in cats:
            raise RecipeError(f"{where}: category {src['category']!r} is not one of {cats}")
        if not (src.get("turns") or src.get("turns_from")):
            raise RecipeError(f"{where}: needs 'turns' or 'turns_from'")
        if not src.get("license"):
            raise RecipeError(f"{where}: needs a 'license' (provenance is kept for every prompt)")
    return Recipe(name=data.get("name", path.stem), path=path,
                  sha256=hashlib.sha256(text.encode()).hexdigest(), categories=cats,
                  defaults=dict(data.get("defaults") or {}), sources=data["sources"], raw=data)


def _norm(v: Any) -> str:
    return str(v).strip().casefold()


def _matches(rec: dict[str, Any], cond: dict[str, Any]) -> bool:
    """Field equals (one of) the value(s); strings compare stripped and case-insensitively."""
    for key, want in cond.items():
        wants = want if isinstance(want, list) else [want]
        if _norm(rec.get(key)) not in {_norm(w) for w in wants}:
            return False
    return True


def _category(src: dict[str, Any], rec: dict[str, Any]) -> str | None:
    if src.get("category"):
        return src["category"]
    by = src["category_by"]
    val = str(rec.get(by["field"], ""))
    return by.get("map", {}).get(val, by.get("default"))


def _records(src: dict[str, Any], root: Path | None, stats: dict[str, int]):
    if src.get("hub"):
        yield from read_hub_records(src)
        return
    if root is None:
        raise SourceError("no data root (pass --data-root or set LOADGEN_DATA_ROOT)")
    patterns = src["path"] if isinstance(src["path"], list) else [src["path"]]
    files: list[Path] = []
    for pat in patterns:
        hits = sorted(Path(p) for p in glob.glob(str(root / pat)))
        if not hits:
            raise SourceError(f"{root / pat}: no such file")
        files.extend(hits)
    for f in files:
        rel = str(f.relative_to(root))
        if src.get("adapter"):
            if src["adapter"] not in ADAPTERS:
                raise SourceError(f"unknown adapter {src['adapter']!r}")
            yield from ADAPTERS[src["adapter"]](f, rel, src)
        else:
            yield from read_file_records(f, rel, src, stats)


def source_prompts(src: dict[str, Any], root: Path | None, defaults: dict[str, Any],
                   seed: int = 0) -> tuple[list[TextPrompt], dict[str, Any]]:
    """The prompts one source yields, and a report entry (counts, skips, errors)."""
    opts = {**defaults, **src}
    stats: dict[str, int] = {"records": 0, "filtered": 0, "too_short": 0, "too_long": 0,
                             "bad_template": 0}
    out: list[TextPrompt] = []
    min_chars, max_chars = int(opts.get("min_chars", 1)), int(opts.get("max_chars", 10**9))
    for rec in _records(src, root, stats):
        stats["records"] += 1
        if src.get("where") and not _matches(rec, src["where"]):
            stats["filtered"] += 1
            continue
        if src.get("where_not") and _matches(rec, src["where_not"]):
            stats["filtered"] += 1
            continue
        for fld, how in (src.get("parse") or {}).items():
            if fld in rec:
                rec[fld] = parse_field(rec[fld], how)
        try:
            if src.get("turns_from"):
                items = parse_field(rec.get(src["turns_from"]), "pylist") or []
                tpl = src.get("turn", "{_value}")
                turns = [render(tpl, it if isinstance(it, dict) else {**rec, "_value": it})
                         for it in items]
            else:
                turns = [render(t, rec) for t in src["turns"]]
            for old, new in (src.get("replace") or {}).items():
                turns = [t.replace(old, render(new, rec)) for t in turns]
            oid = render(src.get("id", "{_file_stem}:{_index}"), rec)
            sub = render(src.get("sub_category", "{_file_stem}"), rec)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            stats["bad_template"] += 1
            continue
        turns = [t.strip() for t in turns if t and t.strip()]
        if not turns:
            stats["bad_template"] += 1
            continue
        n_chars = sum(len(t) for t in turns)
        if n_chars < min_chars:
            stats["too_short"] += 1
            continue
        if n_chars > max_chars:
            stats["too_long"] += 1
            continue
        cat = _category(src, rec)
        if cat is None:
            stats["filtered"] += 1
            continue
        meta = {"source": src["name"], "license": src["license"], "original_id": oid,
                "sub_category": sub}
        if src.get("origin"):
            meta["origin"] = src["origin"]
        meta["file"] = rec.get("_file")
        system = render(src["system"], rec) if src.get("system") else None
        out.append(TextPrompt(id=f"{src['name']}:{oid}", category=cat, turns=turns,
                              system=system, meta=meta))
    cap = src.get("max_records", opts.get("max_records"))
    if cap and len(out) > int(cap):
        rng = random.Random(f"{seed}:{src['name']}")
        keep = sorted(rng.sample(range(len(out)), int(cap)))
        stats["capped"] = len(out) - int(cap)
        out = [out[i] for i in keep]
    stats["prompts"] = len(out)
    return out, stats
