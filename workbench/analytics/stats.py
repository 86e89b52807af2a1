"""Statistics for results over seeds and prompts: intervals, paired tests, Holm, detectable differences.

Pure functions over numbers (numpy and scipy, no torch), each returning a small dataclass with a
``to_json()``. What is in scipy is taken from scipy: the t quantiles (``scipy.stats.t``), the paired
t-test (``ttest_rel``), the exact sign-flip test (``permutation_test``), the exact binomial test behind
McNemar (``binomtest``), normal quantiles (``norm``) and the root finder (``brentq``). Two pieces are
written here because scipy has no such function:

- :func:`bootstrap_seeds_prompts`: ``scipy.stats.bootstrap`` resamples one level of independent
  observations; per-prompt outcomes over seeds have two (a seed's training run, then the prompts
  scored on it), so this resamples seeds, then prompts within each drawn seed (the two-stage
  bootstrap of Davison & Hinkley 1997, sec. 3.8), with a fixed generator seed so a report is
  reproducible to the last digit.
- :func:`holm`: scipy has no Holm step-down correction (``scipy.stats.false_discovery_control`` is
  Benjamini-Hochberg, which controls another error rate); it is a few lines (Holm 1979).

A test that cannot be computed (fewer than two seeds, differences of zero variance) gives ``p = None``
with a ``reason``: it counts as *not significant*, never as an error. Identical results give ``p = 1``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
EXACT_SIGN_FLIP_MAX_N = 16  # 2**16 sign patterns: exact and still instant; above, 10,000 random patterns


@dataclass(frozen=True)
class MeanInterval:
    """A mean and its interval. ``lo``/``hi`` are None when undefined (one value); ``method`` names it."""

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    method: str
    sd: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedTest:
    """A paired comparison of B against A: the mean difference B - A, its interval and the test's p-value.

    ``p`` is the decision p-value of ``test``; ``p_sign_flip`` the exact sign-flip p-value (by-seed tests
    only: distribution-free, but never below ``2 / 2**n``, so 0.25 with three seeds). ``discordant`` is
    ``[A wrong & B right, A right & B wrong]`` for McNemar. ``reason`` says why ``p`` is None.
    """

    test: str
    n: int
    diff: float | None
    lo: float | None
    hi: float | None
    p: float | None
    p_sign_flip: float | None = None
    discordant: list[int] | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: values must be finite numbers, got {list(values)!r}")
    return x


def _constant(x: np.ndarray) -> bool:
    """No spread beyond float round-off (``a + 0.1 - a`` differs from 0.1 in the last bits)."""
    return x.size == 0 or float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(x))))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean and Student-t interval over independent runs (one value per seed).

    Args:
        values: one finite value per seed.
        confidence: the interval's coverage.

    Returns:
        :class:`MeanInterval` with ``method="t"``; ``lo``/``hi`` None for one value, equal to the mean when
        all values are equal (a stage that does not depend on the seed).

    Raises:
        ValueError: no values, or a value is NaN or infinite.
    """
    x = _finite(values, "t_interval")
    if x.size == 0:
        raise ValueError("t_interval: no values")
    mean = float(x.mean())
    if x.size == 1:
        return MeanInterval(mean, None, None, 1, "t")
    sd = float(x.std(ddof=1))
    if _constant(x):  # the value itself: a sum of equal floats drifts in the last bit
        return MeanInterval(float(x[0]), float(x[0]), float(x[0]), int(x.size), "t", 0.0)
    lo, hi = stats.t.interval(confidence, df=x.size - 1, loc=mean, scale=sd / math.sqrt(x.size))
    return MeanInterval(mean, float(lo), float(hi), int(x.size), "t", sd)


def bootstrap_seeds_prompts(outcomes: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                            n_resamples: int = BOOTSTRAP_RESAMPLES, rng_seed: int = BOOTSTRAP_SEED) -> MeanInterval:
    """Percentile interval of the mean of per-prompt outcomes, resampling seeds, then prompts within seed.

    Each replicate draws as many seeds as there are, with replacement, and for every drawn seed an
    independent resample of its prompts; the statistic is the mean over drawn seeds of the per-seed means
    (the point estimate: the mean of the per-seed rates).

    Args:
        outcomes: ``outcomes[s]`` = the per-prompt values of seed s (0/1 for a binary metric, or paired
            differences in {-1, 0, 1}); seeds may have different numbers of prompts.
        confidence: the interval's coverage.
        n_resamples: bootstrap replicates.
        rng_seed: the generator seed (fixed: the same data give the same interval).

    Returns:
        :class:`MeanInterval` with ``method="bootstrap"`` and ``n`` = number of seeds.

    Raises:
        ValueError: no seeds, a seed with no prompts, or a non-finite value.
    """
    seeds = [_finite(o, "bootstrap_seeds_prompts") for o in outcomes]
    if not seeds or any(s.size == 0 for s in seeds):
        raise ValueError("bootstrap_seeds_prompts: need at least one seed, each with at least one prompt")
    rng = np.random.default_rng(rng_seed)
    k = len(seeds)
    # per_slot[s, b, j]: seed s's mean over a fresh prompt resample, for slot j of replicate b
    per_slot = np.stack([x[rng.integers(0, x.size, (n_resamples, k, x.size))].mean(axis=2) for x in seeds])
    drawn = rng.integers(0, k, (n_resamples, k))  # which seed fills each slot
    reps = per_slot[drawn, np.arange(n_resamples)[:, None], np.arange(k)[None, :]].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    lo, hi = np.percentile(reps, [tail, 100 - tail])
    mean = float(np.mean([x.mean() for x in seeds]))
    return MeanInterval(mean, float(min(lo, mean)), float(max(hi, mean)), k, "bootstrap")


