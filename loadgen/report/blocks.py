"""The report's building blocks, independent of its format: a table cell (``V``), a table, a
section, and the cell formatters every section uses; loadgen.report.html and
loadgen.report.markdown render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loadgen.report import data as D
from loadgen.report.plots import Plot

METRICS_POINTER = ("Every number is defined in docs/METRICS.md of the loadgen repository "
                   "(this report links to nothing, so it opens anywhere); the plots are "
                   "described in docs/REPORT.md.")


@dataclass(frozen=True, slots=True)
class V:
    """A table cell: its text and an optional class (``slower``: a speedup below 1; ``na``)."""

    text: str
    cls: str | None = None


@dataclass(slots=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[V]]
    note: str | None = None
    collapsed: bool = False  # HTML: inside <details>


@dataclass(slots=True)
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)
    plot: Plot | None = None
    tables: list[Table] = field(default_factory=list)
    items: list[str] = field(default_factory=list)  # a bulleted list
    pre: str | None = None  # preformatted text (config)
    pre_folded: bool = False  # HTML: the preformatted text inside <details>


def num(v: D.Num | float | int | None, digits: int = 2) -> V:
    if v is None:
        return V("n/a", "num na")
    if isinstance(v, D.NA):
        return V(str(v), "num na")
    return V(f"{float(v):,.{digits}f}", "num")


def speedup(v: D.Num) -> V:
    if isinstance(v, D.NA):
        return V(str(v), "num na")
    if v < 1:
        return V(f"{v:.2f}× ▼ slower", "num slower")
    return V(f"{v:.2f}×", "num faster")


def missing_row(v: D.CellView, lead: list[V], n: int) -> list[V]:
    """A row for a cell without a summary: the reason once, then n/a."""
    return [*lead, V(f"n/a ({v.missing or 'no summary'})", "na"), *[V("n/a", "num na")] * (n - 1)]


def text(s: Any) -> V:
    return V(str(s))
