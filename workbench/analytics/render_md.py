"""``report.md``: the first screen (a paragraph per task, the forgetting matrices and the run figures),
then the tables as Markdown and the other figures as relative image links."""

from __future__ import annotations

from workbench.analytics.tables import Table, all_tables, forgetting_tables

CAPTIONS = {
    "pair_heatmaps.png": "Adapter x adapter means", "layer_projection.png": "Layer x projection (mean over pairs)",
    "layer_curves.png": "Per-layer curves", "spectrum.png": "Effective rank per layer",
    "forgetting.png": ("Forgetting matrices: held-out NLL (colour: change from the first row) and primary metric; "
                       "boxed: the stage that trained the task"),
    "training.png": "Training curves: batch loss, smoothed, and held-out NLL before and after each stage",
}
RUN_FIGURES = ("forgetting.png", "training.png")  # on the first screen, with the forgetting matrices


def title(report: dict) -> str:
    """The page title: a chain's report leads with what was learned and forgotten."""
    return "Continual-learning report" if report.get("forgetting") else "Adapter interference report"


def adapters_line(report: dict) -> str:
    """Which adapters the report compares (and what a continued one is measured as)."""
    return ", ".join(a["name"] + (f" (what it added over {a['increment_of']})" if a.get("increment_of") else "")
                     for a in report["adapters"])


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


def overview_md(report: dict) -> str:
    """The "At a glance" section: one paragraph per task, then the notes; empty when there is neither."""
    o = report.get("overview") or {}
    if not o.get("tasks") and not o.get("notes"):
        return ""
    parts = ["## At a glance", ""]
    parts += [f"**{e['task']}**: {e['paragraph']}\n" for e in o.get("tasks", [])]
    parts += [f"{n}\n" for n in o.get("notes", [])]
    return "\n".join(parts)


def render_md(report: dict, images: list[str]) -> str:
    """The Markdown report.

    Args:
        report: the report dict.
        images: PNG file names written next to report.md.
    """
    parts = [f"# {title(report)}\n\nAdapters: {adapters_line(report)}. Every number is in `report.json` "
             "(schema: workbench/analytics/SCHEMA.md).\n", overview_md(report)]
    parts += [table_md(t) for t in forgetting_tables(report)]
    parts += [f"![{CAPTIONS[i]}]({i})\n" for i in images if i in RUN_FIGURES]
    parts += [table_md(t) for t in all_tables(report)]
    rest = [i for i in images if i not in RUN_FIGURES]
    if rest:
        parts.append("## Figures\n")
        parts += [f"![{CAPTIONS.get(i, i)}]({i})\n" for i in rest]
    return "\n".join(p for p in parts if p)
