"""Statistics on data with known answers: intervals, paired tests, McNemar, Holm, detectable differences,
each checked against scipy computed directly or against a hand-worked example."""

import math

import numpy as np
import pytest
from scipy import stats as st

from workbench.analytics import stats

SEEDS_A = [1.20, 1.35, 1.10, 1.28, 1.17]


def test_t_interval_matches_scipy_and_degenerate_cases():
    got = stats.t_interval(SEEDS_A)
    lo, hi = st.t.interval(0.95, df=4, loc=np.mean(SEEDS_A), scale=st.sem(SEEDS_A))
    assert got.mean == pytest.approx(np.mean(SEEDS_A)) and (got.lo, got.hi) == pytest.approx((lo, hi), rel=1e-12)
    assert got.n == 5 and got.method == "t" and got.lo < got.mean < got.hi
    same = stats.t_interval([0.7, 0.7, 0.7])  # a seed-independent stage: width 0, not NaN, not a crash
    assert (same.lo, same.mean, same.hi) == (0.7, 0.7, 0.7)
    one = stats.t_interval([0.3])
    assert one.mean == 0.3 and one.lo is None and one.hi is None
    with pytest.raises(ValueError, match="finite"):
        stats.t_interval([0.1, float("nan")])


def test_known_difference_is_found_by_the_paired_test():
    rng = np.random.default_rng(3)
    a = np.array(SEEDS_A)
    b = a + 0.1 + rng.normal(0, 1e-3, a.size)  # B = A + 0.1 per seed, plus tiny noise
    res = stats.paired_by_seed(a, b)
    assert res.lo <= 0.1 <= res.hi and res.lo > 0  # the interval holds 0.1 and excludes 0
    assert res.p < 0.05 and res.p == pytest.approx(st.ttest_rel(b, a).pvalue, rel=1e-12)
    assert res.diff == pytest.approx(np.mean(b - a))
    # exact sign-flip: all 5 differences positive -> only the all-plus and all-minus patterns are as extreme
    assert res.p_sign_flip == pytest.approx(2 / 2 ** 5)


def test_identical_pair_is_not_significant_and_never_crashes():
    res = stats.paired_by_seed(SEEDS_A, SEEDS_A)
    assert res.p == 1.0 and res.diff == 0.0 and res.reason == "identical results"
    constant = stats.paired_by_seed([1.0, 2.0, 3.0], [1.1, 2.1, 3.1])  # zero variance: t undefined
    assert constant.p is None and "zero variance" in constant.reason
    adjusted, rejected = stats.holm([res.p, constant.p, None])
    assert rejected == [False, False, False] and adjusted == [1.0, 1.0, 1.0]
    assert stats.paired_by_seed([0.5], [0.7]).p is None  # one seed: no test


def test_sign_flip_matches_scipy_permutation_test_on_mixed_signs():
    d = np.array([0.3, -0.1, 0.25, 0.05, -0.02, 0.4])
    a = np.zeros_like(d)
    ref = st.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf, vectorized=True)
    # by hand: the share of the 64 sign patterns whose |mean| is at least the observed one
    signs = np.array(np.meshgrid(*[[-1, 1]] * d.size)).reshape(d.size, -1).T
    by_hand = np.mean(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert stats.paired_by_seed(a, d).p_sign_flip == pytest.approx(ref.pvalue) == pytest.approx(by_hand)


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    a = [[1, 1, 0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1, 1, 0]]
    b = [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 1, 0, 1, 1]]
    res = stats.mcnemar_exact(a, b)
    # discordant pairs: seed 0 has 3 (A 0, B 1: prompts 2, 3, 5) and 0 the other way; seed 1 has 3
    # (prompts 1, 2, 7) and 1 (prompt 5) -> 6 vs 1; exact two-sided p = 2 * P(X <= 1 | n=7, 1/2) = 16/128
    assert res.discordant == [6, 1]
    assert res.p == pytest.approx(st.binomtest(6, 7, 0.5).pvalue) == pytest.approx(16 / 128)
    assert res.diff == pytest.approx(np.mean(b) - np.mean(a)) and res.lo <= res.diff <= res.hi
    same = stats.mcnemar_exact(a, a)
    assert same.p == 1.0 and same.discordant == [0, 0] and same.diff == 0.0
    with pytest.raises(ValueError, match="0 or 1"):
        stats.mcnemar_exact([[0, 2]], [[0, 1]])


