"""The report's data-aware section: which adapter stands for which task, the base and the input moments,
the ``data_aware`` JSON (SCHEMA.md) and its tables. ``report.build_report(..., data=TASKS)`` calls it."""

from __future__ import annotations

import os

from workbench.analytics.data_aware import DataAwarePair, PairEnergy, data_aware
from workbench.analytics.data_aware_attribution import attribution_table, points_table
from workbench.analytics.data_moments import DEFAULT_LIMIT, DEFAULT_MAX_TOKENS, InputMoments, task_moments
from workbench.analytics.tables import Table, fmt
from workbench.errors import ConfigError, MismatchError

PAIR_FIELDS = ("energy_ratio", "energy_ratio_baseline", "overlap", "overlap_baseline")


def _items(data) -> list[tuple]:
    """``(adapter or None, task name or Task)`` pairs of a ``data`` argument."""
    if isinstance(data, dict):
        return list(data.items())
    data = [data] if isinstance(data, str) else list(data)
    return [tuple(t.split("=", 1)) if isinstance(t, str) and "=" in t else (None, t) for t in data]


def task_values(data) -> dict:
    """``{task name: the task as given}``: a name, or a Task value (a custom task, or a registered one with a
    pipeline's options), which is what the held-out pairs are read from."""
    return {getattr(t, "name", t): t for _, t in _items(data)}


def resolve_rows(data, named: dict) -> dict[str, str]:
    """``{adapter name: task}``: which adapters get a row, and whose inputs stand for their task.

    Args:
        data: task names or Task values (each adapter whose ``workbench.json`` records the task's name gets
            a row), ``"ADAPTER=TASK"`` strings, or a dict ``{adapter: task}``; a mix is fine.
        named: the report's adapters by name.

    Raises:
        ConfigError: unknown task or adapter, or a task no adapter records.
    """
    from workbench.data.registry import get_task

    items = _items(data)
    if not items:
        raise ConfigError("report: data names no task")
    rows: dict[str, str] = {}
    for adapter, value in items:
        get_task(value)  # unknown names fail before any weight is loaded
        task = getattr(value, "name", value)
        if adapter is not None:
            if adapter not in named:
                raise ConfigError(f"report: data names unknown adapter '{adapter}'; adapters: {list(named)}")
            rows[adapter] = task
            continue
        hits = [n for n, a in named.items() if a.meta.get("task") == task]
        if not hits:
            recorded = {n: a.meta.get("task") for n, a in named.items()}
            raise ConfigError(f"report: no adapter records task '{task}' (recorded: {recorded}); "
                              f"name one as ADAPTER={task}")
        rows.update({n: task for n in hits if n not in rows})
    return {n: rows[n] for n in named if n in rows}


def _recorded_base(named: dict) -> str:
    from workbench.models.base import EMBEDDED

    bases = {a.meta.get("base") for a in named.values() if a.meta.get("base")}
    if len(bases) > 1:
        raise MismatchError(f"report: adapters record different bases {sorted(bases)}; pass base=")
    return next(iter(bases), EMBEDDED)


def load_base_model(base, named: dict):
    """``(model, tokenizer)`` of the base: given as a pair, a name / BaseSpec, or None (the adapters' recorded
    base, else the embedded default); checked against the adapters' fingerprints.

    Raises:
        MismatchError: the base is not the one the adapters were trained on.
    """
    import torch

    from workbench.models.base import load_base
    from workbench.models.fingerprint import base_fingerprint

    if isinstance(base, tuple):
        model, tokenizer = base
    else:
        from workbench.models.base import BaseSpec

        spec = base or _recorded_base(named)
        spec = spec if isinstance(spec, BaseSpec) else BaseSpec(spec)
        # the base as the adapters were trained on it: with the official `<PAD>` row when they were
        pads = {a.meta.get("pad_token") for a in named.values() if a.meta.get("pad_token")}
        if len(pads) == 1:
            spec = spec.with_pad_token(next(iter(pads)))
        model, tokenizer = load_base(spec)
        if torch.cuda.is_available():
            model = model.to("cuda")
    fp = base_fingerprint(model)
    for name, a in named.items():
        if a.fingerprint and a.fingerprint != fp:
            raise MismatchError(f"report: adapter '{name}' was trained on base {a.fingerprint}, the base given "
                                f"for the input moments is {fp}; pass the right base")
    return model, tokenizer


