"""Principal angles between subspaces given by orthonormal bases (r x r work, never dim x dim).

The cosines of the principal angles between span(Q_a) and span(Q_b) are the singular values of
``Q_a^T Q_b`` (Björck & Golub 1973); with the implicit bases ``Q = M W`` of :class:`Basis` that is
``W_a^T (M_a^T M_b) W_b``, an r x r matrix. The random baseline: for a uniformly random r_b-dimensional subspace
and a fixed r_a-dimensional one in R^d, ``E[P_b] = (r_b / d) I`` so ``E[sum cos^2] = tr(P_a E[P_b]) =
r_a r_b / d``; the mean over the ``min(r_a, r_b)`` cosines is therefore ``max(r_a, r_b) / d`` exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.analytics.module_stats import Basis
from workbench.errors import MismatchError


@dataclass(frozen=True)
class SubspaceComparison:
    """Principal angles between two subspaces of R^dim.

    Attributes:
        cosines: all min(rank_a, rank_b) cosines, largest first ([] when degenerate).
        mean_sq_cos: mean of the squared cosines (1: one contains the other; 0: orthogonal).
        max_cos: the largest cosine (cosine of the smallest angle).
        min_angle_deg: the smallest principal angle in degrees.
        random_baseline: expected ``mean_sq_cos`` for random subspaces of the same ranks.
        degenerate: a side is empty, all zeros or rank-deficient; values None when a side has rank 0.
        reason: why it is degenerate, or None.
    """

    cosines: list[float]
    mean_sq_cos: float | None
    max_cos: float | None
    min_angle_deg: float | None
    random_baseline: float | None
    rank_a: int
    rank_b: int
    dim: int
    degenerate: bool = False
    reason: str | None = None


def random_baseline(rank_a: int, rank_b: int, dim: int) -> float | None:
    """Expected mean squared cosine between random subspaces of ranks ``rank_a``, ``rank_b`` in R^dim."""
    if rank_a <= 0 or rank_b <= 0 or dim <= 0:
        return None
    return max(rank_a, rank_b) / dim


def principal_cosines(a: Basis, b: Basis, cross: torch.Tensor | None = None) -> torch.Tensor:
    """Cosines of the principal angles, descending, clipped to [0, 1].

    ``Q_a^T Q_b = W_a^T (M_a^T M_b) W_b``: the singular values of an r x r matrix built from the cross-Gram.
    """
    cross = a.M.T @ b.M if cross is None else cross        # (r_a, dim) @ (dim, r_b) -> (r_a, r_b)
    C = a.W.T @ cross @ b.W                                # (k_a, r_a) @ (r_a, r_b) @ (r_b, k_b)
    return torch.linalg.svdvals(C).clamp(0.0, 1.0)


def principal_angles(a: Basis, b: Basis, cross: torch.Tensor | None = None) -> SubspaceComparison:
    """Compare two subspaces (e.g. the row spaces of A_i and A_j).

    Args:
        a, b: orthonormal bases from :func:`workbench.analytics.module_stats.orthonormal_basis`.
        cross: ``a.M^T @ b.M`` (r_a, r_b) when the caller already has it (computed here otherwise).

    Returns:
        A :class:`SubspaceComparison`. A side of rank 0 gives ``None`` values and ``degenerate=True``:
        an empty factor is never reported as orthogonal.

    Raises:
        MismatchError: the subspaces live in spaces of different dimension.
    """
    if a.dim != b.dim:
        raise MismatchError(f"subspaces of R^{a.dim} and R^{b.dim} cannot be compared")
    reasons = [f"{side}: {r}" for side, r in (("a", a.reason), ("b", b.reason)) if r]
    reason = "; ".join(reasons) or None
    if a.rank == 0 or b.rank == 0:
        return SubspaceComparison([], None, None, None, None, a.rank, b.rank, a.dim, True, reason)
    cos = principal_cosines(a, b, cross)
    mean_sq = float((cos ** 2).sum()) / min(a.rank, b.rank)
    top = float(cos[0])
    return SubspaceComparison(
        cosines=[float(c) for c in cos], mean_sq_cos=mean_sq, max_cos=top,
        min_angle_deg=math.degrees(math.acos(min(top, 1.0))),
        random_baseline=random_baseline(a.rank, b.rank, a.dim), rank_a=a.rank, rank_b=b.rank, dim=a.dim,
        degenerate=reason is not None, reason=reason,
    )
