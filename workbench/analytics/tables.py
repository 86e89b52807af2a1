"""The report's tables as plain values (title, id, header, rows of strings), shared by Markdown and HTML.

A column of a metric that is constant over every pair and module (``report["constants"]``) is left out:
the report states it once in a sentence instead (:mod:`workbench.analytics.constants`), and the ranking
of modules by interference is left out when interference is constant (every rank would be a tie).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table: ``rows`` hold display strings."""

    id: str
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def fmt(v, digits: int = 4) -> str:
    """A number for display ('–' for undefined)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _with_base(v, base) -> str:
    return f"{fmt(v)} ({fmt(base)})" if base is not None else fmt(v)


def _columns(report: dict, columns: list[tuple]) -> list[tuple]:
    """The ``(metric, header, cell)`` columns whose metric varies (metric None: always kept)."""
    constant = report.get("constants") or {}
    return [c for c in columns if c[0] not in constant]


def _build(report: dict, columns: list[tuple], items) -> tuple[list[str], list[list[str]]]:
    cols = _columns(report, columns)
    return [h for _, h, _ in cols], [[cell(it) for _, _, cell in cols] for it in items]


def _pair(p: dict) -> str:
    return f"{p['a']} / {p['b']}"


HEADLINE = [
    (None, "pair (a / b)", _pair),
    (None, "modules", lambda p: fmt(p["summary"]["n_modules"])),
    (None, "degenerate", lambda p: fmt(p["summary"]["n_degenerate"])),
    ("a_mean_sq_cos", "A mean cos² (random)",
     lambda p: _with_base(p["summary"]["means"]["a_mean_sq_cos"], p["summary"]["means"]["a_random_baseline"])),
    ("b_mean_sq_cos", "B mean cos² (random)",
     lambda p: _with_base(p["summary"]["means"]["b_mean_sq_cos"], p["summary"]["means"]["b_random_baseline"])),
    ("delta_cosine", "ΔW cosine", lambda p: fmt(p["summary"]["means"]["delta_cosine"])),
    ("interference", "interf. a←b (random)",
     lambda p: _with_base(p["summary"]["means"]["interference_ab"], p["summary"]["means"]["interference_baseline"])),
    ("interference", "interf. b←a", lambda p: fmt(p["summary"]["means"]["interference_ba"])),
    ("cross_energy", "cross energy ab / ba",
     lambda p: f"{fmt(p['summary']['means']['cross_energy_ab'])} / {fmt(p['summary']['means']['cross_energy_ba'])}"),
    ("mask_jaccard", "mask Jaccard",
     lambda p: fmt(p["summary"]["mask"]["jaccard"] if p["summary"].get("mask") else None)),
]


def headline(report: dict) -> Table:
    """One row per pair: the means over modules of every varying metric."""
    header, rows = _build(report, HEADLINE, report["pairs"])
    note = ("Means over shared modules where each metric is defined; degenerate modules (zero or rank-deficient "
            "factors) never count as orthogonal. interf. a←b = |ΔW_b P_A(a)|/|ΔW_b|.")
    if report.get("constants"):
        note += " Metrics constant over every pair and module are stated in the sentence at the top, not here."
    shared = [_pair(p) for p in report["pairs"] if (p["summary"]["means"]["a_mean_sq_cos"] or 0) > 1 - 1e-6]
    if shared and "a_mean_sq_cos" not in (report.get("constants") or {}):
        # some pairs share A (stages of one chain, or one seed), others do not: say which, since their A
        # overlap and interference of 1 hold by construction
        note += (f" {', '.join(shared)}: the same A, so A overlap and interference are 1 by construction; "
                 "their updates can differ only through B (see B cos², ΔW cosine).")
    return Table("headline", "Adapter pairs", header, rows, note)


TOP = [
    (None, "pair", _pair),
    (None, "module", lambda r: r["module"]),
    ("interference", "interference (max dir.)", lambda r: fmt(r["interference"])),
    ("delta_cosine", "ΔW cosine", lambda r: fmt(r["delta_cosine"])),
    ("b_mean_sq_cos", "B mean cos²", lambda r: fmt(r["b_mean_sq_cos"])),
    ("a_mean_sq_cos", "A mean cos²", lambda r: fmt(r["a_mean_sq_cos"])),
]


def top_modules(report: dict) -> Table | None:
    """The most interfering (pair, module) entries; None when interference is constant (all ties)."""
    if "interference" in (report.get("constants") or {}):
        return None
    header, rows = _build(report, TOP, report["top_modules"])
    return Table("top_modules", "Modules that interfere most", header, rows)


PROJECTION = [
    (None, "pair", lambda it: it[0]),
    (None, "projection", lambda it: it[1]),
    ("a_mean_sq_cos", "A mean cos²", lambda it: fmt(it[2]["a_mean_sq_cos"])),
    ("b_mean_sq_cos", "B mean cos²", lambda it: fmt(it[2]["b_mean_sq_cos"])),
    ("delta_cosine", "ΔW cosine", lambda it: fmt(it[2]["delta_cosine"])),
    ("interference", "interference", lambda it: fmt(it[2]["interference"])),
]


def per_projection(report: dict) -> Table:
    """Per pair and projection type: the main varying metrics."""
    items = [(_pair(p), proj, m) for p in report["pairs"] for proj, m in p["summary"]["per_projection"].items()]
    header, rows = _build(report, PROJECTION, items)
    return Table("per_projection", "Per projection type", header, rows)


def adapters(report: dict) -> Table:
    """One row per adapter: identity and spectrum aggregates."""
    rows = [[a["name"], fmt(a.get("method")), fmt(a.get("rank")), fmt(a["summary"]["n_modules"]),
             fmt(a["summary"]["n_degenerate"]), fmt(a["summary"]["mean_effective_rank"]),
             fmt(a["summary"]["mean_numerical_rank"])] for a in report["adapters"]]
    return Table("adapters", "Adapters", ["name", "method", "rank", "modules", "degenerate",
                                          "mean effective rank", "mean numerical rank"], rows)


def degenerate(report: dict) -> Table:
    """Why modules were flagged degenerate, per pair, with counts."""
    rows = [[_pair(p), reason, str(n)]
            for p in report["pairs"] for reason, n in sorted(p["summary"]["degenerate_reasons"].items())]
    return Table("degenerate", "Degenerate modules", ["pair", "reason", "modules"], rows)


def training(report: dict) -> Table | None:
    """Per training stage: the smoothed loss at the start and the end, and the held-out NLL change."""
    from workbench.analytics.overview import signed

    stages = report.get("training") or []
    if not stages:
        return None
    rows = []
    for s in stages:
        b, a = s["heldout_before"], s["heldout_after"]
        rows.append([s["name"], fmt(s["task"]), str(len(s["loss"])), f"{s['smoothed_first']:.3f} → {s['smoothed_last']:.3f}",
                     f"{b:.3f} → {a:.3f} ({signed(a - b)})" if b is not None and a is not None else "–"])
    note = ("Smoothed: a debiased exponential moving average of the per-step batch loss (span: a fifth of the "
            "steps). Held-out: the NLL of the stage's own task on held-out pairs, from the evaluation before "
            "and after the stage; it, not the batch loss, says what the stage learned.")
    return Table("training", "Training stages", ["stage", "task", "steps", "loss, smoothed (first → last)",
                                                 "held-out NLL before → after"], rows, note)


def _cell(v, interval, digits: int) -> str:
    text = "–" if v is None else f"{v:.{digits}f}"
    return text + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def _matrix_rows(f: dict, key: str, interval_key: str, digits: int = 3) -> list[list[str]]:
    from workbench.analytics.overview import row_label

    iv = f.get(interval_key)
    return [[f["stages"][i] if not f.get("row_adapters") else f"{row_label(f, i, 'base model')} ({f['stages'][i]})"]
            + [_cell(v, iv[i][j] if iv else None, digits) for j, v in enumerate(row)]
            for i, row in enumerate(f[key])]


def forgetting(report: dict) -> Table | None:
    """Stage x task scores (primary metric), when a forgetting matrix was given."""
    f = report.get("forgetting")
    if not f:
        return None
    metrics = f.get("metrics") or {}
    header = ["after stage"] + [f"{t} ({metrics[t]})" if t in metrics else t for t in f["tasks"]]
    return Table("forgetting", f"Forgetting matrix ({f['metric']})", header, _matrix_rows(f, "matrix", "interval"))


def forgetting_nll(report: dict) -> Table | None:
    """Stage x task held-out NLL (lower is better), when the forgetting input carries it."""
    f = report.get("forgetting")
    if not f or not f.get("nll"):
        return None
    return Table("forgetting_nll", "Forgetting matrix (held-out NLL, lower is better)", ["after stage"] + f["tasks"],
                 _matrix_rows(f, "nll", "nll_interval"))


def forgetting_tables(report: dict) -> list[Table]:
    """The held-out NLL and the primary-metric matrices, in that order (shown side by side)."""
    return [t for t in (forgetting_nll(report), forgetting(report)) if t]


def all_tables(report: dict) -> list[Table]:
    """Every table after the forgetting matrices, in page order."""
    from workbench.analytics.data_aware_report import data_aware_tables

    tables = [t for t in (training(report),) if t] + [adapters(report)]
    if report["pairs"]:
        tables += [t for t in (headline(report), top_modules(report), per_projection(report)) if t]
        tables += data_aware_tables(report)
        if any(p["summary"]["degenerate_reasons"] for p in report["pairs"]):
            tables.append(degenerate(report))
    return tables
