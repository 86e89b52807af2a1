"""Data-aware interference: how much a later update moves a module's outputs on an earlier task's inputs.

Parameter-space overlap misses the mechanism of forgetting in a chain (later tasks act on earlier tasks'
inputs through the shared A). With ``Σ_i = X_iᵀ X_i`` the second moment of a module's inputs on task i's
held-out prompts (``data_moments``), and ``ΔW = s B A`` (A (r, in), B (out, r)), per module:

* ``E_ij = tr(ΔW_j Σ_i ΔW_jᵀ) = |ΔW_j X_iᵀ|_F²``: the output energy of update j on task i's inputs; the
  pair score is ``Σ_m E_ij / Σ_m E_ii``, relative to task i's own update on its own inputs;
* ``overlap = tr(ΔW_i Σ_i ΔW_jᵀ) / sqrt(E_ii E_ij)``: the cosine between ``ΔW_i X_iᵀ`` and ``ΔW_j X_iᵀ``.

Factor form, never a dense ΔW: ``tr(ΔW_k Σ ΔW_lᵀ) = s_k s_l Σ((B_kᵀ B_l) ⊙ (A_k Σ A_lᵀ))``. Per module and
task, the distinct A's of all adapters are stacked (a chain's shared A once) into ``A_all (R, in)``, and
``C = A_all Σ`` (R in² flops) gives every ``A_k Σ A_lᵀ`` as a block of ``C A_allᵀ`` and ``A_k Σ² A_kᵀ``
of ``C Cᵀ`` (for the baseline); the rest is r x r. The dense peer (:func:`dense_energies`) costs out in²
per update.

Random baselines (isotropic: ΔW_j replaced by ``|ΔW_j|_F U``, U uniform on the unit sphere of
R^{out x in}, so ``E[U_ab U_cd] = δ_ac δ_bd / (out in)``):

* ``E[tr(U Σ Uᵀ)] = Σ_ab E[U_ab²] Σ_bb = tr(Σ) / in``: a random update of j's norm has the expected
  energy ``|ΔW_j|_F² tr(Σ_i) / in`` (exact, and additive over modules);
* ``E[tr(ΔW_i Σ Uᵀ)²] = |ΔW_i Σ|_F² / (out in)``: the overlap baseline is the root of the ratio of
  expectations ``sqrt(E[inner²] / (E_ii E[energy]))`` = ``sqrt(|ΔW_i Σ_i|_F² / (out E_ii tr(Σ_i)))`` per
  module: the RMS cosine up to the concentration of ``tr(U Σ Uᵀ)`` around its mean.

Why hand-written: these are a few traces over torch products; no library computes data-weighted LoRA
interference from factors.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field
from typing import Mapping

import numpy as np
import torch

from workbench.adapters.factors import ModuleFactors
from workbench.errors import MismatchError

CHUNK = 2048  # Σ rows converted to float64 at a time (a 14336² float64 copy would be 1.6 GB)
# An energy below ZERO_TOL |ΔW_j|_F² tr(Σ) (its upper bound) is float64 rounding of an exact zero: its
# cosine is noise, so the overlap is undefined there.
ZERO_TOL = 1e-12


@dataclass(frozen=True)
class ModuleEnergies:
    """Every energy of one module on one task's Σ, for the adapters in ``names`` (float64).

    Attributes:
        cross: (n, n) ``tr(ΔW_k Σ ΔW_lᵀ)``; the diagonal holds the energies ``E_kk``.
        frob_sq: (n,) ``|ΔW_k|_F²``.
        sigma_sq: (n,) ``|ΔW_k Σ|_F² = tr(ΔW_k Σ² ΔW_kᵀ)``.
        trace: ``tr(Σ)``; out, dim: the module's out and in features.
    """

    names: list[str]
    cross: np.ndarray
    frob_sq: np.ndarray
    sigma_sq: np.ndarray
    trace: float
    out: int
    dim: int


def _check(module: str, sigma: torch.Tensor, factors: dict[str, ModuleFactors]) -> tuple[int, int]:
    shapes = {(f.B.shape[0], f.A.shape[1]) for f in factors.values()}
    if len(shapes) != 1:
        raise MismatchError(f"module {module}: adapters disagree on its shape {sorted(shapes)}")
    out, dim = shapes.pop()
    if tuple(sigma.shape) != (dim, dim):
        raise MismatchError(f"module {module}: Σ is {tuple(sigma.shape)} but the adapters' in_features is {dim}")
    return out, dim


def stack_distinct(As: list[torch.Tensor]) -> tuple[torch.Tensor, list[slice]]:
    """Stack the distinct A's in float64 (a shared A once). Returns ``(A_all (R, in), rows of each input A)``."""
    distinct: list[tuple[torch.Tensor, slice]] = []
    where: list[slice] = []
    start = 0
    for A in As:
        hit = next((s for b, s in distinct if b.shape == A.shape and torch.equal(b, A)), None)
        if hit is None:
            hit = slice(start, start + A.shape[0])
            distinct.append((A, hit))
            start += A.shape[0]
        where.append(hit)
    return torch.cat([b.to(torch.float64) for b, _ in distinct], dim=0), where


