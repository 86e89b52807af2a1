"""The dense reference: every pair metric from materialised ``delta_W`` (out, in) matrices.

This is what the factorised code avoids; it exists as an independent check (tests) and as the peer of
``benchmarks/analytics.py``. Row and column spaces come from a full SVD of each delta, angles from
``scipy.linalg.subspace_angles``, projections and cross terms from dense products. O(out * in * min) per
module, dominated by the SVDs: about 40 s for one 4096 x 4096 float64 SVD on two idle cores.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch

from workbench.adapters.factors import ModuleFactors


def dense_bases(dW: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(column basis (out, k), row basis (in, k), singular values)`` of a dense delta by full SVD."""
    U, S, Vh = scipy.linalg.svd(dW, full_matrices=False)
    k = int((S > rtol * S[0]).sum()) if S.size and S[0] > 0 else 0
    return U[:, :k], Vh[:k].T, S


def _angles(Qa: np.ndarray, Qb: np.ndarray) -> dict:
    cos = np.sort(np.cos(scipy.linalg.subspace_angles(Qa, Qb)))[::-1]
    return {"cosines": cos.tolist(), "mean_sq_cos": float((cos ** 2).mean()), "max_cos": float(cos[0])}


def dense_delta(f: ModuleFactors) -> np.ndarray:
    """``s * B @ A`` in float64: (out, r) @ (r, in) -> (out, in)."""
    return f.scaling * (f.B.to(torch.float64) @ f.A.to(torch.float64)).numpy()


def dense_module_pair(fa: ModuleFactors, fb: ModuleFactors, rtol: float = 1e-10) -> dict:
    """Every pair metric of one module, computed densely (keys as in report.json's module entries).

    The subspaces are those of the deltas (equal to the factors' when A and B have full rank r).
    """
    Wa, Wb = dense_delta(fa), dense_delta(fb)
    ca, ra, Sa = dense_bases(Wa, rtol)
    cb, rb, Sb = dense_bases(Wb, rtol)
    na, nb = np.linalg.norm(Wa), np.linalg.norm(Wb)
    # |W P|_F = |W V|_F for P = V V^T with orthonormal V: the (in, in) projector need not be formed.
    Ba, Bb = fa.B.double().numpy(), fb.B.double().numpy()
    Aa, Ab = fa.A.double().numpy(), fb.A.double().numpy()
    same_rank = Aa.shape[0] == Ab.shape[0]
    return {
        "a_subspace": _angles(ra, rb), "b_subspace": _angles(ca, cb),
        "delta_cosine": float((Wa * Wb).sum() / (na * nb)),
        "interference_ab": float(np.linalg.norm(Wb @ ra) / nb),
        "interference_ba": float(np.linalg.norm(Wa @ rb) / na),
        "cross_energy_ab": float(abs(fb.scaling) * np.linalg.norm(Ba @ Ab) / na) if same_rank else None,
        "cross_energy_ba": float(abs(fa.scaling) * np.linalg.norm(Bb @ Aa) / nb) if same_rank else None,
        "singular_values_a": Sa[: fa.A.shape[0]].tolist(), "singular_values_b": Sb[: fb.A.shape[0]].tolist(),
        "frobenius_a": float(na), "frobenius_b": float(nb),
    }


def effective_rank_dense(S: np.ndarray) -> float:
    """Roy & Vetterli effective rank of a dense spectrum."""
    p = S[S > 0] / S.sum()
    return math.exp(float(-(p * np.log(p)).sum()))
