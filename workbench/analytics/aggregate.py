"""Aggregates of module metrics: per pair, per layer, per projection type, and the worst modules.

A mean is taken over the modules where the metric is defined (None values are skipped, never counted as
0), so degenerate modules cannot pull a pair towards "orthogonal"; how many were skipped is reported.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from workbench.adapters.peft_config import DEFAULT_TARGETS
from workbench.analytics.masks import MaskOverlap, total_overlap
from workbench.analytics.pairs import Analysis, ModulePair, PairAnalysis
from workbench.analytics.spectrum import Spectrum
from workbench.keys import layer_of, projection_of


def _interference(m: ModulePair) -> float | None:
    vals = [v for v in (m.interference_ab, m.interference_ba) if v is not None]
    return max(vals) if vals else None


METRICS: dict[str, Callable[[ModulePair], float | None]] = {
    "a_mean_sq_cos": lambda m: m.a_subspace.mean_sq_cos,
    "a_max_cos": lambda m: m.a_subspace.max_cos,
    "a_random_baseline": lambda m: m.a_subspace.random_baseline,
    "b_mean_sq_cos": lambda m: m.b_subspace.mean_sq_cos,
    "b_max_cos": lambda m: m.b_subspace.max_cos,
    "b_random_baseline": lambda m: m.b_subspace.random_baseline,
    "delta_cosine": lambda m: m.delta_cosine,
    "abs_delta_cosine": lambda m: None if m.delta_cosine is None else abs(m.delta_cosine),
    "interference_ab": lambda m: m.interference_ab,
    "interference_ba": lambda m: m.interference_ba,
    "interference": _interference,
    "interference_baseline": lambda m: m.interference_baseline_ab,
    "cross_energy_ab": lambda m: m.cross_energy_ab,
    "cross_energy_ba": lambda m: m.cross_energy_ba,
    "mask_jaccard": lambda m: m.mask.jaccard if m.mask else None,
}


@dataclass(frozen=True)
class PairSummary:
    """Aggregates of one adapter pair (means over modules where each metric is defined)."""

    n_modules: int
    n_degenerate: int
    degenerate_reasons: dict[str, int]
    means: dict[str, float | None]
    per_layer: dict[int, dict[str, float | None]]
    per_projection: dict[str, dict[str, float | None]]
    top_modules: list[dict]
    mask: MaskOverlap | None = None
    counts: dict[str, int] = field(default_factory=dict)


def mean_metrics(modules: list[ModulePair]) -> dict[str, float | None]:
    """Mean of every metric in :data:`METRICS` over the modules where it is defined."""
    out = {}
    for name, get in METRICS.items():
        vals = [v for v in map(get, modules) if v is not None]
        out[name] = sum(vals) / len(vals) if vals else None
    return out


def group_means(modules: list[ModulePair], key: Callable[[str], object]) -> dict:
    """``{group: mean_metrics(...)}`` for modules grouped by ``key(module_key)`` (None groups dropped)."""
    groups: dict = {}
    for m in modules:
        g = key(m.module)
        if g is not None:
            groups.setdefault(g, []).append(m)
    return {g: mean_metrics(ms) for g, ms in sorted(groups.items())}


def top_modules(modules: list[ModulePair], k: int = 10) -> list[dict]:
    """The ``k`` modules with the largest projection interference (max of both directions).

    Ties (e.g. 1.0 everywhere for LoRI adapters sharing their A) are broken by ``|delta_cosine|``.
    """
    scored = [(s, m) for m in modules if (s := _interference(m)) is not None]
    scored.sort(key=lambda t: (-t[0], -abs(t[1].delta_cosine or 0.0), t[1].module))
    return [{"module": m.module, "interference": s, "interference_ab": m.interference_ab,
             "interference_ba": m.interference_ba, "delta_cosine": m.delta_cosine,
             "b_mean_sq_cos": m.b_subspace.mean_sq_cos, "a_mean_sq_cos": m.a_subspace.mean_sq_cos}
            for s, m in scored[:k]]


def summarise_pair(pair: PairAnalysis, k: int = 10) -> PairSummary:
    """Aggregate one pair's module metrics.

    Args:
        pair: the pair's per-module metrics.
        k: how many of the most interfering modules to list.
    """
    mods = [pair.modules[m] for m in sorted(pair.modules)]
    reasons = Counter(r for m in mods for r in m.reasons)
    masks = [m.mask for m in mods if m.mask is not None]
    counts = {name: sum(get(m) is not None for m in mods) for name, get in METRICS.items()}
    return PairSummary(
        n_modules=len(mods), n_degenerate=sum(m.degenerate for m in mods), degenerate_reasons=dict(reasons),
        means=mean_metrics(mods), per_layer=group_means(mods, layer_of),
        per_projection=group_means(mods, projection_of), top_modules=top_modules(mods, k),
        mask=total_overlap(masks) if masks else None, counts=counts,
    )


def summarise_spectra(spectra: dict[str, Spectrum]) -> dict:
    """Per-adapter spectrum aggregates: mean effective rank overall, per layer and per projection."""
    def mean(vals):
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    def grouped(key):
        groups: dict = {}
        for m, s in spectra.items():
            if key(m) is not None:
                groups.setdefault(key(m), []).append(s.effective_rank)
        return {g: mean(v) for g, v in sorted(groups.items())}

    return {"n_modules": len(spectra), "n_degenerate": sum(s.degenerate for s in spectra.values()),
            "mean_effective_rank": mean(s.effective_rank for s in spectra.values()),
            "mean_numerical_rank": mean(s.numerical_rank for s in spectra.values()),
            "per_layer_effective_rank": grouped(layer_of),
            "per_projection_effective_rank": grouped(projection_of)}


def pair_matrix(analysis: Analysis, summaries: list[PairSummary], metric: str, symmetric: bool = True) -> list:
    """Adapter x adapter matrix of a summary mean (diagonal None; asymmetric metrics use the _ab/_ba means).

    For ``interference`` the entry [i][j] is ``mean |dW_j P_{A_i}| / |dW_j|``: row i's input subspace,
    column j's update.
    """
    idx = {n: i for i, n in enumerate(analysis.names)}
    mat = [[None] * len(idx) for _ in idx]
    for p, s in zip(analysis.pairs, summaries):
        i, j = idx[p.a], idx[p.b]
        if symmetric:
            mat[i][j] = mat[j][i] = s.means[metric]
        else:
            mat[i][j], mat[j][i] = s.means[f"{metric}_ab"], s.means[f"{metric}_ba"]
    return mat


def grid_means(analysis: Analysis, metric: str) -> tuple[list[int], list[str], list[list[float | None]]]:
    """Layer x projection grid of a metric, averaged over every pair (None where undefined).

    Returns:
        ``(layers, projections, grid)`` with ``grid[i][j]`` the mean for layer ``layers[i]`` and
        projection ``projections[j]``.
    """
    get, cells = METRICS[metric], {}
    for p in analysis.pairs:
        for key, m in p.modules.items():
            layer, v = layer_of(key), get(m)
            if layer is not None and v is not None:
                cells.setdefault((layer, projection_of(key)), []).append(v)
    layers = sorted({layer for layer, _ in cells})
    order = {p: i for i, p in enumerate(DEFAULT_TARGETS)}  # Llama's order (q, k, v, o, gate, up, down) first
    projs = sorted({proj for _, proj in cells}, key=lambda p: (order.get(p, len(order)), p))
    grid = [[(sum(c) / len(c)) if (c := cells.get((layer, proj))) else None for proj in projs] for layer in layers]
    return layers, projs, grid


def global_top_modules(analysis: Analysis, k: int = 10) -> list[dict]:
    """The ``k`` (pair, module) entries with the largest interference over all pairs."""
    rows = [dict(r, a=p.a, b=p.b) for p in analysis.pairs for r in top_modules(list(p.modules.values()), k)]
    rows.sort(key=lambda r: (-r["interference"], -abs(r["delta_cosine"] or 0.0), r["a"], r["b"], r["module"]))
    return rows[:k]