def sigma_products(sigma: torch.Tensor, A_all: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A_all Σ A_allᵀ, A_all Σ² A_allᵀ)``, both (R, R), converting Σ to float64 a block of rows at a time."""
    C = torch.zeros(A_all.shape[0], sigma.shape[1], dtype=torch.float64)
    for c in range(0, sigma.shape[0], CHUNK):
        # row blocks are contiguous: C += A_all[:, blk] Σ[blk, :]: (R, c) @ (c, in) -> (R, in)
        C.addmm_(A_all[:, c:c + CHUNK], sigma[c:c + CHUNK].to(torch.float64))
    return C @ A_all.T, C @ C.T                                                  # (R, in) @ (in, R) -> (R, R)


def module_energies(module: str, sigma: torch.Tensor, factors: dict[str, ModuleFactors]) -> ModuleEnergies:
    """All pairwise energies of one module on one Σ, from the factors.

    Args:
        module: the module key (for messages).
        sigma: (in, in) symmetric positive semi-definite second moment of the module's inputs.
        factors: adapter name -> factors of this module (every adapter that adapts it).

    Returns:
        :class:`ModuleEnergies` in the order of ``factors``.

    Raises:
        MismatchError: the adapters or Σ disagree on the module's shape.
    """
    out, dim = _check(module, sigma, factors)
    fs = list(factors.values())
    A_all, where = stack_distinct([f.A for f in fs])
    G, H = sigma_products(sigma, A_all)
    sB = [f.scaling * f.B.to(torch.float64) for f in fs]                         # s B: (out, r)
    n = len(fs)
    cross, frob, ssq = np.zeros((n, n)), np.zeros(n), np.zeros(n)
    for k in range(n):
        A_k, gram_b = A_all[where[k]], sB[k].T @ sB[k]                           # (r, in), (r, r)
        frob[k] = float((gram_b * (A_k @ A_k.T)).sum())                           # tr(BᵀB AAᵀ), both symmetric
        ssq[k] = float((gram_b * H[where[k], where[k]]).sum())
        for l in range(k, n):
            # tr(ΔW_k Σ ΔW_lᵀ) = Σ((s_k B_k)ᵀ (s_l B_l) ⊙ A_k Σ A_lᵀ): an (r_k, r_l) elementwise sum
            cross[k, l] = cross[l, k] = float(((sB[k].T @ sB[l]) * G[where[k], where[l]]).sum())
    trace = float(torch.diagonal(sigma).to(torch.float64).sum())
    return ModuleEnergies(list(factors), cross, frob, ssq, trace, out, dim)


@dataclass(frozen=True)
class PairEnergy:
    """Update j on task i's inputs, for one module or summed over modules. All fields add over modules.

    Attributes:
        energy: ``E_ij = tr(ΔW_j Σ_i ΔW_jᵀ)``.
        own_energy: ``E_ii`` (0 where i does not adapt the module).
        inner: ``tr(ΔW_i Σ_i ΔW_jᵀ)``.
        energy_baseline: ``|ΔW_j|_F² tr(Σ_i) / in``, the expected energy of an isotropic update of j's norm.
        inner_sq_baseline: ``|ΔW_j|_F² |ΔW_i Σ_i|_F² / (out in)``, the expected ``inner²`` for it.
        energy_bound: ``|ΔW_j|_F² tr(Σ_i) >= energy``, the scale of rounding errors.
    """

    energy: float = 0.0
    own_energy: float = 0.0
    inner: float = 0.0
    energy_baseline: float = 0.0
    inner_sq_baseline: float = 0.0
    energy_bound: float = 0.0

    def __add__(self, other: "PairEnergy") -> "PairEnergy":
        return PairEnergy(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @property
    def energy_ratio(self) -> float | None:
        """``E_ij / E_ii`` (None when task i's own update has no energy here)."""
        return self.energy / self.own_energy if self.own_energy > 0 else None

    @property
    def energy_ratio_baseline(self) -> float | None:
        return self.energy_baseline / self.own_energy if self.own_energy > 0 else None

    @property
    def overlap(self) -> float | None:
        """Cosine between ``ΔW_i X_iᵀ`` and ``ΔW_j X_iᵀ`` (None when either has no energy)."""
        if self.own_energy <= 0 or self.energy <= ZERO_TOL * self.energy_bound:
            return None
        return max(-1.0, min(1.0, self.inner / math.sqrt(self.own_energy * self.energy)))

    @property
    def overlap_baseline(self) -> float | None:
        d = self.own_energy * self.energy_baseline
        return math.sqrt(self.inner_sq_baseline / d) if d > 0 else None


def pair_energy(e: ModuleEnergies, i: int | None, j: int) -> PairEnergy:
    """Update ``j`` on the inputs behind ``e``, relative to update ``i`` (None: i does not adapt the module)."""
    bound = float(e.frob_sq[j] * e.trace)
    if i is None:
        return PairEnergy(float(e.cross[j, j]), 0.0, 0.0, bound / e.dim, 0.0, bound)
    return PairEnergy(float(e.cross[j, j]), float(e.cross[i, i]), float(e.cross[i, j]), bound / e.dim,
                      float(e.frob_sq[j] * e.sigma_sq[i] / (e.out * e.dim)), bound)


@dataclass
class DataAwarePair:
    """Update ``update`` on the inputs of ``inputs_of``'s task, per module and summed (``total``)."""

    inputs_of: str
    update: str
    task: str
    later: bool
    modules: dict[str, PairEnergy] = field(default_factory=dict)

    @property
    def total(self) -> PairEnergy:
        return sum(self.modules.values(), PairEnergy())


def _sigmas(moments) -> Mapping[str, torch.Tensor]:
    return getattr(moments, "sigma", moments)


def data_aware(factors: dict[str, dict[str, ModuleFactors]], rows: dict[str, str],
               moments: Mapping) -> list[DataAwarePair]:
    """Energies of every update on the inputs of every task in ``rows``, per module and summed.

    Covers every module update j adapts (where the earlier adapter i does not, its own energy there is 0).

    Args:
        factors: adapter name -> module key -> factors, in order (for a chain: increments, see
            ``increments.increment``); ``later`` in the result follows this order.
        rows: adapter name -> task whose inputs stand for that adapter's task.
        moments: task -> :class:`~workbench.analytics.data_moments.InputMoments` or ``{module: Σ}``.

    Returns:
        One :class:`DataAwarePair` per (row adapter i, other adapter j), rows in ``factors`` order.

    Raises:
        MismatchError: a Σ is missing for an adapted module, or shapes disagree.
    """
    names = list(factors)
    pairs = {(i, j): DataAwarePair(i, j, rows[i], names.index(j) > names.index(i))
             for i in names if i in rows for j in names if j != i}
    for task in dict.fromkeys(rows[i] for i in names if i in rows):
        sig = _sigmas(moments[task])
        row_names = [i for i in names if rows.get(i) == task]
        for module in sorted(set().union(*(factors[n] for n in names))):
            present = {n: factors[n][module] for n in names if module in factors[n]}
            if not any(j != i for i in row_names for j in present):
                continue
            if module not in sig:
                raise MismatchError(f"task '{task}': no input moments for module {module}")
            e = module_energies(module, sig[module], present)
            idx = {n: k for k, n in enumerate(present)}
            for i in row_names:
                for j in present:
                    if j != i:
                        pairs[(i, j)].modules[module] = pair_energy(e, idx.get(i), idx[j])
    return list(pairs.values())


def dense_energies(sigma: torch.Tensor, fi: ModuleFactors, fj: ModuleFactors) -> PairEnergy:
    """The dense reference for one module: materialised ``ΔW = s B A`` and dense products, float64 numpy.

    What the factor form avoids (out in² flops per update); used by the tests and the benchmark.
    """
    S = sigma.to(torch.float64).numpy()
    Wi = fi.scaling * (fi.B.to(torch.float64) @ fi.A.to(torch.float64)).numpy()  # (out, r) @ (r, in)
    Wj = fj.scaling * (fj.B.to(torch.float64) @ fj.A.to(torch.float64)).numpy()
    WiS, WjS = Wi @ S, Wj @ S                                                        # (out, in) @ (in, in)
    out, dim = Wi.shape
    nj, tr = float((Wj * Wj).sum()), float(np.trace(S))
    return PairEnergy(float((WjS * Wj).sum()), float((WiS * Wi).sum()), float((WiS * Wj).sum()),
                      nj * tr / dim, nj * float((WiS * WiS).sum()) / (out * dim), nj * tr)
