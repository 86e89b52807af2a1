"""Analytics primitives against independent dense computations and hand-built known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from workbench.adapters.factors import ModuleFactors

from workbench.keys import file_key
from workbench.analytics import (
    analyse, compare_modules, delta_spectrum, mask_overlap, orthonormal_basis, prepare, principal_angles,
)
from workbench.analytics.dense import dense_module_pair, effective_rank_dense
from workbench.analytics.masks import normalise_mask, total_overlap
from workbench.analytics.pairs import torch_threads
from workbench.errors import MismatchError

TOL = 1e-5
M = "model.layers.0.self_attn.q_proj"


def rand_factors(out_f, in_f, r, seed, scaling=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return ModuleFactors(torch.randn(r, in_f, generator=g).to(dtype), torch.randn(out_f, r, generator=g).to(dtype), scaling)


def scipy_cosines(X, Y):
    """Descending cosines of principal angles between the column spaces of X and Y (float64)."""
    ang = scipy.linalg.subspace_angles(X.double().numpy(), Y.double().numpy())
    return np.sort(np.cos(ang))[::-1]


def pair(fa, fb, **kw):
    return compare_modules(prepare(M, fa), prepare(M, fb), **kw)


# --- hand-built subspaces ------------------------------------------------------------------------


def unit_rows(idx, d):
    A = torch.zeros(len(idx), d)
    A[range(len(idx)), idx] = 1.0
    return A


def test_orthogonal_subspaces_give_90_degrees():
    d = 16
    fa = ModuleFactors(unit_rows([0, 1, 2, 3], d), unit_rows([0, 1, 2, 3], d).T * 3, 1.0)
    fb = ModuleFactors(unit_rows([4, 5, 6, 7], d), unit_rows([8, 9, 10, 11], d).T, 1.0)
    p = pair(fa, fb)
    for sub in (p.a_subspace, p.b_subspace):
        assert sub.cosines == pytest.approx([0.0] * 4, abs=1e-12)
        assert sub.mean_sq_cos == pytest.approx(0.0, abs=1e-12) and sub.max_cos == pytest.approx(0.0, abs=1e-12)
        assert sub.min_angle_deg == pytest.approx(90.0)
        assert not sub.degenerate and sub.random_baseline == pytest.approx(4 / d)
    assert p.delta_cosine == pytest.approx(0.0, abs=1e-12)
    assert p.interference_ab == pytest.approx(0.0, abs=1e-12) and p.interference_ba == pytest.approx(0.0, abs=1e-12)
    assert not p.degenerate


def test_identical_subspaces_give_0_degrees():
    f = rand_factors(32, 24, 4, seed=3)
    g = ModuleFactors(torch.randn(4, 4) @ f.A, f.B @ torch.randn(4, 4), 0.5)  # same spans, other bases
    p = pair(f, g)
    for sub in (p.a_subspace, p.b_subspace):
        assert sub.cosines == pytest.approx([1.0] * 4, abs=TOL)
        assert sub.mean_sq_cos == pytest.approx(1.0, abs=TOL) and sub.min_angle_deg == pytest.approx(0.0, abs=1e-3)
    assert p.interference_ab == pytest.approx(1.0, abs=TOL) and p.interference_ba == pytest.approx(1.0, abs=TOL)
    assert pair(f, f).delta_cosine == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("theta_deg", [10.0, 45.0, 80.0])
def test_known_angle(theta_deg):
    t = math.radians(theta_deg)
    A1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    A2 = torch.tensor([[math.cos(t), math.sin(t), 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sub = principal_angles(orthonormal_basis(A1.T, "A"), orthonormal_basis(A2.T, "A"))
    assert sub.cosines == pytest.approx([1.0, math.cos(t)], abs=1e-12)
    assert sub.mean_sq_cos == pytest.approx((1 + math.cos(t) ** 2) / 2, abs=1e-12)


# --- random cases against scipy and dense products -------------------------------------------------

CASES = [(48, 40, 4, 4, 0), (40, 96, 8, 3, 1), (130, 70, 16, 16, 2), (20, 12, 6, 5, 3)]


@pytest.mark.parametrize("out_f,in_f,ra,rb,seed", CASES)
def test_angles_match_scipy(out_f, in_f, ra, rb, seed):
    fa, fb = rand_factors(out_f, in_f, ra, seed), rand_factors(out_f, in_f, rb, seed + 100)
    p = pair(fa, fb)
    for sub, X, Y in ((p.a_subspace, fa.A.T, fb.A.T), (p.b_subspace, fa.B, fb.B)):
        ref = scipy_cosines(X, Y)
        assert np.allclose(sub.cosines, ref, atol=TOL)
        assert sub.mean_sq_cos == pytest.approx(float((ref ** 2).mean()), abs=TOL)
        assert sub.max_cos == pytest.approx(float(ref[0]), abs=TOL)
        assert sub.random_baseline == pytest.approx(max(ra, rb) / X.shape[0])


@pytest.mark.parametrize("out_f,in_f,ra,rb,seed", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_delta_metrics_match_dense(out_f, in_f, ra, rb, seed, dtype):
    fa = rand_factors(out_f, in_f, ra, seed, scaling=2.0, dtype=dtype)
    fb = rand_factors(out_f, in_f, rb, seed + 7, scaling=0.25, dtype=dtype)
    p, ref = pair(fa, fb), dense_module_pair(fa, fb)
    for key in ("delta_cosine", "interference_ab", "interference_ba"):
        assert getattr(p, key) == pytest.approx(ref[key], abs=TOL), key
    assert np.allclose(p.a_subspace.cosines, ref["a_subspace"]["cosines"], atol=TOL)
    assert np.allclose(p.b_subspace.cosines, ref["b_subspace"]["cosines"], atol=TOL)
    if ra == rb:
        assert p.cross_energy_ab == pytest.approx(ref["cross_energy_ab"], abs=TOL)
        assert p.cross_energy_ba == pytest.approx(ref["cross_energy_ba"], abs=TOL)
    else:
        assert p.cross_energy_ab is None and "ranks" in " ".join(p.reasons)


def test_interference_matches_explicit_projector():
    fa, fb = rand_factors(30, 50, 5, 11), rand_factors(30, 50, 5, 12)
    Wb = (fb.scaling * fb.B.double() @ fb.A.double()).numpy()
    P = fa.A.double().numpy().T @ np.linalg.pinv(fa.A.double().numpy().T)  # projector via pseudo-inverse
    expected = np.linalg.norm(Wb @ P) / np.linalg.norm(Wb)
    assert pair(fa, fb).interference_ab == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("out_f,in_f,r,seed", [(64, 48, 8, 0), (20, 200, 4, 1), (10, 12, 16, 2)])
def test_spectrum_matches_dense_svd(out_f, in_f, r, seed):
    f = rand_factors(out_f, in_f, r, seed, scaling=1.5)
    spec = delta_spectrum(prepare(M, f))
    S = np.linalg.svd((f.scaling * f.B.double() @ f.A.double()).numpy(), compute_uv=False)
    k = min(out_f, in_f, r)
    assert np.allclose(spec.singular_values[:k], S[:k], atol=TOL * S[0])
    assert spec.frobenius == pytest.approx(float(np.linalg.norm(S)), rel=1e-9)
    assert spec.effective_rank == pytest.approx(effective_rank_dense(S[:k]), abs=TOL)
    assert spec.numerical_rank == k and spec.degenerate == (k < r)


def test_random_baseline_matches_monte_carlo():
    d, ra, rb, n = 40, 2, 8, 400
    g = torch.Generator().manual_seed(0)
    with torch_threads(1):
        vals = [principal_angles(orthonormal_basis(torch.randn(d, ra, generator=g, dtype=torch.float64), "A"),
                                 orthonormal_basis(torch.randn(d, rb, generator=g, dtype=torch.float64), "A")).mean_sq_cos
                for _ in range(n)]
    assert np.mean(vals) == pytest.approx(max(ra, rb) / d, rel=0.08)


# --- degenerate factors ---------------------------------------------------------------------------


def test_zero_b_is_degenerate_never_orthogonal():
    f = rand_factors(32, 24, 4, 0)
    fresh = ModuleFactors(rand_factors(32, 24, 4, 1).A, torch.zeros(32, 4), 2.0)  # a fresh LoRA / LoRI
    p = pair(f, fresh)
    assert p.degenerate and p.b_subspace.degenerate
    assert p.b_subspace.mean_sq_cos is None and p.b_subspace.max_cos is None and p.b_subspace.cosines == []
    assert "all zeros" in p.b_subspace.reason
    # b's delta is zero: its share in a's subspace is undefined; a's share in b's (valid) A-space is not.
    assert p.delta_cosine is None and p.interference_ab is None and p.interference_ba is not None
    assert p.a_subspace.mean_sq_cos is not None  # A is fine: its angles are still reported
    spec = delta_spectrum(prepare(M, fresh))
    assert spec.degenerate and spec.reason == "zero delta" and spec.effective_rank is None


def test_rank_deficient_b_is_flagged_and_uses_its_span():
    f = rand_factors(32, 24, 4, 0)
    B = f.B.clone()
    B[:, 3] = 2 * B[:, 0] - B[:, 1]
    g = ModuleFactors(rand_factors(32, 24, 4, 5).A, B, 1.0)
    p = pair(f, g)
    assert p.degenerate and "numerical rank 3 < r=4" in p.b_subspace.reason
    assert p.b_subspace.rank_b == 3
    assert np.allclose(p.b_subspace.cosines, scipy_cosines(f.B, B[:, :3]), atol=TOL)


def test_empty_factor():
    basis = orthonormal_basis(torch.zeros(10, 0), "lora_A")
    assert basis.rank == 0 and basis.reason == "lora_A is empty"


def test_shape_mismatch_raises():
    with pytest.raises(MismatchError, match="q_proj"):
        pair(rand_factors(32, 24, 4, 0), rand_factors(32, 16, 4, 1))


# --- masks ----------------------------------------------------------------------------------------


def test_mask_overlap_counts_and_jaccard():
    a = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)
    o = mask_overlap(a, b)
    assert (o.overlap, o.union, o.count_a, o.count_b) == (2, 5, 3, 4) and o.jaccard == pytest.approx(0.4)
    empty = mask_overlap(torch.zeros(2, 2, dtype=torch.bool), torch.zeros(2, 2, dtype=torch.bool))
    assert empty.jaccard is None
    total = total_overlap([o, mask_overlap(a, a)])
    assert (total.overlap, total.union) == (5, 8) and total.jaccard == pytest.approx(5 / 8)


def test_masks_in_analysis_by_file_key_or_object():
    fa, fb = rand_factors(8, 6, 2, 0), rand_factors(8, 6, 2, 1)
    ma = torch.zeros(8, 2, dtype=torch.bool)
    ma[:4] = True
    mb = torch.zeros(8, 2, dtype=torch.bool)
    mb[2:6] = True

    class MaskFile:  # what workbench.masking.file.load_mask returns: an object with .tensors
        tensors = {file_key(M, "B"): mb}

    masks = {"a": normalise_mask({file_key(M, "B"): ma}, "a"), "b": normalise_mask(MaskFile(), "b")}
    res = analyse({"a": {M: fa}, "b": {M: fb}}, masks)
    mask = res.pairs[0].modules[M].mask
    assert (mask.overlap, mask.union) == (4, 12) and mask.jaccard == pytest.approx(1 / 3)


def test_analyse_walks_shared_modules_and_reports_the_rest():
    other = "model.layers.1.mlp.up_proj"
    res = analyse({"a": {M: rand_factors(8, 6, 2, 0), other: rand_factors(8, 6, 2, 1)},
                   "b": {M: rand_factors(8, 6, 2, 2)}, "c": {M: rand_factors(8, 6, 2, 3)}})
    assert [(p.a, p.b) for p in res.pairs] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert list(res.pairs[0].modules) == [M] and res.pairs[0].only_a == [other]
    assert set(res.spectra["a"]) == {M, other}
