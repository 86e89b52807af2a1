"""The report's tables as plain values (title, id, header, rows of strings), shared by Markdown and HTML."""

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


def headline(report: dict) -> Table:
    """One row per pair: the means over modules of every metric."""
    rows = []
    for p in report["pairs"]:
        s, m = p["summary"], p["summary"]["means"]
        mask = s["mask"]["jaccard"] if s.get("mask") else None
        rows.append([f"{p['a']} / {p['b']}", fmt(s["n_modules"]), fmt(s["n_degenerate"]),
                     _with_base(m["a_mean_sq_cos"], m["a_random_baseline"]),
                     _with_base(m["b_mean_sq_cos"], m["b_random_baseline"]), fmt(m["delta_cosine"]),
                     _with_base(m["interference_ab"], m["interference_baseline"]), fmt(m["interference_ba"]),
                     f"{fmt(m['cross_energy_ab'])} / {fmt(m['cross_energy_ba'])}", fmt(mask)])
    header = ["pair (a / b)", "modules", "degenerate", "A mean cos² (random)", "B mean cos² (random)",
              "ΔW cosine", "interf. a←b (random)", "interf. b←a", "cross energy ab / ba", "mask Jaccard"]
    note = ("Means over shared modules where each metric is defined; degenerate modules (zero or rank-deficient "
            "factors) never count as orthogonal. interf. a←b = |ΔW_b P_A(a)|/|ΔW_b|.")
    shared = [f"{p['a']} / {p['b']}" for p in report["pairs"] if p["summary"]["means"]["a_mean_sq_cos"] is not None
              and p["summary"]["means"]["a_mean_sq_cos"] > 1 - 1e-6]
    if shared:
        # A chain's stages continue one adapter: the same frozen A, so these two columns are 1 by construction
        note += (f" {', '.join(shared)}: the same A (stages of one chain, or one seed), so A overlap and "
                 "interference are 1 by construction; their updates can differ only through B (see B cos², ΔW cosine).")
    return Table("headline", "Adapter pairs", header, rows, note)


def top_modules(report: dict) -> Table:
    """The most interfering (pair, module) entries."""
    rows = [[f"{r['a']} / {r['b']}", r["module"], fmt(r["interference"]), fmt(r["delta_cosine"]),
             fmt(r["b_mean_sq_cos"]), fmt(r["a_mean_sq_cos"])] for r in report["top_modules"]]
    return Table("top_modules", "Modules that interfere most",
                 ["pair", "module", "interference (max dir.)", "ΔW cosine", "B mean cos²", "A mean cos²"], rows)


def per_projection(report: dict) -> Table:
    """Per pair and projection type: the main metrics."""
    rows = []
    for p in report["pairs"]:
        for proj, m in p["summary"]["per_projection"].items():
            rows.append([f"{p['a']} / {p['b']}", proj, fmt(m["a_mean_sq_cos"]), fmt(m["b_mean_sq_cos"]),
                         fmt(m["delta_cosine"]), fmt(m["interference"])])
    return Table("per_projection", "Per projection type",
                 ["pair", "projection", "A mean cos²", "B mean cos²", "ΔW cosine", "interference"], rows)


def adapters(report: dict) -> Table:
    """One row per adapter: identity and spectrum aggregates."""
    rows = [[a["name"], fmt(a.get("method")), fmt(a.get("rank")), fmt(a["summary"]["n_modules"]),
             fmt(a["summary"]["n_degenerate"]), fmt(a["summary"]["mean_effective_rank"]),
             fmt(a["summary"]["mean_numerical_rank"])] for a in report["adapters"]]
    return Table("adapters", "Adapters", ["name", "method", "rank", "modules", "degenerate",
                                          "mean effective rank", "mean numerical rank"], rows)


def degenerate(report: dict) -> Table:
    """Why modules were flagged degenerate, per pair, with counts."""
    rows = [[f"{p['a']} / {p['b']}", reason, str(n)]
            for p in report["pairs"] for reason, n in sorted(p["summary"]["degenerate_reasons"].items())]
    return Table("degenerate", "Degenerate modules", ["pair", "reason", "modules"], rows)


def forgetting(report: dict) -> Table | None:
    """Stage x task scores, when a forgetting matrix was given."""
    f = report.get("forgetting")
    if not f:
        return None
    rows = [[stage] + [fmt(v) for v in row] for stage, row in zip(f["stages"], f["matrix"])]
    return Table("forgetting", f"Forgetting matrix ({f['metric']})", ["after stage"] + f["tasks"], rows)


def all_tables(report: dict) -> list[Table]:
    """Every table that applies, in page order."""
    tables = [adapters(report)]
    if report["pairs"]:
        tables += [headline(report), top_modules(report), per_projection(report)]
        if any(p["summary"]["degenerate_reasons"] for p in report["pairs"]):
            tables.append(degenerate(report))
    f = forgetting(report)
    return tables + ([f] if f else [])
