"""Per-module, per-adapter quantities every pair metric reuses, computed once from the factors.

For ``delta_W = s * B @ A`` with ``A: (r, in)`` and ``B: (out, r)`` we keep orthonormal bases of the row
space of A and the column space of B (QR of the r-column factor, then an r x r SVD of R to find the
numerical rank; the basis stays implicit as factor @ (r x k)), the r x r Gram matrices ``A A^T`` and
``B^T B`` and ``|delta_W|_F``. Nothing here is ever (out, in)-sized: every pair metric becomes two
r x r cross-Grams (``A_a A_b^T``, ``B_a^T B_b``) and r x r work on these.

All arithmetic is float64 whatever the stored dtype, so that the factorised numbers agree with a dense
float64 computation to ~1e-12; the rank tolerance follows the stored precision (see :func:`rank_rtol`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from workbench.adapters.factors import ModuleFactors
from workbench.errors import MismatchError


@dataclass(frozen=True)
class Basis:
    """An orthonormal basis of the span of a factor's r vectors, kept implicit as ``M @ W``.

    With ``M = Q R`` (QR) and ``R = U S V^T`` (r x r SVD), ``Q U_k = M V_k S_k^{-1}``: the k-column basis
    is M times the r x k matrix ``W = V_k / S_k``. Keeping W instead of the (dim, k) basis lets every
    comparison go through the r x r cross-Gram ``M_a^T M_b`` (one d r^2 product per pair and factor).

    Attributes:
        M: (dim, r) float64 factor (A^T for row spaces, B for column spaces).
        W: (r, k) float64 with ``M @ W`` orthonormal.
        rank: k, the numerical rank (0 for an all-zero or empty factor).
        vectors: r, how many vectors the factor has (its LoRA rank).
        dim: ambient dimension (in_features for A, out_features for B).
        reason: why the factor is degenerate (empty, all zeros, rank-deficient), or None.
        R: (min(dim, r), r) triangular factor of M's QR (the spectrum reuses it).
    """

    M: torch.Tensor
    W: torch.Tensor
    rank: int
    vectors: int
    dim: int
    reason: str | None = None
    R: torch.Tensor | None = None

    @property
    def degenerate(self) -> bool:
        return self.reason is not None

    @property
    def Q(self) -> torch.Tensor:
        """The explicit (dim, k) orthonormal basis (only for callers that need it; analytics do not)."""
        return self.M @ self.W                             # (dim, r) @ (r, k) -> (dim, k)


@dataclass(frozen=True)
class ModuleStats:
    """One adapter's module, prepared for pair metrics (all tensors float64, all small)."""

    module: str
    A: torch.Tensor        # (r, in)
    B: torch.Tensor        # (out, r)
    scaling: float
    row: Basis             # row space of A, in R^in
    col: Basis             # column space of B, in R^out
    gram_a: torch.Tensor   # (r, r) = A A^T
    gram_b: torch.Tensor   # (r, r) = B^T B
    norm: float            # |delta_W|_F

    @property
    def shape(self) -> tuple[int, int]:
        """(out_features, in_features) of the adapted module."""
        return (self.B.shape[0], self.A.shape[1])

    @property
    def rank(self) -> int:
        return self.A.shape[0]


def rank_rtol(dtype: torch.dtype, dim: int, vectors: int) -> float:
    """Relative singular-value threshold for the numerical rank (numpy's ``matrix_rank`` rule).

    ``max(dim, r) * eps`` with eps of float64 for float64 factors and of float32 otherwise: half-precision
    factors are exact in float32, and bf16's own eps times 4096 would exceed 1 and call every factor empty.
    """
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return max(dim, vectors) * eps


def orthonormal_basis(M: torch.Tensor, what: str, rtol: float | None = None) -> Basis:
    """Orthonormal basis of the column span of ``M`` (dim, r): QR (R only), then an r x r SVD of R.

    Args:
        M: (dim, r) matrix whose columns span the subspace (A^T for row spaces, B for column spaces).
        what: name used in the degeneracy reason, e.g. ``"lora_B"``.
        rtol: relative threshold on singular values; default :func:`rank_rtol` of M's dtype.

    Returns:
        A :class:`Basis`; its ``reason`` says when M is empty, all zeros or rank-deficient.
    """
    dim, r = M.shape
    M64 = M.to(torch.float64)
    if M.numel() == 0:
        return Basis(M64, torch.zeros(r, 0, dtype=torch.float64), 0, r, dim, f"{what} is empty")
    rtol = rank_rtol(M.dtype, dim, r) if rtol is None else rtol
    R = torch.linalg.qr(M64, mode="r")[1]                 # (m, r) with m = min(dim, r); Q never formed
    _, S, Vh = torch.linalg.svd(R, full_matrices=False)   # (m,), (m, r)
    top = float(S[0]) if S.numel() else 0.0
    k = int((S > rtol * top).sum()) if top > 0 else 0
    reason = None
    if k == 0:
        reason = f"{what} is all zeros"
    elif k < r:
        reason = f"{what} has numerical rank {k} < r={r}"
    W = Vh[:k].T / S[:k]                                  # (r, k): M @ W = Q U_k is orthonormal
    return Basis(M64, W, k, r, dim, reason, R)


def prepare(module: str, factors: ModuleFactors, rtol: float | None = None) -> ModuleStats:
    """Bases, Gram matrices and the Frobenius norm of one module's delta, from its factors.

    Args:
        module: the module key (``model.layers.3.self_attn.q_proj``).
        factors: ``A (r, in)``, ``B (out, r)`` and ``scaling``.
        rtol: optional override of the numerical-rank threshold.

    Raises:
        MismatchError: A and B disagree on the rank.
    """
    A, B = factors.A, factors.B
    if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
        raise MismatchError(f"module {module}: lora_A {tuple(A.shape)} and lora_B {tuple(B.shape)} do not form B @ A")
    row = orthonormal_basis(A.T, "lora_A", rtol)
    col = orthonormal_basis(B, "lora_B", rtol)
    A64, B64 = row.M.T, col.M
    # M^T M = R^T R: the Grams come from the QR already done, not from another d r^2 product.
    gram_a = _gram(row, A64.T)                             # (r, r) = A A^T
    gram_b = _gram(col, B64)                               # (r, r) = B^T B
    # |s B A|_F^2 = s^2 tr(B^T B A A^T); both Grams symmetric, so the trace is an elementwise sum.
    sq = float((gram_b * gram_a).sum())
    norm = abs(factors.scaling) * math.sqrt(max(sq, 0.0))
    return ModuleStats(module, A64, B64, float(factors.scaling), row, col, gram_a, gram_b, norm)


def _gram(basis: Basis, M: torch.Tensor) -> torch.Tensor:
    return basis.R.T @ basis.R if basis.R is not None else M.T @ M
