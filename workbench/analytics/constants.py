"""Which pair metrics are constant in a report: a number that does not vary is a sentence, not a panel.

Stages of one chain share one frozen A, so for every pair and module the A mean cos², the interference
and the linear-merge cross energy are exactly 1, and disjoint LoRI-S masks have a Jaccard of exactly 0.
A heatmap of such a metric is one flat colour and a ranking by it is arbitrary. Constancy is detected
from the data (every module value of every pair), not assumed from the method, so a merge of adapters
with different A's still gets its panels. The renderers (tables, plots) ask :func:`constant_metrics`.
"""

from __future__ import annotations

# report metric -> the module-level JSON fields it summarises (a pair's module entry in report.json)
MODULE_FIELDS = {
    "a_mean_sq_cos": (("a_subspace", "mean_sq_cos"),),
    "b_mean_sq_cos": (("b_subspace", "mean_sq_cos"),),
    "delta_cosine": (("delta_cosine",),),
    "interference": (("interference_ab",), ("interference_ba",)),
    "cross_energy": (("cross_energy_ab",), ("cross_energy_ba",)),
    "mask_jaccard": (("mask_jaccard",),),
}
LABELS = {"a_mean_sq_cos": "A mean cos²", "b_mean_sq_cos": "B mean cos²", "delta_cosine": "ΔW cosine",
          "interference": "interference", "cross_energy": "cross energy", "mask_jaccard": "mask Jaccard"}
SHARED_A = "the adapters share one frozen A: stages of one chain, or one A seed"
# why a metric is constant, when the constant is the one its construction gives; interference and cross
# energy are 1 by construction only where the A's are one (A mean cos² is 1 too)
REASONS = {("a_mean_sq_cos", 1.0): SHARED_A, ("mask_jaccard", 0.0): "the masks are disjoint"}
FOLLOW_A = ("interference", "cross_energy")
RELATIVE_TOLERANCE = 1e-9


def _field(module: dict, path: tuple[str, ...]):
    v = module
    for key in path:
        v = v.get(key) if isinstance(v, dict) else None
    return v


def module_values(report: dict, metric: str) -> list[float]:
    """Every defined module value of ``metric`` over every pair (both directions where it has two)."""
    return [v for p in report["pairs"] for m in p["modules"].values() for path in MODULE_FIELDS[metric]
            if (v := _field(m, path)) is not None]


def is_constant(values: list[float], tol: float = RELATIVE_TOLERANCE) -> bool:
    """At least two values, spread within ``tol`` relative to the largest magnitude (0 for all zeros)."""
    if len(values) < 2:
        return False
    lo, hi = min(values), max(values)
    return hi - lo <= tol * max(abs(lo), abs(hi))


def constant_metrics(report: dict) -> dict[str, dict]:
    """``{metric: {"value", "n_values", "label", "reason"}}`` for each pair metric constant over every pair
    and module of the report (``reason`` null when the constant has no known construction)."""
    out = {}
    for metric in MODULE_FIELDS:
        values = module_values(report, metric)
        if is_constant(values):
            value = round(sum(values) / len(values), 12) + 0.0  # 0.9999999999999991: the 1 a shared A gives
            out[metric] = {"value": value, "n_values": len(values), "label": LABELS[metric],
                           "reason": REASONS.get((metric, value))}
    if out.get("a_mean_sq_cos", {}).get("reason") == SHARED_A:
        for metric in FOLLOW_A:
            if out.get(metric, {}).get("value") == 1.0:
                out[metric]["reason"] = SHARED_A
    return out


def constants_sentence(constants: dict[str, dict]) -> str:
    """One sentence stating every constant metric, grouped by value and reason (empty with none)."""
    groups: dict[tuple, list[str]] = {}
    for c in constants.values():
        groups.setdefault((c["value"], c["reason"]), []).append(c["label"])
    parts = []
    for k, ((value, reason), labels) in enumerate(groups.items()):
        names = labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]
        verb = "is" if len(labels) == 1 else "are"
        where = " for every pair and module" if k == 0 else ""
        parts.append(f"{names} {verb} exactly {value:g}{where}" + (f" ({reason})" if reason else ""))
    if not parts:
        return ""
    return "Not plotted or ranked, because they do not vary: " + "; ".join(parts) + "."