def _sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the mean difference over all 2**n sign patterns (one sample: scipy flips signs)."""
    exact = d.size <= EXACT_SIGN_FLIP_MAX_N
    sampled = {} if exact else {"n_resamples": 10_000, "rng": np.random.default_rng(BOOTSTRAP_SEED)}
    res = stats.permutation_test((d,), np.mean, permutation_type="samples", vectorized=True,
                                 **({"n_resamples": np.inf} if exact else sampled))
    return float(res.pvalue)


def paired_by_seed(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedTest:
    """Paired comparison of two methods run on the same seeds: B - A per seed, paired t-test.

    The t-test (``scipy.stats.ttest_rel``) decides; the exact sign-flip test (``permutation_test`` with
    ``permutation_type="samples"``: every assignment of signs to the per-seed differences) is given next
    to it as a check that needs no normality, with its floor ``2 / 2**n`` (0.25 for three seeds, 0.0625
    for five), which is why it is not the decision at the seed counts a CPU allows.

    Args:
        a, b: one value per seed, in the same seed order.
        confidence: coverage of the interval of the mean difference.

    Returns:
        :class:`PairedTest`; ``p = 1`` when the two are identical, ``p = None`` (with ``reason``) for one
        seed or a constant non-zero difference (the t statistic is undefined at zero variance).

    Raises:
        ValueError: different lengths, no values, or non-finite values.
    """
    x, y = _finite(a, "paired_by_seed a"), _finite(b, "paired_by_seed b")
    if x.size != y.size or x.size == 0:
        raise ValueError(f"paired_by_seed: need the same number of seeds on both sides, got {x.size} and {y.size}")
    d = y - x
    ci = t_interval(d, confidence)
    test = "paired t-test over seeds"
    if x.size < 2:
        return PairedTest(test, 1, ci.mean, None, None, None, reason="one seed: no test")
    flip = _sign_flip_p(d)
    if _constant(d):
        if abs(ci.mean) <= 1e-12:
            return PairedTest(test, int(d.size), 0.0, 0.0, 0.0, 1.0, flip, reason="identical results")
        return PairedTest(test, int(d.size), ci.mean, ci.lo, ci.hi, None, flip,
                          reason="the difference is the same on every seed: the t-test is undefined at zero variance")
    p = float(stats.ttest_rel(y, x).pvalue)
    return PairedTest(test, int(d.size), ci.mean, ci.lo, ci.hi, p, flip)


def mcnemar_exact(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                  n_resamples: int = BOOTSTRAP_RESAMPLES, rng_seed: int = BOOTSTRAP_SEED) -> PairedTest:
    """Exact McNemar test on paired binary outcomes (same prompts, same seeds), with a bootstrap interval.

    Pairs are (seed, prompt); the test is the exact binomial test (``scipy.stats.binomtest``, p = 1/2) on
    the discordant pairs, pooled over seeds. The interval of the difference in rates B - A comes from
    :func:`bootstrap_seeds_prompts` on the per-pair differences, so it carries the seed-to-seed spread
    that pooling leaves out of the test.

    Args:
        a, b: ``a[s][i]`` = 1 when method A succeeded on prompt i in seed s (same shape in b).

    Returns:
        :class:`PairedTest` with ``discordant = [A 0 & B 1, A 1 & B 0]``; ``p = 1`` without discordant pairs.

    Raises:
        ValueError: shapes differ or a value is not 0/1.
    """
    xs = [_finite(s, "mcnemar_exact a") for s in a]
    ys = [_finite(s, "mcnemar_exact b") for s in b]
    if len(xs) != len(ys) or any(x.size != y.size for x, y in zip(xs, ys)):
        raise ValueError("mcnemar_exact: a and b need the same seeds and the same prompts per seed")
    flat = np.concatenate([*xs, *ys]) if xs else np.array([])
    if not np.all((flat == 0) | (flat == 1)):
        raise ValueError("mcnemar_exact: outcomes must be 0 or 1")
    b_only = int(sum(((x == 0) & (y == 1)).sum() for x, y in zip(xs, ys)))
    a_only = int(sum(((x == 1) & (y == 0)).sum() for x, y in zip(xs, ys)))
    ci = bootstrap_seeds_prompts([y - x for x, y in zip(xs, ys)], confidence, n_resamples, rng_seed)
    test = "exact McNemar over prompts (pooled over seeds)"
    n = int(sum(x.size for x in xs))
    if b_only + a_only == 0:
        return PairedTest(test, n, ci.mean, ci.lo, ci.hi, 1.0, discordant=[0, 0], reason="no discordant prompts")
    p = float(stats.binomtest(b_only, b_only + a_only, 0.5).pvalue)
    return PairedTest(test, n, ci.mean, ci.lo, ci.hi, p, discordant=[b_only, a_only])


def holm(pvalues: Sequence[float | None], alpha: float = ALPHA) -> tuple[list[float], list[bool]]:
    """Holm's step-down adjustment (Holm 1979) over one family of tests; written here, scipy has none.

    Sort the m p-values ascending; the i-th smallest (i = 1..m) gets ``min(1, (m - i + 1) p_(i))``, made
    non-decreasing by a running maximum; a hypothesis is rejected when its adjusted p is <= ``alpha``
    (equivalently: reject in order while ``p_(i) <= alpha / (m - i + 1)``, stop at the first failure).
    A missing p (None or NaN: a test that could not be computed) counts as 1: it stays in the family, so
    it still costs the others their share of alpha, and it is never rejected.

    Args:
        pvalues: one p-value per test, in table order.
        alpha: the family-wise error rate.

    Returns:
        ``(adjusted p-values, rejected)``, both in the input order.

    Raises:
        ValueError: a p-value outside [0, 1].
    """
    p = np.array([1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v) for v in pvalues])
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"holm: p-values must be in [0, 1], got {list(pvalues)!r}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return [float(v) for v in adjusted], [bool(v <= alpha) for v in adjusted]


def mdd_proportion(n: int, p: float = 0.5, alpha: float = ALPHA, power: float = POWER, paired: bool = False,
                   discordant: float | None = None) -> float | None:
    """The smallest difference in a rate that a two-sided test at ``alpha`` detects with ``power``.

    Unpaired (two independent sets of n prompts, the usual two-proportion z-test, Fleiss 2003 eq. 4.14
    without continuity correction): the d solving
    ``z_(1-alpha/2) sqrt(2 pbar qbar / n) + z_power sqrt((p q + p' q') / n) = d``, ``p' = p + d`` moved
    towards 1/2 (the harder direction), ``pbar = (p + p') / 2``. Paired (the same n prompts under both
    methods, McNemar; Connor 1987): the d solving ``n d^2 = (z_(1-alpha/2) sqrt(psi) + z_power
    sqrt(psi - d^2))^2`` for a discordant share ``psi`` (default 2 p (1 - p): independent errors).

    Args:
        n: prompts per evaluation.
        p: the baseline rate (0.5: the widest case).
        alpha, power: two-sided level and power.
        paired: McNemar design instead of two independent samples.
        discordant: the share of prompts on which the two methods disagree (paired only).

    Returns:
        The detectable difference in rate; None when no possible difference is detectable at this n
        (at ``p = 0.5`` and n = 8 even 0.5 -> 1.0 is not).

    Raises:
        ValueError: ``n < 1`` or a rate outside (0, 1).
    """
    if n < 1 or not 0 < p < 1:
        raise ValueError(f"mdd_proportion: need n >= 1 and 0 < p < 1, got n={n}, p={p}")
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    if paired:
        psi = 2 * p * (1 - p) if discordant is None else float(discordant)
        if not 0 < psi <= 1:
            raise ValueError(f"mdd_proportion: discordant share must be in (0, 1], got {psi}")
        top = math.sqrt(psi)

        def gap(d):
            return math.sqrt(n) * d - (za * math.sqrt(psi) + zb * math.sqrt(max(psi - d * d, 0.0)))
    else:
        sign, top = (1.0, 1.0 - p) if p <= 0.5 else (-1.0, p)

        def gap(d):
            q = p + sign * d
            pbar = (p + q) / 2
            return d - (za * math.sqrt(2 * pbar * (1 - pbar) / n) + zb * math.sqrt((p * (1 - p) + q * (1 - q)) / n))
    if gap(top - 1e-12) < 0:
        return None
    return float(optimize.brentq(gap, 1e-12, top - 1e-12, xtol=1e-10))
