"""``loadgen report DIR``: a self-contained HTML report and a Markdown summary of a run or a sweep
directory (docs/REPORT.md).

    build.py     build_report: the directory to report.html and report.md
    data.py      reads the directory; every number the report shows, or n/a with its reason
    plots.py     matplotlib figures (Agg), embedded as base64 PNG
    blocks.py    cells, tables, sections: the content's building blocks
    sections.py  the report's content, independent of format (conditions.py: run conditions)
    html.py      report.html (no external resource, no script)
    markdown.py  report.md
(the command is loadgen/cli/report.py)
"""
