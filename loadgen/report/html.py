"""The self-contained HTML report: inline CSS, plots as base64 PNG data URIs, no script and no
external resource of any kind (no CDN, font, stylesheet or link)."""

from __future__ import annotations

from html import escape

from loadgen.report.blocks import Section, Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1250px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; white-space: nowrap; }
td.na { color: #888; font-style: italic; white-space: normal; }
td.slower { background: #fbe3e3; font-weight: 600; }
td.faster { background: #e6f4e6; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .na-plot { color: #888; font-style: italic; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
p.note { font-size: 0.8em; color: #555; } .wrap { overflow-x: auto; }
"""


def _table(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for row in t.rows:
        cells = "".join(f'<td class="{v.cls}">{escape(v.text)}</td>' if v.cls
                        else f"<td>{escape(v.text)}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    html = (f'<div class="wrap"><table><caption>{escape(t.title)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    if t.note:
        html += f'<p class="note">{escape(t.note)}</p>'
    if t.collapsed:
        html = (f"<details><summary>{escape(t.title)} ({len(t.rows)} rows)</summary>"
                f"{html}</details>")
    return html


def _section(s: Section) -> str:
    parts = [f'<section id="{escape(s.key)}"><h2>{escape(s.title)}</h2>']
    parts += [f"<p>{escape(line)}</p>" for line in s.text]
    if s.plot is not None:
        p = s.plot
        if p.png_b64:
            parts.append(f'<figure><img alt="{escape(p.title)}" title="{escape(p.title)}" '
                         f'src="data:image/png;base64,{p.png_b64}">'
                         f"<figcaption><b>{escape(p.title)}.</b> {escape(p.caption)}"
                         f"</figcaption></figure>")
        else:
            parts.append(f'<p class="na-plot">{escape(p.title)}: n/a ({escape(p.na or "")})'
                         f"</p>")
    if s.items:
        parts.append("<ul>" + "".join(f"<li>{escape(i)}</li>" for i in s.items) + "</ul>")
    if s.pre:
        pre = f"<pre>{escape(s.pre)}</pre>"
        if s.pre_folded:
            lines = s.pre.count("\n") + 1
            pre = f"<details><summary>{escape(s.title)} ({lines} lines)</summary>{pre}</details>"
        parts.append(pre)
    parts += [_table(t) for t in s.tables]
    parts.append("</section>")
    return "\n".join(parts)


# The browser enforces self-containment: nothing may load but inline styles and data: images.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render(title: str, sections: list[Section], generated: str) -> str:
    toc = "".join(f'<li><a href="#{escape(s.key)}">{escape(s.title)}</a></li>'
                  for s in sections)
    body = "\n".join(_section(s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>"
            f"<h1>{escape(title)}</h1><p class=\"note\">{escape(generated)}</p>"
            f"<nav><ul>{toc}</ul></nav>\n{body}\n</body></html>\n")
