"""The report over seeds: every forgetting-matrix cell with its 95% interval, paired method comparisons
with a Holm correction, the sentences that say which differences are significant, and eval-set sizes.

``build_seed_report`` takes plain numbers (what each seed's evaluate stages stored) and returns the
report dict; ``write_report`` writes ``report.json`` and renders ``report.md`` and ``report.html`` from
that dict alone, so the three carry the same numbers (tables: :mod:`workbench.analytics.seed_tables`).

Cells: the mean over seeds with a Student-t interval over seeds; for a metric that is a mean of one 0/1
outcome per prompt (refusal rate, accuracy), the shown interval is the two-level bootstrap over seeds
and prompts (:func:`workbench.analytics.stats.bootstrap_seeds_prompts`), which also counts the prompts
as a sample. Comparisons pair the two methods' stages at the same position of the chain: by seed (paired
t-test) for NLL and other per-run numbers, by prompt (exact McNemar) for 0/1 outcomes. Holm runs across
the whole comparison table (one family).
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path

from workbench.analytics import stats

SCHEMA_VERSION = 1
WHICH = ("primary", "nll")


def _num(v) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _clean(d: dict) -> dict:
    return {k: _num(v) if isinstance(v, float) else v for k, v in d.items()}


def _metric_name(data: dict, seeds: list, stage: str, task: str, which: str) -> str | None:
    if which == "nll":
        return "nll"
    rec = next((data[s]["evals"].get(stage, {}).get(task) for s in seeds if task in data[s]["evals"].get(stage, {})), None)
    return rec["primary"] if rec else None


def _values(data: dict, seeds: list, stage: str, task: str, metric: str) -> dict:
    """``{seed: value}`` for the seeds where the cell was measured and finite."""
    out = {}
    for s in seeds:
        rec = data[s]["evals"].get(stage, {}).get(task)
        v = _num(rec["metrics"].get(metric)) if rec else None
        if v is not None:
            out[s] = v
    return out


def _outcomes(data: dict, seeds: list, stage: str, task: str, metric: str) -> dict | None:
    """``{seed: {prompt id: 0/1}}`` when every seed stored per-prompt outcomes of this metric, else None."""
    out = {}
    for s in seeds:
        rec = data[s]["evals"].get(stage, {}).get(task)
        pp = (rec or {}).get("per_prompt", {}).get(metric)
        if not pp or not pp.get("values"):
            return None
        out[s] = dict(zip(pp["ids"], pp["values"]))
    return out


def build_cell(data: dict, seeds: list, stage: str, task: str, which: str) -> dict | None:
    """One matrix cell over seeds: mean, interval (t, or bootstrap for 0/1 outcomes), n, values.

    Returns:
        The cell dict, or None when the stage did not measure the task.
    """
    metric = _metric_name(data, seeds, stage, task, which)
    vals = _values(data, seeds, stage, task, metric) if metric else {}
    if not vals:
        return None
    t = stats.t_interval(list(vals.values()))
    outcomes = _outcomes(data, seeds, stage, task, metric) if which == "primary" else None
    boot = stats.bootstrap_seeds_prompts([list(o.values()) for o in outcomes.values()]) if outcomes else None
    shown = boot or t
    return {"metric": metric, "mean": t.mean, "lo": shown.lo, "hi": shown.hi, "interval": shown.method,
            "n": t.n, "values": [vals[s] for s in seeds if s in vals], "t": _clean(t.to_json()),
            "bootstrap": _clean(boot.to_json()) if boot else None,
            "n_prompts": len(next(iter(outcomes.values()))) if outcomes else None}


def _row_labels(group: dict) -> list[str]:
    """'base model' / 'after <task>' per row, from which row learns which task (no stage-name parsing)."""
    labels = []
    for i, stage in enumerate(group["stages"]):
        learned = [t for t, at in zip(group["tasks"], group["learned_at"]) if at == i]
        labels.append(f"after {', '.join(learned)}" if learned else ("base model" if i == 0 else stage))
    return labels


def build_forgetting(data: dict, seeds: list, group: dict, summaries: dict) -> dict:
    """One method's forgetting matrices (primary metric and NLL) with intervals, and their summaries."""
    out = {k: group[k] for k in ("tasks", "stages", "learned_at")}
    out["rows"] = _row_labels(group)
    for which in WHICH:
        out[which] = [[build_cell(data, seeds, s, t, which) for t in group["tasks"]] for s in group["stages"]]
    out["summary"] = {which: {k: _summary_cell([summaries[s].get(which, {}).get(k) for s in seeds])
                              for k in ("acc", "bwt", "forgetting")} for which in WHICH}
    return out


def _summary_cell(values: list) -> dict | None:
    vals = [v for v in map(_num, values) if v is not None]
    if not vals:
        return None
    t = stats.t_interval(vals)
    return {"mean": t.mean, "lo": t.lo, "hi": t.hi, "interval": "t", "n": t.n, "values": vals}


