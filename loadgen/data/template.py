"""A recipe's templates: ``str.format_map`` over a record, with the recipe's own specs.

``{field:letters}`` lists options as ``A. ...``, ``{field:lines}`` one item a line,
``{field:strip}`` strips white space, ``{field:head}`` is a key (the first 120 letters and digits,
lower-case). A template is parsed once; one that needs more than named fields (positions,
indices, attributes, nested specs) goes through ``string.Formatter.vformat`` as it is.
"""

from __future__ import annotations

import string
from functools import lru_cache
from typing import Any

from loadgen.data.textfmt import alnum_head


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
        if format_spec == "head":  # a key: the first 120 letters and digits, lower-case
            return alnum_head(str(value), 120)
        return super().format_field(value, format_spec)


_FMT = _Formatter()


@lru_cache(maxsize=512)
def _plan(template: str) -> tuple[tuple[str, str | None, str | None, str], ...] | None:
    """A template parsed once: (literal, field name, conversion, spec) per part; None when a
    field is positional, indexed, an attribute or has a nested spec (then ``vformat`` does it)."""
    parts = []
    for literal, name, spec, conv in _FMT.parse(template):
        if name is not None and (not name.isidentifier() or "{" in (spec or "")):
            return None
        parts.append((literal, name, conv, spec or ""))
    return tuple(parts)


def render(template: str, rec: dict[str, Any]) -> str:
    """``template.format_map(rec)`` with the recipe's specs (letters, lines, strip, head)."""
    plan = _plan(template)
    if plan is None:
        return _FMT.vformat(template, (), rec)
    out = []
    for literal, name, conv, spec in plan:
        out.append(literal)
        if name is not None:
            out.append(_FMT.format_field(_FMT.convert_field(rec[name], conv), spec))
    return "".join(out)
