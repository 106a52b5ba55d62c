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
``{choices:letters}`` (A. .. / B. .. lines), ``{items:lines}`` (one per line), ``{x:strip}`` and
``{x:head}`` (a key: the first 120 letters and digits of x, lower-case).
"""

from __future__ import annotations

import glob
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.data.formats import FORMAT_DEFAULTS, PRESETS, PresetError
from loadgen.data.sources import (
    ADAPTERS,
    FILE_FORMATS,
    SourceError,
    parse_field,
    read_file_records,
    read_hub_records,
)
from loadgen.data.template import render
from loadgen.data.textfmt import TextPrompt
from loadgen.resources import resource_path

#: The categories of SPEED-Bench's qualitative split (the shipped recipe describes each).
CATEGORIES = ("coding", "humanities", "math", "multilingual", "qa", "rag", "reasoning",
              "roleplay", "stem", "summarization", "writing")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the recipe and source."""


@dataclass
class Recipe:
    name: str
    path: Path | None
    sha256: str
    categories: list[str]
    defaults: dict[str, Any]
    sources: list[dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict)
    #: category -> its description(s): what a prompt of that category is (the fit score)
    descriptions: dict[str, list[str]] = field(default_factory=dict)


def _categories(data: dict[str, Any], path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """``categories``: a mapping name -> description (a string or a list of strings), or, for a
    one-category recipe, a list of names."""
    cats = data.get("categories")
    if cats is None:
        raise RecipeError(f"{path}: needs 'categories' (name: description, ...)")
    if isinstance(cats, dict):
        out: dict[str, list[str]] = {}
        for name, desc in cats.items():
            descs = [desc] if isinstance(desc, str) else desc
            if not isinstance(descs, list) or not descs or not all(
                    isinstance(d, str) and d.strip() for d in descs):
                raise RecipeError(f"{path}: category {name!r} needs a description (a string or "
                                  "a list of strings)")
            out[str(name)] = descs
        return list(out), out
    if isinstance(cats, list) and all(isinstance(c, str) for c in cats) and cats:
        if len(cats) > 1:
            raise RecipeError(f"{path}: 'categories' must map each category to a description "
                              "(the build scores every prompt against them), e.g. "
                              "'categories: {coding: \"Write or fix code.\", ...}'")
        return list(cats), {}
    raise RecipeError(f"{path}: 'categories' must be a mapping of name: description")


def _check_source(src: Any, i: int, path: Path, cats: list[str]) -> None:
    name = src.get("name", "?") if isinstance(src, dict) else "?"
    where = f"{path}: source #{i + 1} ({name})"
    if not isinstance(src, dict) or not src.get("name"):
        raise RecipeError(f"{where}: needs a 'name'")
    if not (src.get("path") or src.get("hub")):
        raise RecipeError(f"{where}: needs 'path' or 'hub'")
    fmt = src.get("format")
    if fmt is not None and fmt not in FILE_FORMATS and fmt not in PRESETS:
        raise RecipeError(f"{where}: format {fmt!r} is not one of "
                          f"{', '.join(FILE_FORMATS + tuple(PRESETS))}")
    if src.get("category"):
        if src["category"] not in cats:
            raise RecipeError(f"{where}: category {src['category']!r} is not one of {cats}")
    elif isinstance(src.get("category_by"), dict):
        by = src["category_by"]
        if not by.get("field"):
            raise RecipeError(f"{where}: category_by needs a 'field'")
        if not (by.get("map") or by.get("default")):
            raise RecipeError(f"{where}: category_by needs a 'map' (value: category) or a "
                              "'default'")
        bad = [c for c in [*(by.get("map") or {}).values(), by.get("default")]
               if c is not None and c not in cats]
        if bad:
            raise RecipeError(f"{where}: category_by names {bad[0]!r}, not one of {cats}")
    else:
        raise RecipeError(f"{where}: needs 'category' or 'category_by: {{field, map}}'")
    turns = src.get("turns")
    if turns is not None and (not isinstance(turns, list) or not turns
                              or not all(isinstance(t, str) for t in turns)):
        raise RecipeError(f"{where}: 'turns' must be a list of templates, one per user turn "
                          "(e.g. turns: [\"{question}\"])")
    if not (turns or src.get("turns_from") or fmt in FORMAT_DEFAULTS):
        raise RecipeError(f"{where}: needs 'turns' or 'turns_from' (or a format such as "
                          "sharegpt, messages, alpaca, dolly or lines)")
    share = src.get("max_share")
    if share is not None and not (isinstance(share, (int, float)) and 0 < share <= 1):
        raise RecipeError(f"{where}: max_share must be a fraction in (0, 1]")
    if not src.get("license"):
        raise RecipeError(f"{where}: needs a 'license' (provenance is kept for every prompt)")


def packaged_recipes() -> list[str]:
    """Names of the recipes that ship inside the package (``--recipe NAME``)."""
    return sorted(p.stem for p in resource_path("recipes").glob("*.yaml"))


def resolve_recipe(ref: str | Path) -> Path:
    """A recipe file: ``ref`` itself when it exists, else the packaged recipe named ``ref``."""
    path = Path(ref)
    if not path.exists() and path.suffix == "" and path.name in packaged_recipes():
        return resource_path("recipes", f"{path.name}.yaml")
    return path


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = resolve_recipe(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe")
    if not path.is_file():
        raise RecipeError(f"{path}: no such recipe (a YAML file, or a packaged recipe: "
                          f"{', '.join(packaged_recipes())})")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecipeError(f"{path}: not a readable YAML recipe ({str(exc).splitlines()[0]})") \
            from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping")
    if not isinstance(data.get("sources"), list) or not data["sources"]:
        raise RecipeError(f"{path}: a recipe needs a non-empty 'sources' list")
    cats, descriptions = _categories(data, path)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise RecipeError(f"{path}: 'defaults' must be a mapping")
    if not descriptions and (defaults.get("require_fit") or any(
            isinstance(s, dict) and s.get("require_fit") for s in data["sources"])):
        raise RecipeError(f"{path}: require_fit needs category descriptions "
                          "('categories: {name: description}')")
    seen: set[str] = set()
    for i, src in enumerate(data["sources"]):
        _check_source(src, i, path, cats)
        if src["name"] in seen:
            raise RecipeError(f"{path}: two sources are named {src['name']!r}")
        seen.add(src["name"])
    return Recipe(name=data.get("name", path.stem), path=path,
                  sha256=hashlib.sha256(text.encode()).hexdigest(), categories=cats,
                  defaults=dict(defaults), sources=data["sources"], raw=data,
                  descriptions=descriptions)


def _norm(v: Any) -> str:
    return str(v).strip().casefold()


def _matches(rec: dict[str, Any], cond: dict[str, Any]) -> bool:
    """Field equals (one of) the value(s); strings compare stripped and case-insensitively."""
    for key, want in cond.items():
        wants = want if isinstance(want, list) else [want]
        if _norm(rec.get(key)) not in {_norm(w) for w in wants}:
            return False
    return True


def source_categories(src: dict[str, Any]) -> set[str]:
    """Every category a source can give its prompts (a fixed one, or ``category_by``'s map
    values and default)."""
    if src.get("category"):
        return {src["category"]}
    by = src.get("category_by") or {}
    return {c for c in (*(by.get("map") or {}).values(), by.get("default")) if c}


def _category(src: dict[str, Any], rec: dict[str, Any]) -> str | None:
    if src.get("category"):
        return src["category"]
    by = src["category_by"]
    val = str(rec.get(by["field"], ""))
    return (by.get("map") or {}).get(val, by.get("default"))


def _records(src: dict[str, Any], root: Path | None, stats: dict[str, Any]):
    if src.get("hub"):
        yield from read_hub_records(src)
        return
    if root is None:
        raise SourceError("no data root (pass --data-root or set LOADGEN_DATA_ROOT)")
    if not Path(root).is_dir():
        raise SourceError(f"data root {root} is not a directory (check --data-root)")
    patterns = src["path"] if isinstance(src["path"], list) else [src["path"]]
    files: list[Path] = []
    for pat in patterns:
        hits = sorted(Path(p) for p in glob.glob(str(root / pat)))
        if not hits:
            raise SourceError(f"{root / pat}: no such file")
        files.extend(hits)
    stats["files"] = len(files)
    preset = PRESETS.get(src.get("format") or "")
    for f in files:
        rel = str(f.relative_to(root))
        if src.get("adapter"):
            if src["adapter"] not in ADAPTERS:
                raise SourceError(f"unknown adapter {src['adapter']!r}")
            yield from ADAPTERS[src["adapter"]](f, rel, src)
            continue
        for rec in read_file_records(f, rel, src, stats):
            if preset is None:
                yield rec
                continue
            try:
                yield preset(rec)
            except PresetError as exc:
                _bad(stats, "bad_records", f"{rel} record {rec['_index'] + 1}: {exc}")


def _bad(stats: dict[str, Any], key: str, reason: str) -> None:
    stats[key] = stats.get(key, 0) + 1
    stats.setdefault("first_problem", reason)


def _turns(src: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    tf = src.get("turns_from")
    if tf:
        items = parse_field(rec.get(tf), "pylist")
        if items is None:
            raise KeyError(tf)
        if not isinstance(items, list):
            raise TypeError(f"field {tf!r} is a {type(items).__name__}, not a list of turns")
        tpl = src.get("turn", "{_value}")
        return [render(tpl, it if isinstance(it, dict) else {**rec, "_value": it})
                for it in items]
    return [render(t, rec) for t in src["turns"]]


def _empty_reason(src: dict[str, Any], stats: dict[str, Any], cats_seen: Counter) -> str:
    """Why a source yielded no prompt, in one line."""
    n = stats["records"]
    if n == 0 and stats.get("bad_records"):
        return (f"none of {stats['bad_records']} records has the {src.get('format')} shape "
                f"(first: {stats['first_problem']})")
    if n == 0:
        return "no records (empty file)"
    if stats["filtered"] == n and src.get("category_by") and not (src.get("where") or
                                                                  src.get("where_not")):
        by = src["category_by"]
        return (f"no record's {by['field']!r} maps to a category of the recipe (values seen: "
                f"{', '.join(repr(v) for v, _ in cats_seen.most_common(5)) or 'none'})")
    if stats["filtered"] == n:
        return f"all {n} records filtered out by where/where_not/category_by"
    for key, what in (("bad_template", "the template failed"), ("bad_records", "bad records"),
                      ("too_short", "shorter than min_chars"), ("too_long", "longer than "
                                                                             "max_chars")):
        if stats.get(key):
            return (f"{what} on {stats[key]} of {n} records (first: "
                    f"{stats.get('first_problem', '?')})")
    return f"{n} records gave no prompt"


def source_prompts(src: dict[str, Any], root: Path | None, defaults: dict[str, Any],
                   seed: int = 0) -> tuple[list[TextPrompt], dict[str, Any]]:
    """The prompts one source yields, and a report entry (counts, skips, errors).

    A source that yields no prompt raises SourceError with the reason (no file, no record, every
    record filtered, a template field that no record has...)."""
    src = {**FORMAT_DEFAULTS.get(src.get("format") or "", {}), **src}
    opts = {**defaults, **src}
    stats: dict[str, Any] = {"records": 0, "filtered": 0, "too_short": 0, "too_long": 0,
                             "bad_template": 0}
    out: list[TextPrompt] = []
    unmapped: Counter[str] = Counter()
    min_chars, max_chars = int(opts.get("min_chars", 1)), int(opts.get("max_chars", 10**9))
    for rec in _records(src, root, stats):
        stats["records"] += 1
        if src.get("where") and not _matches(rec, src["where"]):
            stats["filtered"] += 1
            continue
        if src.get("where_not") and _matches(rec, src["where_not"]):
            stats["filtered"] += 1
            continue
        if src.get("where_not_match") and any(
                re.search(rx, str(rec.get(k, ""))) for k, rx in src["where_not_match"].items()):
            stats["filtered"] += 1
            continue
        for fld, how in (src.get("parse") or {}).items():
            if fld in rec:
                rec[fld] = parse_field(rec[fld], how)
        try:
            turns = _turns(src, rec)
            for old, new in (src.get("replace") or {}).items():
                turns = [t.replace(old, render(new, rec)) for t in turns]
            oid = render(src.get("id", "{_file_stem}:{_index}"), rec)
            task = render(src["task"], rec) if src.get("task") else f"{src['name']}:{oid}"
            sub = render(src.get("sub_category", "{_file_stem}"), rec)
            system = render(src["system"], rec) if src.get("system") else rec.get("_system")
        except (KeyError, IndexError, AttributeError, ValueError, TypeError) as exc:
            fields = ", ".join(k for k in rec if not k.startswith("_"))
            reason = (f"no field {exc}" if isinstance(exc, KeyError) else
                      f"{type(exc).__name__}: {exc}")
            _bad(stats, "bad_template", f"{rec.get('_file')} record {rec.get('_index', 0) + 1}: "
                 f"{reason} (the record has: {fields[:200]})")
            continue
        turns = [t.strip() for t in turns if t and t.strip()]
        if not turns:
            _bad(stats, "bad_template", f"record {rec.get('_index', 0) + 1}: empty prompt")
            continue
        stats["dropped_assistant_turns"] = (stats.get("dropped_assistant_turns", 0)
                                            + rec.get("_dropped_turns", 0))
        n_chars = sum(len(t) for t in turns)
        if n_chars < min_chars:
            _bad(stats, "too_short", f"record {rec.get('_index', 0) + 1}: {n_chars} characters")
            continue
        if n_chars > max_chars:
            _bad(stats, "too_long", f"record {rec.get('_index', 0) + 1}: {n_chars} characters")
            continue
        cat = _category(src, rec)
        if cat is None:
            unmapped[str(rec.get(src["category_by"]["field"]))] += 1
            stats["filtered"] += 1
            continue
        meta = {"source": src["name"], "license": src["license"], "original_id": oid,
                "sub_category": sub, "task": task}
        if src.get("origin"):
            meta["origin"] = src["origin"]
        meta["file"] = rec.get("_file")
        out.append(TextPrompt(id=f"{src['name']}:{oid}", category=cat, turns=turns,
                              system=system or None, meta=meta))
    if not out:
        raise SourceError(_empty_reason(src, stats, unmapped))
    cap = src.get("max_records", opts.get("max_records"))
    if cap and len(out) > int(cap):
        rng = random.Random(f"{seed}:{src['name']}")
        keep = sorted(rng.sample(range(len(out)), int(cap)))
        stats["capped"] = len(out) - int(cap)
        out = [out[i] for i in keep]
    stats["prompts"] = len(out)
    return out, stats