def test_holm_against_the_textbook_example():
    # Holm (1979) step-down by hand, m = 5, alpha = 0.05:
    # sorted p: 0.001 (x5 = 0.005), 0.008 (x4 = 0.032), 0.012 (x3 = 0.036), 0.030 (x2 = 0.060), 0.200 (x1 = 0.2)
    p = [0.030, 0.001, 0.200, 0.012, 0.008]
    adjusted, rejected = stats.holm(p)
    assert adjusted == pytest.approx([0.060, 0.005, 0.200, 0.036, 0.032])
    assert rejected == [False, True, False, True, True]
    # the sequential form: reject while p_(i) <= alpha / (m - i + 1), stop at the first failure
    order = sorted(range(5), key=lambda i: p[i])
    seq, going = [False] * 5, True
    for rank, i in enumerate(order):
        going = going and p[i] <= 0.05 / (5 - rank)
        seq[i] = going
    assert seq == rejected
    # monotone: a later p-value is never adjusted below an earlier one; capped at 1
    assert stats.holm([0.04, 0.045])[0] == pytest.approx([0.08, 0.08])
    assert stats.holm([0.9, 0.8])[0] == [1.0, 1.0]
    with pytest.raises(ValueError):
        stats.holm([1.5])


def test_bootstrap_over_seeds_and_prompts():
    rng = np.random.default_rng(0)
    outcomes = rng.integers(0, 2, (3, 100))
    res = stats.bootstrap_seeds_prompts(outcomes)
    assert res.mean == pytest.approx(outcomes.mean()) and res.lo < res.mean < res.hi and res.n == 3
    assert stats.bootstrap_seeds_prompts(outcomes) == res  # fixed generator seed: reproducible
    # one seed: the prompt-level bootstrap alone, whose width is about 2 x 1.96 x sqrt(p q / n)
    one = stats.bootstrap_seeds_prompts([outcomes[0]])
    se = math.sqrt(outcomes[0].mean() * (1 - outcomes[0].mean()) / 100)
    assert one.hi - one.lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    # seeds that disagree widen the interval beyond what the prompts alone give
    spread = stats.bootstrap_seeds_prompts([np.r_[np.ones(30), np.zeros(70)], np.r_[np.ones(70), np.zeros(30)]])
    pooled = stats.bootstrap_seeds_prompts([np.r_[np.ones(100), np.zeros(100)]])
    assert spread.hi - spread.lo > 1.5 * (pooled.hi - pooled.lo)
    assert stats.bootstrap_seeds_prompts([[1, 1, 1], [1, 1]]).lo == 1.0  # ragged seeds, all ones


def test_minimal_detectable_difference():
    # textbook sample size: 0.5 vs 0.7, alpha 0.05 two-sided, power 0.8 -> about 93 per group (Fleiss,
    # no continuity correction); so at n = 93 the detectable difference is 0.2
    assert stats.mdd_proportion(93) == pytest.approx(0.2, abs=2e-3)
    za, zb = st.norm.ppf(0.975), st.norm.ppf(0.8)
    d = stats.mdd_proportion(100)
    q = 0.5 + d
    assert d == pytest.approx(za * math.sqrt(2 * (0.5 + q) / 2 * (1 - (0.5 + q) / 2) / 100)
                              + zb * math.sqrt((0.25 + q * (1 - q)) / 100), rel=1e-6)
    assert stats.mdd_proportion(400) < d < stats.mdd_proportion(24)
    assert stats.mdd_proportion(8) is None  # nothing is detectable with 8 prompts at p = 0.5
    # paired (McNemar, Connor 1987): with 20% discordant prompts the same n detects a smaller difference
    paired = stats.mdd_proportion(100, paired=True, discordant=0.2)
    assert paired < d
    assert 100 * paired ** 2 == pytest.approx((za * math.sqrt(0.2) + zb * math.sqrt(0.2 - paired ** 2)) ** 2, rel=1e-6)
    with pytest.raises(ValueError):
        stats.mdd_proportion(0)