def collect_for_report(named: dict, factors: dict, data, base=None, cache: str | os.PathLike | None = None,
                       limit: int = DEFAULT_LIMIT, max_tokens: int = DEFAULT_MAX_TOKENS,
                       data_dir=None) -> tuple[dict[str, str], dict[str, InputMoments]]:
    """Rows and the input moments of every row task over every module any adapter adapts (cached)."""
    rows, values = resolve_rows(data, named), task_values(data)
    model, tokenizer = load_base_model(base, named)
    modules = sorted(set().union(*(set(f) for f in factors.values())))
    moments = {t: task_moments(model, tokenizer, values.get(t, t), modules, cache, limit, max_tokens, data_dir)
               for t in dict.fromkeys(rows.values())}
    return rows, moments


def _energy_json(e: PairEnergy) -> dict:
    out = {k: getattr(e, k) for k in PAIR_FIELDS}
    out.update(energy=e.energy, own_energy=e.own_energy, inner=e.inner, energy_baseline=e.energy_baseline)
    return out


def pair_json(p: DataAwarePair, top_k: int) -> dict:
    """One (inputs_of, update) entry: totals, the top modules by energy, every module."""
    total = p.total
    ranked = sorted(p.modules.items(), key=lambda kv: -kv[1].energy)[:top_k]
    top = [{"module": m, "energy": e.energy, "share": e.energy / total.energy if total.energy > 0 else None,
            "energy_ratio": e.energy_ratio, "overlap": e.overlap} for m, e in ranked]
    return {"inputs_of": p.inputs_of, "update": p.update, "task": p.task, "later": p.later,
            "n_modules": len(p.modules), **_energy_json(total), "top_modules": top,
            "modules": {m: _energy_json(e) for m, e in sorted(p.modules.items())}}


def data_aware_section(factors: dict, rows: dict[str, str], moments: dict[str, InputMoments],
                       top_k: int = 10) -> dict:
    """The report's ``data_aware`` object (SCHEMA.md, section Data-aware)."""
    pairs = data_aware(factors, rows, moments)
    names = list(factors)
    by = {(p.inputs_of, p.update): p.total for p in pairs}
    matrices = {k: [[getattr(by[(i, j)], k) if (i, j) in by else None for j in names] for i in names]
                for k in PAIR_FIELDS}
    return {"names": names, "rows": rows, "tasks": {t: m.info() for t, m in moments.items()},
            "matrices": matrices, "pairs": [pair_json(p, top_k) for p in pairs]}


def data_aware_tables(report: dict) -> list[Table]:
    """The per-pair score table and the modules that carry most of each later update's energy."""
    d = report.get("data_aware")
    if not d:
        return []
    rows, top = [], []
    for p in sorted(d["pairs"], key=lambda p: (not p["later"], d["names"].index(p["inputs_of"]))):
        rows.append([f"{p['update']} on {p['inputs_of']} ({p['task']} inputs)", "yes" if p["later"] else "no",
                     f"{fmt(p['energy_ratio'])} ({fmt(p['energy_ratio_baseline'])})",
                     f"{fmt(p['overlap'])} ({fmt(p['overlap_baseline'])})", fmt(p["n_modules"])])
        if p["later"] and p["top_modules"]:
            t = p["top_modules"][0]
            top.append([f"{p['update']} on {p['inputs_of']}", t["module"], fmt(t["share"]), fmt(t["energy_ratio"])])
    note = ("Energy ratio = Σ_m tr(ΔW_j Σ_i ΔW_jᵀ) / Σ_m tr(ΔW_i Σ_i ΔW_iᵀ): how strongly update j moves the "
            "module outputs on task i's held-out inputs, relative to task i's own update (Σ_i = XᵀX of each "
            "module's inputs on the base). Overlap: cosine between ΔW_i X_i and ΔW_j X_i. In brackets: a "
            "random update of the same norm. 'later': j comes after i in the adapter order (a chain's "
            "forward direction).")
    header = ["update on inputs of", "later", "energy ratio (random)", "overlap (random)", "modules"]
    tables = [Table("data_aware", "Data-aware interference (on the earlier task's inputs)", header, rows, note)]
    if top:
        tables.append(Table("data_aware_top", "Where each later update's energy on earlier inputs sits",
                            ["pair", "top module", "share of energy", "module energy ratio"], top))
    return tables + [t for t in (points_table(report), attribution_table(report)) if t]