def _paired_outcomes(oa: dict, ob: dict, seeds: list) -> tuple[list, list] | None:
    """Per seed, the two methods' outcomes on the prompts both scored, in one order."""
    a, b = [], []
    for s in seeds:
        ids = [i for i in oa[s] if i in ob[s]]
        if not ids:
            return None
        a.append([oa[s][i] for i in ids])
        b.append([ob[s][i] for i in ids])
    return a, b


def compare_cell(data: dict, seeds: list, stage_a: str, stage_b: str, task: str, which: str) -> dict | None:
    """Paired comparison of one cell between two methods (B - A): McNemar on 0/1 outcomes, else t by seed."""
    metric = _metric_name(data, seeds, stage_a, task, which)
    va = _values(data, seeds, stage_a, task, metric) if metric else {}
    vb = _values(data, seeds, stage_b, task, metric) if metric else {}
    common = [s for s in seeds if s in va and s in vb]
    if not common:
        return None
    oa = _outcomes(data, common, stage_a, task, metric) if which == "primary" else None
    ob = _outcomes(data, common, stage_b, task, metric) if oa else None
    pairs = _paired_outcomes(oa, ob, common) if oa and ob else None
    if pairs:
        test = stats.mcnemar_exact(*pairs)
        by_seed = stats.paired_by_seed([va[s] for s in common], [vb[s] for s in common])
        extra = {"p_by_seed": by_seed.p}
    else:
        test = stats.paired_by_seed([va[s] for s in common], [vb[s] for s in common])
        extra = {}
    return {"metric": metric, "task": task, "which": which, "stage_a": stage_a, "stage_b": stage_b,
            "n_seeds": len(common), "mean_a": sum(va[s] for s in common) / len(common),
            "mean_b": sum(vb[s] for s in common) / len(common), **_clean(test.to_json()), **extra}


def build_comparisons(data: dict, seeds: list, groups: dict, forgetting: dict, alpha: float = stats.ALPHA) -> list[dict]:
    """Every pair of methods, at every chain position after the base row, every task, primary and NLL;
    Holm-adjusted across the whole list. Rows both methods share (the base model) are not compared."""
    rows = []
    for a, b in combinations(groups, 2):
        ga, gb = groups[a], groups[b]
        for k in range(min(len(ga["stages"]), len(gb["stages"]))):
            if ga["stages"][k] == gb["stages"][k]:
                continue  # one shared stage (the base evaluation): equal by construction
            across = ga.get("protocol", "") != gb.get("protocol", "")
            if across and k == 0:
                continue  # the base model under two prompt formats: not a method difference
            for task in ga["tasks"]:
                for which in WHICH:
                    metric = _metric_name(data, seeds, ga["stages"][k], task, which)
                    if which == "primary" and metric == "nll":
                        continue  # a task scored by NLL alone: its primary row is the NLL row, tested once
                    if across and "nll" in (which, metric):
                        continue  # each protocol scores NLL on its own prompt format (stages/cross_protocol.py)
                    row = compare_cell(data, seeds, ga["stages"][k], gb["stages"][k], task, which)
                    if row is not None:
                        rows.append({"a": a, "b": b, "row": k, "after": forgetting[a]["rows"][k],
                                     "higher_is_better": _higher(data, seeds, ga["stages"][k], task, which), **row})
    adjusted, rejected = stats.holm([r["p"] for r in rows], alpha)
    for r, p, sig in zip(rows, adjusted, rejected):
        r["p_holm"], r["significant"] = p, sig
    return rows


def _higher(data: dict, seeds: list, stage: str, task: str, which: str) -> bool:
    if which == "nll":
        return False
    rec = next((data[s]["evals"][stage][task] for s in seeds if task in data[s]["evals"].get(stage, {})), {})
    return bool(rec.get("higher_is_better", True))


def sentence(c: dict) -> str:
    """One comparison in words: who is higher, by how much, with its interval, test and decision."""
    diff = c["diff"] or 0.0
    head = f"{c['b']} vs {c['a']}, {c['task']} {c['metric']} {c['after']}: "
    if diff == 0:
        head += "no difference"
    else:
        better = "better" if (diff > 0) == c["higher_is_better"] else "worse"
        head += f"{c['b']} is {'higher' if diff > 0 else 'lower'} ({better}) by {abs(diff):.3g}"
    ci = f" (95% CI of the difference [{_g(c['lo'])}, {_g(c['hi'])}])"
    p = "p not computable" + (f": {c['reason']}" if c.get("reason") else "") if c["p"] is None else f"p = {c['p']:.3g}"
    verdict = "significant" if c["significant"] else "not significant"
    return f"{head}{ci}; {c['test']}, {p}, Holm-adjusted p = {c['p_holm']:.3g}: {verdict} at 0.05."


def _g(v) -> str:
    return "–" if v is None else f"{v:.3g}"


def conclusions(comparisons: list[dict], alpha: float = stats.ALPHA) -> dict:
    """The comparison table in words: significant and not significant at ``alpha`` after Holm."""
    sig = [sentence(c) for c in comparisons if c["significant"]]
    rest = [sentence(c) for c in comparisons if not c["significant"]]
    m = len(comparisons)
    if not m:
        head = "No method comparison (one method per seed run)."
    elif sig:
        head = f"{len(sig)} of the {m} differences are significant at {alpha} after a Holm correction across the table."
    else:
        head = f"None of the {m} differences is significant at {alpha} after a Holm correction across the table."
    return {"headline": head, "significant": sig, "not_significant": rest}


