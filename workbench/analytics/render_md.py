"""``report.md``: the tables as Markdown and the figures as relative image links."""

from __future__ import annotations

from workbench.analytics.tables import Table, all_tables

CAPTIONS = {
    "pair_heatmaps.png": "Adapter x adapter means", "layer_projection.png": "Layer x projection (mean over pairs)",
    "layer_curves.png": "Per-layer curves", "spectrum.png": "Effective rank per layer",
    "forgetting.png": "Forgetting matrix",
}


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def table_md(t: Table) -> str:
    """One table in GitHub Markdown, with its title and note."""
    lines = [f"## {t.title}", ""]
    if t.note:
        lines += [t.note, ""]
    lines.append("| " + " | ".join(map(_cell, t.header)) + " |")
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(map(_cell, r)) + " |" for r in t.rows]
    return "\n".join(lines) + "\n"


def render_md(report: dict, images: list[str]) -> str:
    """The Markdown report.

    Args:
        report: the report dict.
        images: PNG file names written next to report.md.
    """
    names = ", ".join(a["name"] + (f" (what it added over {a['increment_of']})" if a.get("increment_of") else "")
                      for a in report["adapters"])
    parts = [f"# Adapter interference report\n\nAdapters: {names}. Every number is in `report.json` "
             "(schema: workbench/analytics/SCHEMA.md).\n"]
    parts += [table_md(t) for t in all_tables(report)]
    if images:
        parts.append("## Figures\n")
        parts += [f"![{CAPTIONS.get(i, i)}]({i})\n" for i in images]
    return "\n".join(parts)
