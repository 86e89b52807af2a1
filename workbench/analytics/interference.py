"""Pairwise delta metrics from the factors: cosine of the deltas, projection interference, merge cross terms.

Every quantity is a trace of r x r products (``tr(X Y) = sum(X * Y^T)``), never an (out, in) matrix:

* ``<dW_a, dW_b>_F = s_a s_b tr(B_a^T B_b A_b A_a^T)``;
* ``|dW_t P_{A_o}|_F = |s_t B_t (A_t Q_o)|_F`` with Q_o an orthonormal basis of the row space of A_o, since
  ``P_{A_o} = Q_o Q_o^T`` and Q_o^T has orthonormal rows; ``A_t Q_o = (A_t A_o^T) W_o`` (see ``Basis``);
* ``|B_a A_b|_F^2 = tr(B_a^T B_a A_b A_b^T)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.analytics.module_stats import ModuleStats
from workbench.errors import MismatchError


@dataclass(frozen=True)
class Value:
    """A metric that may be undefined: ``value`` is None exactly when ``reason`` says why."""

    value: float | None
    reason: str | None = None


def _check_same_shape(a: ModuleStats, b: ModuleStats) -> None:
    if a.shape != b.shape:
        raise MismatchError(f"module {a.module}: shapes {a.shape} and {b.shape} differ (different base models?)")


@dataclass(frozen=True)
class CrossGrams:
    """The only d-sized work of a pair: ``A_a A_b^T`` and ``B_a^T B_b``, both (r_a, r_b)."""

    a: torch.Tensor
    b: torch.Tensor


def cross_grams(a: ModuleStats, b: ModuleStats) -> CrossGrams:
    """Compute both cross-Grams of a module pair.

    Raises:
        MismatchError: the modules have different shapes.
    """
    _check_same_shape(a, b)
    return CrossGrams(a.A @ b.A.T, a.B.T @ b.B)            # (r_a, in) @ (in, r_b); (r_a, out) @ (out, r_b)


def delta_inner(a: ModuleStats, b: ModuleStats, g: CrossGrams | None = None) -> float:
    """``<dW_a, dW_b>_F = s_a s_b sum((B_a^T B_b) * (A_a A_b^T))`` from the cross-Grams.

    Raises:
        MismatchError: the modules have different shapes.
    """
    g = g or cross_grams(a, b)
    return a.scaling * b.scaling * float((g.b * g.a).sum())


def delta_cosine(a: ModuleStats, b: ModuleStats, g: CrossGrams | None = None) -> Value:
    """``<dW_a, dW_b>_F / (|dW_a|_F |dW_b|_F)``; None when either delta is zero."""
    if a.norm == 0.0 or b.norm == 0.0:
        return Value(None, "zero delta (" + ", ".join(s for s, m in (("a", a), ("b", b)) if m.norm == 0.0) + ")")
    return Value(delta_inner(a, b, g) / (a.norm * b.norm))


def projection_interference(target: ModuleStats, onto: ModuleStats, cross_a: torch.Tensor | None = None) -> Value:
    """``|dW_target P_{A_onto}|_F / |dW_target|_F``: the share of target's update that reads the inputs
    ``onto``'s adapter reads (P: orthogonal projector onto the row space of A_onto).

    Args:
        target, onto: the two prepared modules.
        cross_a: ``A_target A_onto^T`` (r_t, r_o) when the caller has it.

    Returns:
        The ratio in [0, 1], or None (with a reason) when target's delta is zero or A_onto has rank 0.
    """
    _check_same_shape(target, onto)
    if target.norm == 0.0:
        return Value(None, "zero delta")
    if onto.row.rank == 0:
        return Value(None, f"projector onto an empty subspace ({onto.row.reason})")
    cross_a = target.A @ onto.A.T if cross_a is None else cross_a
    M = cross_a @ onto.row.W                               # A_t Q_o = (A_t A_o^T) W_o: (r_t, r_o) @ (r_o, k_o)
    sq = float(((target.gram_b @ M) * M).sum())            # tr(M^T B^T B M) = |B M|_F^2
    return Value(min(abs(target.scaling) * math.sqrt(max(sq, 0.0)) / target.norm, 1.0))


def interference_baseline(target: ModuleStats, onto: ModuleStats) -> float | None:
    """sqrt(E[ratio^2]) = sqrt(k / in) for a random rank-k projector: the 'no structure' value."""
    k, d = onto.row.rank, onto.A.shape[1]
    return math.sqrt(k / d) if k and d else None


def linear_cross_energy(a: ModuleStats, b: ModuleStats) -> Value:
    """Cross-term energy of a ``linear`` merge, ``|s_b B_a A_b|_F / |s_a B_a A_a|_F``.

    PEFT's ``add_weighted_adapter(combination_type="linear")`` sums the B's and the scaled A's, so the
    merged delta holds ``s_b B_a A_b`` next to a's own ``s_a B_a A_a``; this is its size relative to it.

    Returns:
        The ratio, or None when the ranks differ (the merge is undefined) or a's delta is zero.
    """
    _check_same_shape(a, b)
    if a.rank != b.rank:
        return Value(None, f"linear merge needs equal ranks (r={a.rank} vs r={b.rank})")
    if a.norm == 0.0:
        return Value(None, "zero delta")
    sq = float((a.gram_b * b.gram_a).sum())                # tr(B_a^T B_a A_b A_b^T)
    return Value(abs(b.scaling) * math.sqrt(max(sq, 0.0)) / a.norm)
