"""All metrics for one module of one adapter pair, and the loop over modules and pairs.

Adapters are walked module by module: each adapter's module is prepared once (bases, Grams; r-sized),
every pair is compared on it, and the prepared values are dropped before the next module, so memory
stays at the adapters themselves even for Llama-3-8B-sized adapters.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations

import torch

from workbench.adapters.factors import ModuleFactors
from workbench.analytics.interference import (
    cross_grams, delta_cosine, interference_baseline, linear_cross_energy, projection_interference,
)
from workbench.analytics.masks import MaskOverlap, mask_overlap
from workbench.analytics.module_stats import ModuleStats, prepare
from workbench.analytics.spectrum import Spectrum, delta_spectrum
from workbench.analytics.subspace import SubspaceComparison, principal_angles
from workbench.errors import MismatchError


@dataclass(frozen=True)
class ModulePair:
    """Every pair metric of one module (see SCHEMA.md for the definitions and directions)."""

    module: str
    a_subspace: SubspaceComparison
    b_subspace: SubspaceComparison
    delta_cosine: float | None
    interference_ab: float | None
    interference_ba: float | None
    interference_baseline_ab: float | None
    interference_baseline_ba: float | None
    cross_energy_ab: float | None
    cross_energy_ba: float | None
    mask: MaskOverlap | None
    degenerate: bool
    reasons: tuple[str, ...]


@dataclass
class PairAnalysis:
    """One adapter pair: metrics per shared module, and the modules only one side adapts."""

    a: str
    b: str
    modules: dict[str, ModulePair] = field(default_factory=dict)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """The whole comparison: names in order, per-adapter spectra, per-pair module metrics."""

    names: list[str]
    spectra: dict[str, dict[str, Spectrum]]
    pairs: list[PairAnalysis]
    masks_given: bool = False


def compare_modules(a: ModuleStats, b: ModuleStats, mask_a: torch.Tensor | None = None,
                    mask_b: torch.Tensor | None = None) -> ModulePair:
    """Compare one module of adapters a and b.

    Args:
        a, b: prepared modules (same module key and shape).
        mask_a, mask_b: optional LoRI-S masks of lora_B; overlap is reported when both are given.

    Returns:
        A :class:`ModulePair`; ``degenerate`` with ``reasons`` when a factor is empty or rank-deficient
        or a delta is zero (undefined metrics are None, never 0).

    Raises:
        MismatchError: the module shapes differ.
    """
    if a.shape != b.shape:
        raise MismatchError(f"module {a.module}: shapes {a.shape} and {b.shape} differ (different base models?)")
    g = cross_grams(a, b)  # the pair's only d-sized work; all below is r x r
    a_sub, b_sub = principal_angles(a.row, b.row, g.a), principal_angles(a.col, b.col, g.b)
    cos = delta_cosine(a, b, g)
    i_ab, i_ba = projection_interference(b, a, g.a.T), projection_interference(a, b, g.a)
    x_ab, x_ba = linear_cross_energy(a, b), linear_cross_energy(b, a)
    reasons = [f"lora_A subspace: {a_sub.reason}"] if a_sub.reason else []
    reasons += [f"lora_B subspace: {b_sub.reason}"] if b_sub.reason else []
    reasons += [f"delta cosine: {cos.reason}"] if cos.reason else []
    reasons += [f"linear cross terms: {x_ab.reason}"] if x_ab.reason and "ranks" in x_ab.reason else []
    mask = mask_overlap(mask_a, mask_b) if mask_a is not None and mask_b is not None else None
    return ModulePair(
        module=a.module, a_subspace=a_sub, b_subspace=b_sub, delta_cosine=cos.value,
        interference_ab=i_ab.value, interference_ba=i_ba.value,
        interference_baseline_ab=interference_baseline(b, a), interference_baseline_ba=interference_baseline(a, b),
        cross_energy_ab=x_ab.value, cross_energy_ba=x_ba.value, mask=mask,
        degenerate=bool(a_sub.degenerate or b_sub.degenerate or cos.value is None), reasons=tuple(reasons),
    )


@contextmanager
def torch_threads(n: int | None):
    """Run with ``n`` intra-op threads, then restore (None: leave torch alone).

    Why: the work here is thousands of tiny (d x r, r x r) LAPACK calls; with several OpenMP threads on a
    busy machine each call pays thread wake-ups (measured: 8-20 ms instead of 0.1 ms per QR of 512 x 8).
    The setting is process-wide in torch, hence restored at once.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def analyse(factors: dict[str, dict[str, ModuleFactors]],
            masks: dict[str, dict[str, torch.Tensor]] | None = None, rtol: float | None = None,
            threads: int | None = 1) -> Analysis:
    """Spectra of every adapter and metrics of every pair on every module they share.

    Args:
        factors: adapter name -> module key -> factors, in report order.
        masks: adapter name -> module key -> bool mask of lora_B (adapters without masks may be absent).
        rtol: optional numerical-rank threshold override.
        threads: torch intra-op threads while analysing (see :func:`torch_threads`); None leaves it.

    Returns:
        An :class:`Analysis` with pairs in ``itertools.combinations`` order of the names.
    """
    names, masks = list(factors), masks or {}
    pairs = [PairAnalysis(a, b) for a, b in combinations(names, 2)]
    for p in pairs:
        p.only_a = sorted(set(factors[p.a]) - set(factors[p.b]))
        p.only_b = sorted(set(factors[p.b]) - set(factors[p.a]))
    spectra: dict[str, dict[str, Spectrum]] = {n: {} for n in names}
    with torch_threads(threads):
        for module in sorted(set().union(*[set(f) for f in factors.values()])):
            _analyse_module(module, factors, masks, pairs, spectra, rtol)
    return Analysis(names, spectra, pairs, masks_given=bool(masks))


def _analyse_module(module, factors, masks, pairs, spectra, rtol) -> None:
    # Prepared stats live only for this module, so memory stays at the adapters themselves.
    stats = {n: prepare(module, f[module], rtol) for n, f in factors.items() if module in f}
    for n, s in stats.items():
        spectra[n][module] = delta_spectrum(s)
    for p in pairs:
        if p.a in stats and p.b in stats:
            ma, mb = masks.get(p.a, {}).get(module), masks.get(p.b, {}).get(module)
            p.modules[module] = compare_modules(stats[p.a], stats[p.b], ma, mb)
