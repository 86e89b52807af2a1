"""``report.html``: one self-contained page (inline CSS, images as base64 data URIs, no script, no external
resource). The first screen holds a paragraph per task and the forgetting matrices side by side."""

from __future__ import annotations

import base64
import html

from workbench.analytics.render_md import CAPTIONS, RUN_FIGURES, adapters_line, title
from workbench.analytics.tables import Table, all_tables, forgetting_tables

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em 2em;max-width:1400px;color:#222;line-height:1.4}
h1{margin:0 0 .2em}h2{margin:1.2em 0 .4em;font-size:1.25em}
table{border-collapse:collapse;margin:0.3em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
figcaption{font-size:13px;color:#555}.note{color:#555;font-size:13px;max-width:1000px}
#overview p{max-width:1000px;margin:.4em 0}#overview p.task{padding-left:.6em;border-left:3px solid #4a7ab5}
.side{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}.side section h2{font-size:1.05em}"""


def table_html(t: Table) -> str:
    """One table with its heading and note (all text escaped)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    note = f'<p class="note">{html.escape(t.note)}</p>' if t.note else ""
    return (f'<section id="{t.id}"><h2>{html.escape(t.title)}</h2>{note}'
            f'<table id="table-{t.id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>')


def figure_html(name: str, png: bytes) -> str:
    """An embedded PNG with its caption."""
    data = base64.b64encode(png).decode("ascii")
    cap = html.escape(CAPTIONS.get(name, name))
    return (f'<figure id="fig-{html.escape(name)}"><img alt="{cap}" data-file="{html.escape(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>')


def overview_html(report: dict) -> str:
    """The "At a glance" section (empty when there is nothing to say)."""
    o = report.get("overview") or {}
    if not o.get("tasks") and not o.get("notes"):
        return ""
    tasks = "".join(f'<p class="task"><b>{html.escape(e["task"])}</b>: {html.escape(e["paragraph"])}</p>'
                    for e in o.get("tasks", []))
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in o.get("notes", []))
    return f'<section id="overview"><h2>At a glance</h2>{tasks}{notes}</section>'


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """The HTML report.

    Args:
        report: the report dict.
        images: file name -> PNG bytes, embedded in this order (the run figures on the first screen).
    """
    head = html.escape(title(report))
    body = [f"<h1>{head}</h1><p>Adapters: {html.escape(adapters_line(report))}. Every number is in report.json.</p>",
            overview_html(report)]
    matrices = forgetting_tables(report)
    if matrices:
        body.append('<div class="side">' + "".join(table_html(t) for t in matrices) + "</div>")
    body += [figure_html(n, png) for n, png in images.items() if n in RUN_FIGURES]
    body += [table_html(t) for t in all_tables(report)]
    rest = {n: png for n, png in images.items() if n not in RUN_FIGURES}
    if rest:
        body.append("<h2>Figures</h2>" + "".join(figure_html(n, png) for n, png in rest.items()))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{head}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
