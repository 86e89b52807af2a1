"""The report's attribution check: does the data-aware score find the modules where forgetting happens?

One pair per report, the one with the most opportunity to forget: the chain's first task (the first adapter
of a chain of ``increments``) against the last update of that chain. Removing the last update from the
top-k modules by that pair's per-module energy ``E_ij`` (``attribution.attribute_ks``) is compared with
removing it from k random modules, on the first task's held-out NLL. Cost: ``2 + len(ks) (1 + n_random)``
NLL passes over ``limit`` held-out pairs.
"""

from __future__ import annotations

import math

from workbench.analytics.tables import Table, fmt

FRACTIONS = (0.05, 0.25)  # k as shares of the modules: a few, and a quarter
N_RANDOM = 3


def chain_pair(names: list[str], increments: dict[str, str], rows: dict[str, str]) -> tuple[str, str, str] | None:
    """``(first adapter i, the snapshot before the last update, the last adapter j)`` of the first chain.

    The chain is followed through ``increments`` (``{adapter: the adapter it continued}``): j is the first
    adapter in ``names`` that continues another and that none continues; i is the start of j's chain. None
    when there is no such chain or i has no data-aware row.
    """
    continued = set(increments.values())
    tail = next((n for n in names if n in increments and n not in continued), None)
    if tail is None:
        return None
    first, seen = tail, {tail}
    while first in increments and increments[first] not in seen:
        first = increments[first]
        seen.add(first)
    return (first, increments[tail], tail) if first in rows else None


def ks_for(n_modules: int, fractions=FRACTIONS) -> list[int]:
    """The k values: each fraction of the modules, at least 1, distinct, in order."""
    return sorted({max(1, min(n_modules, math.ceil(f * n_modules))) for f in fractions})


def attribution_section(model, tokenizer, named: dict, data_aware: dict, increments: dict[str, str], task,
                        limit: int | None, fractions=FRACTIONS, n_random: int = N_RANDOM, data_dir=None) -> dict | None:
    """The ``data_aware.attribution`` object (SCHEMA.md), or None without a chain pair.

    Args:
        model, tokenizer: the base model (weights changed and restored) and its tokenizer.
        named: the report's Adapters by name (snapshots: attribution swaps whole modules of snapshots).
        data_aware: the report's ``data_aware`` object (its pairs' per-module energies are the scores).
        increments: ``{adapter: the adapter it continued}``.
        task: ``{task name: name or Task}`` of the rows (``data_aware_report.task_values``).
        limit: held-out pairs of the first task; fractions: k as shares of the modules; n_random: draws.
    """
    from workbench.analytics.attribution import attribute_ks
    from workbench.data.registry import get_task

    pick = chain_pair(list(named), increments, data_aware["rows"])
    if pick is None:
        return None
    first, before, after = pick
    pair = next((p for p in data_aware["pairs"] if p["inputs_of"] == first and p["update"] == after), None)
    if pair is None:
        return None
    name = data_aware["rows"][first]
    pairs = get_task(task.get(name, name)).heldout_pairs(limit=limit, data_dir=data_dir)
    scores = {m: e["energy"] for m, e in pair["modules"].items()}
    n = len(named[after].modules())
    res = attribute_ks(model, tokenizer, named[before], named[after], scores, pairs, ks_for(n, fractions), n_random)
    # a share of an NLL *decrease* is no recovery: null, as the sentence says
    rose = res[0].nll_after > res[0].nll_before
    rows = [{"k": a.k, "nll_top": a.nll_top, "nll_random": a.nll_random,
             "recovered_top": a.recovered_top if rose else None,
             "recovered_random": a.recovered_random if rose else None, "top_modules": a.top_modules} for a in res]
    out = {"inputs_of": first, "task": name, "before": before, "after": after, "score": "energy",
           "n_modules": n, "n_pairs": len(pairs), "n_random": n_random, "seed": 0,
           "nll_before": res[0].nll_before, "nll_after": res[0].nll_after, "rows": rows}
    return {**out, "sentence": attribution_sentence(out)}


def _share(v) -> str:
    return "–" if v is None else f"{100 * v:.0f}%"


def attribution_sentence(a: dict) -> str:
    """"Removing the later update from the top-k modules by score recovers X of the NLL increase; k random
    modules recover Y", for the largest k (or why there is nothing to recover)."""
    gap = a["nll_after"] - a["nll_before"]
    if gap <= 0:
        return (f"{a['after']}'s update did not raise {a['task']}'s held-out NLL ({a['nll_before']:.4g} -> "
                f"{a['nll_after']:.4g}): no forgetting to attribute.")
    parts = [f"k={r['k']}: {_share(r['recovered_top'])} (random: {_share(r['recovered_random'])})" for r in a["rows"]]
    top = a["rows"][-1]
    return (f"Removing {a['after']}'s update from the top-{top['k']} of {a['n_modules']} modules by data-aware "
            f"energy on {a['task']}'s inputs recovers {_share(top['recovered_top'])} of {a['task']}'s held-out NLL "
            f"increase ({a['nll_before']:.4g} -> {a['nll_after']:.4g}); {top['k']} random modules recover "
            f"{_share(top['recovered_random'])} (mean of {a['n_random']} draws). By k: {'; '.join(parts)}.")


def attribution_table(report: dict) -> Table | None:
    """The attribution rows: k, NLL with the update removed from the top-k and from random modules."""
    a = (report.get("data_aware") or {}).get("attribution")
    if not a:
        return None
    rows = [[fmt(r["k"]), fmt(r["nll_top"]), _share(r["recovered_top"]),
             fmt(sum(r["nll_random"]) / len(r["nll_random"]) if r["nll_random"] else None),
             _share(r["recovered_random"]), ", ".join(r["top_modules"][:3]) + (" ..." if len(r["top_modules"]) > 3 else "")]
            for r in a["rows"]]
    note = (f"{a['sentence']} Earlier task {a['task']} ({a['inputs_of']}), {a['before']} -> {a['after']}, "
            f"{a['n_pairs']} held-out pairs; NLL {fmt(a['nll_before'])} before, {fmt(a['nll_after'])} after.")
    return Table("data_aware_attribution", f"Attribution: removing {a['after']}'s update from chosen modules",
                 ["k", "NLL, top-k removed", "recovered", "NLL, k random removed (mean)", "recovered (random)",
                  "top modules"], rows, note)


def points_table(report: dict) -> Table | None:
    """Score vs forgetting of one run: every (earlier task, later update) point and the correlations."""
    s = (report.get("data_aware") or {}).get("score_forgetting")
    if not s or not s["points"]:
        return None
    rows = [[f"{p['update']} on {p['task']}" + (f" ({p['group']})" if p["group"] else ""), fmt(p["score"]),
             fmt(p["nll_forgetting"]), fmt(p["metric_forgetting"]) + (f" ({p['metric']})" if p.get("metric") else "")]
            for p in s["points"]]
    note = " ".join(s["sentences"]) + (" Forgetting: the change of the earlier task from the row before the "
                                       "update to its row (positive: worse).")
    return Table("data_aware_forgetting", "Data-aware score vs measured forgetting",
                 ["update on earlier task", "energy ratio", "NLL forgetting", "metric forgetting"], rows, note)
