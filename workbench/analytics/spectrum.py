"""Singular values and effective rank of one module's delta, from an r x r core.

With ``B = Q_B R_B`` and ``A^T = Q_A R_A``, ``dW = s B A = Q_B (s R_B R_A^T) Q_A^T``; Q_B and Q_A have
orthonormal columns, so dW's non-zero singular values are those of the r x r core ``s R_B R_A^T``. The R
factors come from the QRs already done for the subspace bases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.analytics.module_stats import ModuleStats, rank_rtol


@dataclass(frozen=True)
class Spectrum:
    """Spectrum of one module's delta.

    Attributes:
        singular_values: descending, min(out, in, r) of them.
        numerical_rank: singular values above ``rtol * max``.
        effective_rank: Roy & Vetterli (2007) ``exp(H(p))`` with ``p = sigma / sum(sigma)`` (None if zero).
        frobenius: ``|dW|_F``.
        degenerate / reason: zero delta or numerical rank below r.
    """

    singular_values: list[float]
    numerical_rank: int
    effective_rank: float | None
    frobenius: float
    degenerate: bool = False
    reason: str | None = None


def effective_rank(sv: torch.Tensor) -> float | None:
    """Entropy effective rank of a spectrum (Roy & Vetterli 2007); None for an all-zero spectrum."""
    total = float(sv.sum())
    if total <= 0.0:
        return None
    p = sv[sv > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def delta_spectrum(stats: ModuleStats, rtol: float | None = None) -> Spectrum:
    """Spectrum of ``dW = s B A`` without forming it.

    Args:
        stats: the prepared module (float64 factors).
        rtol: relative threshold for the numerical rank (default: float32 ``max(out, in) * eps``).

    Returns:
        A :class:`Spectrum`; ``degenerate`` when the delta is zero or its rank is below r.
    """
    R_b = stats.col.R if stats.col.R is not None else torch.linalg.qr(stats.B)[1]    # (m_b, r)
    R_a = stats.row.R if stats.row.R is not None else torch.linalg.qr(stats.A.T)[1]  # (m_a, r)
    core = stats.scaling * (R_b @ R_a.T)                   # (m_b, r) @ (r, m_a) -> (m_b, m_a)
    sv = torch.linalg.svdvals(core)
    out_f, in_f = stats.shape
    rtol = rank_rtol(torch.float32, max(out_f, in_f), stats.rank) if rtol is None else rtol
    top = float(sv[0]) if sv.numel() else 0.0
    k = int((sv > rtol * top).sum()) if top > 0 else 0
    reason = "zero delta" if k == 0 else (f"delta has numerical rank {k} < r={stats.rank}" if k < stats.rank else None)
    return Spectrum([float(s) for s in sv], k, effective_rank(sv), stats.norm, reason is not None, reason)
