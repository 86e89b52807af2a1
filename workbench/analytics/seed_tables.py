"""The seed report's tables and pages: Markdown and HTML rendered from ``report.json``'s dict alone.

``report.json`` (``kind: "seed_report"``, ``schema_version`` 1), keys:

| key | meaning |
|---|---|
| `seeds`, `runs`, `reused` | the seeds; `{seed: run directory}`; `{seed: stages adopted from an earlier seed (run once)}` |
| `settings` | confidence 0.95, alpha 0.05, Holm, bootstrap (2000 percentile resamples of seeds then prompts, RNG seed 0) |
| `forgetting` | `{method: {tasks, stages, rows, learned_at, primary: [[Cell]], nll: [[Cell]], summary}}` |
| `evaluations` | `{evaluate stage: {task: {primary: Cell, nll: Cell}}}` |
| `comparisons` | list of Comparison, one family for Holm |
| `conclusions` | `{headline, significant: [sentence], not_significant: [sentence]}` |
| `eval_sizes` | `[{task, metric, n, mdd, mdd_design}]` for each per-prompt 0/1 metric |
| `score_forgetting` | optional (analyze stages with `data`): `{points, correlations: {nll, primary}, sentences}`, every (method, seed, pair) point (SCHEMA.md, Data-aware) |

**Cell**: `metric`, `mean` (over seeds), `lo`, `hi` (the shown 95% interval), `interval` (`t` over seeds, or
`bootstrap` over seeds and prompts for a per-prompt 0/1 metric), `n` (seeds), `values` (per seed), `t` and
`bootstrap` (both intervals when both apply), `n_prompts`. **Comparison**: `a`, `b` (methods), `row`,
`after`, `task`, `metric`, `which` (`primary`/`nll`), `stage_a`, `stage_b`, `n_seeds`, `mean_a`, `mean_b`,
`diff` (B - A), `lo`, `hi` (its 95% interval), `test`, `p`, `p_sign_flip`, `p_by_seed` (McNemar rows: the
by-seed t-test too), `discordant`, `reason` (why `p` is null), `p_holm`, `significant`, `higher_is_better`.
"""

from __future__ import annotations

import html
import math

from workbench.analytics.render_html import STYLE, table_html
from workbench.analytics.render_md import table_md
from workbench.analytics.tables import Table

TITLE = "Results over seeds"


