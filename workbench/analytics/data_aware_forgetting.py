"""Does the data-aware score predict forgetting? Each (earlier task i, later update j) pair's score set beside
the forgetting of task i that stage j caused, and their Spearman rank correlation with a bootstrap interval.

A point pairs the data-aware energy ratio of update j on task i's inputs (``data_aware`` pair
``(inputs_of=i, update=j)``: with ``increments`` it is what stage j added) with the change of task i's
held-out NLL (positive: worse) and primary metric (positive: worse, whatever its direction) from the
row before stage j's evaluation to stage j's row of a forgetting matrix. One run gives a few points per
chain; a ``--seeds`` run pools every (method, seed, pair) point (``seed_report``).

Rank correlation because the score is a ratio of energies, not a calibrated prediction: only its order
is expected to follow the forgetting. The interval is a percentile bootstrap over points (points of one
seed share a training run, so it is optimistic when they are few seeds with many pairs each).
"""

from __future__ import annotations

import math

import numpy as np

from workbench.analytics import stats

MIN_POINTS = 3  # below this a rank correlation says nothing
PERMUTATIONS = 9999  # 7! = 5040 pairings are enumerated, above that a random 9,999
WHICH = {"nll": "nll_forgetting", "primary": "metric_forgetting"}


def _pair_scores(data_aware: dict) -> dict[tuple[str, str], dict]:
    return {(p["inputs_of"], p["update"]): p for p in data_aware.get("pairs", [])}


def _step(grid, r: int, t: int, sign: float) -> float | None:
    """``sign * (grid[r][t] - grid[r-1][t])``: positive when row r made task t worse."""
    if not grid or grid[r][t] is None or grid[r - 1][t] is None:
        return None
    return sign * (float(grid[r][t]) - float(grid[r - 1][t])) + 0.0  # + 0.0: no "-0" in the tables


def group_points(data_aware: dict, f: dict, group: str = "") -> list[dict]:
    """The points of one forgetting matrix (``tasks``, ``nll``, ``matrix``, ``learned_at``, ``row_adapters``,
    optional ``higher_is_better`` and ``metric``): for each row r whose adapter j updated after the row
    that learned task i, the pair (i, j) score and task i's change from row r-1 to row r.

    Returns:
        ``[{"group", "earlier", "task", "update", "row", "score", "overlap", "nll_forgetting",
        "metric_forgetting", "metric"}]``; pairs without a score (i's own update has no energy) are left out.
    """
    scores, adapters = _pair_scores(data_aware), f.get("row_adapters") or []
    # the analyze stage's matrices carry {task: metric} as "metric", a parsed Forgetting as "metrics"
    metric, higher = f.get("metrics") or f.get("metric"), f.get("higher_is_better") or {}
    out = []
    for r in range(1, len(adapters)):
        for t, task in enumerate(f["tasks"]):
            learned = f["learned_at"][t]
            if adapters[r] is None or learned is None or not 0 < learned < r:
                continue
            p = scores.get((adapters[learned], adapters[r]))
            if p is None or p.get("energy_ratio") is None:
                continue
            sign = -1.0 if higher.get(task, True) else 1.0
            out.append({"group": group, "earlier": adapters[learned], "task": task, "update": adapters[r], "row": r,
                        "score": p["energy_ratio"], "overlap": p.get("overlap"),
                        "nll_forgetting": _step(f.get("nll"), r, t, 1.0),
                        "metric_forgetting": _step(f.get("matrix"), r, t, sign),
                        "metric": metric.get(task) if isinstance(metric, dict) else metric})
    return out


def _ranks_rows(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=-1)


def _row_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair (NaN where a row is constant)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)


