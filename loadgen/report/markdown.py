"""The Markdown summary: the same sections as the HTML report, tables and text only (the plots
are in report.html)."""

from __future__ import annotations

from loadgen.report.blocks import Section, Table


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    out = [f"**{_cell(t.title)}**", ""]
    out.append("| " + " | ".join(_cell(c) for c in t.columns) + " |")
    out.append("|" + "|".join("---" for _ in t.columns) + "|")
    for row in t.rows:
        cells = (f"**{_cell(v.text)}**" if "slower" in (v.cls or "") else _cell(v.text)
                 for v in row)
        out.append("| " + " | ".join(cells) + " |")
    if t.note:
        out += ["", f"_{t.note}_"]
    return [*out, ""]


def _section(s: Section) -> list[str]:
    out = [f"## {s.title}", ""]
    out += [line + "\n" for line in s.text]
    if s.plot is not None:
        p = s.plot
        out.append(f"Plot: _{p.title}_ — in report.html. {p.caption}\n" if p.png_b64 else
                   f"Plot: _{p.title}_ — n/a ({p.na}).\n")
    if s.items:
        out += [f"- {i}" for i in s.items] + [""]
    if s.pre:
        out += ["```", s.pre, "```", ""]
    for t in s.tables:
        out += _table(t)
    return out


def render(title: str, sections: list[Section], generated: str) -> str:
    out = [f"# {title}", "", f"_{generated}_", ""]
    for s in sections:
        out += _section(s)
    return "\n".join(out).rstrip() + "\n"