def _g(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def cell_text(c: dict | None) -> str:
    """``mean [lo, hi]`` with two significant digits of the interval's width (differences between NLL
    cells are often 0.01 on values near 2: a fixed 3 significant digits would hide them)."""
    if not c:
        return "–"
    if c.get("lo") is None:
        return f"{c['mean']:.4g} (n={c['n']})"
    width = c["hi"] - c["lo"]
    if width <= 0:
        return f"{c['mean']:.4g} [{c['lo']:.4g}, {c['hi']:.4g}]"
    digits = min(6, max(0, 1 - math.floor(math.log10(width))))
    return f"{c['mean']:.{digits}f} [{c['lo']:.{digits}f}, {c['hi']:.{digits}f}]"


def _columns(f: dict, which: str) -> list[str]:
    """Task columns, each with its metric (every row of a column holds the same one)."""
    out = []
    for j, task in enumerate(f["tasks"]):
        metric = next((row[j]["metric"] for row in f[which] if row[j]), None)
        out.append(f"{task} ({metric})" if metric else task)
    return out


def forgetting_tables(report: dict) -> list[Table]:
    """Per method: the primary-metric and the NLL forgetting matrix, each cell mean [95% interval]."""
    tables = []
    n = len(report["seeds"])
    for method, f in report["forgetting"].items():
        for which in ("primary", "nll"):
            rows = [[label] + [cell_text(c) for c in row] for label, row in zip(f["rows"], f[which])]
            boot = any(c and c["interval"] == "bootstrap" for row in f[which] for c in row)
            note = (f"Mean over {n} seeds [95% interval: Student t over seeds"
                    + ("; for per-prompt 0/1 metrics, percentile bootstrap over seeds and prompts" if boot else "")
                    + "]. The base-model row is one evaluation shared by every seed (it does not depend on the "
                      "seed): it does not vary over seeds, so its interval is 0 wide"
                    + (" or, bootstrapped, reflects the prompts alone." if boot else "."))
            title = "primary metric per task" if which == "primary" else "held-out NLL, lower is better"
            tables.append(Table(f"forgetting-{method}-{which}", f"Forgetting matrix, {method} ({title})",
                                ["after stage \\ task", *_columns(f, which)], rows, note))
    return tables


def summary_table(report: dict) -> Table | None:
    rows = [[method, which, *(cell_text(f["summary"][which].get(k)) for k in ("acc", "bwt", "forgetting"))]
            for method, f in report["forgetting"].items() for which in ("primary", "nll")]
    if not rows:
        return None
    return Table("summaries", "Chain summaries", ["method", "matrix", "ACC", "BWT", "forgetting"], rows,
                 "Each seed's ACC / BWT / forgetting (Lopez-Paz & Ranzato 2017; sign-flipped for NLL so positive BWT "
                 "is improvement), then mean [95% t interval] over seeds.")


def comparison_table(report: dict) -> Table | None:
    cs = report["comparisons"]
    if not cs:
        return None
    rows = [[f"{c['b']} vs {c['a']}", c["after"], c["task"], c["metric"], _g(c["mean_a"]), _g(c["mean_b"]),
             f"{_g(c['diff'])} [{_g(c['lo'])}, {_g(c['hi'])}]", c["test"], _g(c["p"]), _g(c.get("p_sign_flip")),
             _g(c["p_holm"]), "yes" if c["significant"] else "no"] for c in cs]
    return Table("comparisons", "Method comparisons (paired)",
                 ["B vs A", "after", "task", "metric", "mean A", "mean B", "B - A [95% CI]", "test", "p",
                  "p sign-flip", "p Holm", "significant"], rows,
                 f"Paired by seed (paired t-test; the exact sign-flip p is never below 2/2^n = "
                 f"{2 / 2 ** len(report['seeds']):.3g} with {len(report['seeds'])} seeds) or, for per-prompt 0/1 "
                 "outcomes, by prompt (exact McNemar on the discordant (seed, prompt) pairs; the CI is the bootstrap "
                 "over seeds and prompts). Holm across all rows of this table; significant = Holm-adjusted p <= 0.05.")


def evaluations_table(report: dict) -> Table:
    rows = [[stage, task, (cells["primary"] or {}).get("metric", "–"), cell_text(cells["primary"]), cell_text(cells["nll"])]
            for stage, tasks in report["evaluations"].items() for task, cells in tasks.items()]
    return Table("evaluations", "Every evaluation", ["stage", "task", "primary metric", "primary [95%]", "NLL [95%]"], rows,
                 f"Mean over {len(report['seeds'])} seeds [95% interval, as in the matrices].")


def sizes_table(report: dict) -> Table | None:
    rows = [[s["task"], s["metric"], str(s["n"]), "none (set too small)" if s["mdd"] is None else f"{s['mdd']:.3f}"]
            for s in report["eval_sizes"]]
    if not rows:
        return None
    design = report["eval_sizes"][0]["mdd_design"]
    return Table("eval_sizes", "Evaluation set sizes and the smallest detectable difference",
                 ["task", "metric", "prompts", "smallest detectable difference"], rows,
                 f"Difference in rate detectable with 80% power ({design}). A paired test on the same prompts "
                 "detects smaller differences when the methods disagree on few prompts; seeds do not add prompts.")


def score_forgetting_tables(report: dict) -> list[Table]:
    """Data-aware score vs forgetting over every (method, seed, pair): the rank correlations, then the points."""
    sf = report.get("score_forgetting")
    if not sf:
        return []
    words = {"nll": "held-out NLL increase", "primary": "primary-metric loss"}
    corr = [[words[w], str(c["n"]), _g(c["rho"]), f"[{_g(c['lo'])}, {_g(c['hi'])}]", _g(c["p"]), c["reason"] or ""]
            for w, c in sf["correlations"].items()]
    points = [[p["group"], str(p["seed"]), f"{p['update']} on {p['task']}", _g(p["score"]), _g(p["nll_forgetting"]),
               _g(p["metric_forgetting"])] for p in sf["points"]]
    note = (" ".join(sf["sentences"]) + " Each point: an earlier task i and a later stage j of one method and seed; "
            "the score is the data-aware energy ratio of j's update on i's held-out inputs, the forgetting is "
            "task i's change from the row before j to j's row (positive: worse). 95% CI: percentile bootstrap "
            "over points (points of one seed share a run, so it is optimistic); p: permutation test.")
    return [Table("score_forgetting", "Data-aware score vs forgetting (Spearman, all methods and seeds)",
                  ["forgetting", "points", "rho", "95% CI", "p", "why no rho"], corr, note),
            Table("score_forgetting_points", "Score vs forgetting: the points",
                  ["method", "seed", "update on earlier task", "energy ratio", "NLL forgetting",
                   "metric forgetting"], points)]


def all_tables(report: dict) -> list[Table]:
    """Every table that applies, in page order."""
    tables = forgetting_tables(report) + [t for t in (summary_table(report), comparison_table(report)) if t]
    tables += score_forgetting_tables(report)
    if not report["forgetting"]:
        tables.append(evaluations_table(report))
    sizes = sizes_table(report)
    return tables + ([sizes] if sizes else [])


def _intro(report: dict) -> str:
    seeds = ", ".join(map(str, report["seeds"]))
    reused = {s: v for s, v in report["reused"].items() if v}
    once = sorted({n for v in reused.values() for n in v})
    text = f"Pipeline {report['pipeline']}, run once per seed ({seeds})"
    if report["runs"]:
        text += f"; the per-seed runs are {', '.join(report['runs'].values())}"
    text += ". Every number is in report.json."
    if once:
        text += f" Run once and reused by the later seeds (they do not depend on the seed): {', '.join(once)}."
    return text


def render_md(report: dict) -> str:
    """The Markdown page: intro, conclusions in words, then the tables."""
    c = report["conclusions"]
    parts = [f"# {TITLE}\n\n{_intro(report)}\n", "## Conclusions\n\n" + c["headline"] + "\n"]
    if c["significant"]:
        parts.append("Significant at 0.05 after Holm:\n\n" + "\n".join(f"- {s}" for s in c["significant"]) + "\n")
    if c["not_significant"]:
        parts.append("Not significant:\n\n" + "\n".join(f"- {s}" for s in c["not_significant"]) + "\n")
    parts += [table_md(t) for t in all_tables(report)]
    return "\n".join(parts)


def _list_html(title: str, items: list[str]) -> str:
    return f"<p>{html.escape(title)}</p><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in items) + "</ul>"


def render_html(report: dict) -> str:
    """The HTML page (self-contained; the same text and tables as the Markdown)."""
    c = report["conclusions"]
    body = [f"<h1>{TITLE}</h1><p>{html.escape(_intro(report))}</p>",
            f'<section id="conclusions"><h2>Conclusions</h2><p>{html.escape(c["headline"])}</p>']
    if c["significant"]:
        body.append(_list_html("Significant at 0.05 after Holm:", c["significant"]))
    if c["not_significant"]:
        body.append(_list_html("Not significant:", c["not_significant"]))
    body.append("</section>")
    body += [table_html(t) for t in all_tables(report)]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{TITLE}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