def spearman(x, y, confidence: float = stats.CONFIDENCE, resamples: int = stats.BOOTSTRAP_RESAMPLES,
             seed: int = stats.BOOTSTRAP_SEED) -> dict:
    """Spearman's rho of ``x`` and ``y`` (``scipy.stats.spearmanr``), its permutation p-value
    (:func:`permutation_p`) and a percentile bootstrap interval over points (resamples in which either side is constant have no rho and are dropped).

    Returns:
        ``{"n", "rho", "p", "lo", "hi", "interval", "resamples", "resamples_used", "test", "reason"}``; ``rho`` None (with ``reason``)
        below :data:`MIN_POINTS` points or when a side is constant.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = int(len(x))
    out = {"n": n, "rho": None, "p": None, "lo": None, "hi": None, "interval": "percentile bootstrap over points",
           "resamples": resamples, "reason": None}
    if n < MIN_POINTS:
        return {**out, "reason": f"{n} point{'s' if n != 1 else ''} (a rank correlation needs {MIN_POINTS})"}
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return {**out, "reason": "the " + ("score" if np.ptp(x) == 0 else "forgetting") + " is the same at every point"}
    rho = float(spearmanr(x, y).statistic)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    boot = _row_corr(_ranks_rows(x[idx]), _ranks_rows(y[idx]))
    boot = boot[np.isfinite(boot)]
    tail = 100 * (1 - confidence) / 2
    lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail])) if len(boot) else (None, None)
    return {**out, "rho": rho, "p": permutation_p(x, y, seed), "lo": lo, "hi": hi, "resamples_used": int(len(boot)),
            "test": "permutation (exact up to 7 points)"}


def permutation_p(x: np.ndarray, y: np.ndarray, seed: int = stats.BOOTSTRAP_SEED) -> float:
    """Two-sided permutation p-value of Spearman's rho (``scipy.stats.permutation_test``, pairings): exact
    over all n! pairings when that is at most :data:`PERMUTATIONS`. spearmanr's own p-value is a t
    approximation that gives p = 0 for three perfectly ordered points; exact, it is 1/3."""
    from scipy.stats import permutation_test

    ry = _ranks_rows(y)

    def rho(a, axis=-1):
        return _row_corr(_ranks_rows(np.moveaxis(a, axis, -1)), ry)

    res = permutation_test((x,), rho, permutation_type="pairings", n_resamples=PERMUTATIONS,
                           vectorized=True, random_state=seed)
    return float(res.pvalue)


def correlations(points: list[dict]) -> dict[str, dict]:
    """``{"nll": spearman, "primary": spearman}`` of score vs forgetting over the points where both exist."""
    out = {}
    for which, key in WHICH.items():
        use = [p for p in points if p.get("score") is not None and p.get(key) is not None]
        out[which] = spearman([p["score"] for p in use], [p[key] for p in use])
    return out


def verdict(c: dict, what: str) -> str:
    """One correlation in words: positive, negative, or undecided (the interval includes 0)."""
    if c["rho"] is None:
        return f"Score vs {what}: undecided ({c['reason']})."
    head = f"Score vs {what}: Spearman rho = {c['rho']:.2f}"
    ci = f" (95% CI [{c['lo']:.2f}, {c['hi']:.2f}], n = {c['n']})" if c["lo"] is not None else f" (n = {c['n']})"
    ci += f", permutation p = {c['p']:.2g}"
    decided = c["p"] < stats.ALPHA and c["lo"] is not None and (c["lo"] > 0 or c["hi"] < 0)
    if decided and c["rho"] > 0:
        return head + ci + ": pairs with a higher data-aware score forgot more."
    if decided:
        return head + ci + ": pairs with a higher data-aware score forgot less (the score ranks them backwards)."
    return head + ci + f": undecided (the interval includes 0 or p >= {stats.ALPHA})."


def score_forgetting(points: list[dict]) -> dict:
    """The report object: points, both correlations and their sentences (SCHEMA.md)."""
    corr = correlations(points)
    words = {"nll": "held-out NLL forgetting", "primary": "primary-metric forgetting"}
    return {"points": points, "correlations": corr, "sentences": [verdict(corr[w], words[w]) for w in WHICH]}