def eval_sizes(data: dict, seeds: list) -> list[dict]:
    """Per task and per-prompt metric: prompts per evaluation and the smallest detectable difference."""
    sizes: dict[tuple[str, str], int] = {}
    for s in seeds:
        for results in data[s]["evals"].values():
            for task, rec in results.items():
                for metric, pp in (rec.get("per_prompt") or {}).items():
                    key = (task, metric)
                    sizes[key] = max(sizes.get(key, 0), len(pp.get("values", [])))
    return [{"task": t, "metric": m, "n": n, "mdd": stats.mdd_proportion(n) if n else None,
             "mdd_design": "two independent sets of n prompts, two-sided alpha 0.05, power 0.8, rate 0.5 (widest)"}
            for (t, m), n in sorted(sizes.items())]


def pooled_score_forgetting(points: dict, pipeline: str | None = None) -> dict | None:
    """Every seed's data-aware (method, pair) points in one list, with Spearman's rho of score vs NLL and
    primary-metric forgetting over all of them (:func:`workbench.analytics.data_aware_forgetting.score_forgetting`).

    Args:
        points: ``{seed: [point]}`` as each seed's analyze stage reports them (``group``: its method, '' for
            a single method, named after the pipeline as in ``forgetting``).

    Returns:
        The ``score_forgetting`` object, or None when no seed has a point.
    """
    from workbench.analytics.data_aware_forgetting import score_forgetting

    pooled = [{**p, "seed": s, "group": p.get("group") or pipeline or "pipeline"}
              for s, pts in points.items() for p in pts or []]
    return score_forgetting(pooled) if pooled else None


def build_seed_report(seeds: list, data: dict, groups: dict, runs: dict | None = None, reused: dict | None = None,
                      pipeline: str | None = None, alpha: float = stats.ALPHA, score_points: dict | None = None) -> dict:
    """The aggregated report of one pipeline run once per seed.

    Args:
        seeds: the seeds, in run order.
        data: ``{seed: {"evals": {stage: {task: {"primary", "higher_is_better", "metrics", "per_prompt"}}},
            "summaries": {group: {"primary": {acc, bwt, forgetting}, "nll": {...}}}}}``.
        groups: ``{group: {"tasks", "stages", "learned_at"}}``: each method's forgetting matrix rows
            (the same stage names in every seed); empty for a pipeline without an analyze stage.
        runs: ``{seed: run directory name}``; reused: ``{seed: [stages adopted from an earlier seed]}``.
        pipeline: the pipeline's name; alpha: the family-wise level of the Holm correction.
        score_points: ``{seed: [data-aware score vs forgetting point]}`` (each seed's analyze stage with
            ``data``): pooled into ``score_forgetting`` (:func:`pooled_score_forgetting`).

    Returns:
        The report dict (schema in the module docstring of :mod:`workbench.analytics.seed_tables`).
    """
    seeds = list(seeds)
    forgetting = {g: build_forgetting(data, seeds, f, {s: data[s]["summaries"].get(g, {}) for s in seeds})
                  for g, f in groups.items()}
    comparisons = build_comparisons(data, seeds, groups, forgetting, alpha)
    first = data[seeds[0]]["evals"]
    evaluations = {stage: {task: {w: build_cell(data, seeds, stage, task, w) for w in WHICH} for task in tasks}
                   for stage, tasks in first.items()}
    report = {"schema_version": SCHEMA_VERSION, "kind": "seed_report", "pipeline": pipeline, "seeds": seeds,
            "runs": {str(s): v for s, v in (runs or {}).items()},
            "reused": {str(s): v for s, v in (reused or {}).items()},
            "settings": {"confidence": stats.CONFIDENCE, "alpha": alpha, "correction": "holm",
                         "bootstrap": {"resamples": stats.BOOTSTRAP_RESAMPLES, "rng_seed": stats.BOOTSTRAP_SEED,
                                       "levels": ["seed", "prompt"], "interval": "percentile"}},
            # a single method's group is '' (stage names carry no method prefix): name it after the pipeline
            "forgetting": {g or pipeline or "pipeline": f for g, f in forgetting.items()},
            "evaluations": evaluations, "comparisons": comparisons,
            "conclusions": conclusions(comparisons, alpha), "eval_sizes": eval_sizes(data, seeds)}
    pooled = pooled_score_forgetting(score_points or {}, pipeline)
    if pooled is not None:
        report["score_forgetting"] = pooled
    return report


def write_report(report: dict, out_dir) -> Path:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir`` (replaced as a whole)."""
    from workbench.analytics.seed_tables import render_html, render_md
    from workbench.io.atomic import atomic_directory, atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    with atomic_directory(out_dir, if_exists="replace") as tmp:
        atomic_write_json(tmp / "report.json", report)
        atomic_write_text(tmp / "report.md", render_md(report))
        atomic_write_text(tmp / "report.html", render_html(report))
    return out_dir
