"""``report.html``: one self-contained page (inline CSS, images as base64 data URIs, no external resources)."""

from __future__ import annotations

import base64
import html

from workbench.analytics.render_md import CAPTIONS
from workbench.analytics.tables import Table, all_tables

STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}img{max-width:100%}
.note{color:#555;font-size:13px}"""


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


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """The HTML report.

    Args:
        report: the report dict.
        images: file name -> PNG bytes, embedded in this order.
    """
    names = html.escape(", ".join(a["name"] for a in report["adapters"]))
    body = [f"<h1>Adapter interference report</h1><p>Adapters: {names}. Every number is in report.json.</p>"]
    body += [table_html(t) for t in all_tables(report)]
    if images:
        body.append("<h2>Figures</h2>" + "".join(figure_html(n, png) for n, png in images.items()))
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Adapter interference report</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
