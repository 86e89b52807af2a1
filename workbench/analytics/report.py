"""``build_report``: adapters (+ optional masks and forgetting matrix) -> report.json, report.md,
report.html and PNG figures in one directory. The engine's ``analyze`` stage and ``workbench report`` call it.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.adapters.adapter import Adapter, check_same_base, load_adapter
from workbench.analytics.data_aware_attribution import attribution_section
from workbench.analytics.data_aware_forgetting import group_points, score_forgetting
from workbench.analytics.data_aware_report import collect_for_report, data_aware_section, load_base_model, task_values
from workbench.analytics.data_moments import DEFAULT_LIMIT
from workbench.analytics.forgetting import load_forgetting
from workbench.analytics.increments import increment
from workbench.analytics.masks import check_mask_shapes, normalise_mask
from workbench.analytics.pairs import analyse
from workbench.analytics.serialize import report_dict
from workbench.analytics.training_curves import training_section
from workbench.errors import ConfigError
from workbench.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text


def name_adapters(adapters) -> dict[str, Adapter]:
    """``{unique name: Adapter}`` from a list or dict of Adapters or adapter directories.

    Repeated names get ``-2``, ``-3`` suffixes so that every adapter keeps its own row.

    Raises:
        ConfigError: no adapters were given.
    """
    items = list(adapters.items()) if isinstance(adapters, dict) else [(None, a) for a in adapters]
    if not items:
        raise ConfigError("report: at least one adapter is needed")
    named: dict[str, Adapter] = {}
    for name, a in items:
        a = load_adapter(a) if isinstance(a, (str, os.PathLike)) else a
        base, k = str(name or a.name), 2
        name = base
        while name in named:
            name, k = f"{base}-{k}", k + 1
        named[name] = a
    return named


def _mask_list(masks, names: list[str]) -> dict:
    if isinstance(masks, dict):
        unknown = sorted(set(masks) - set(names))
        if unknown:
            raise ConfigError(f"report: masks given for unknown adapters {unknown}; adapters: {names}")
        return masks
    masks = list(masks)
    if len(masks) != len(names):
        raise ConfigError(f"report: {len(masks)} masks for {len(names)} adapters (give one per adapter, or None)")
    return dict(zip(names, masks))


def prepare_masks(masks, named: dict[str, Adapter]) -> dict:
    """``{adapter name: {module key: bool tensor}}`` checked against each adapter's lora_B shapes.

    Raises:
        ConfigError: the masks do not line up with the adapters.
        MismatchError: a mask does not fit its adapter.
    """
    if masks is None:
        return {}
    out = {}
    for name, mask in _mask_list(masks, list(named)).items():
        if mask is None:
            continue
        adapter = named[name]
        where = f"mask of adapter '{name}'"
        tensors = normalise_mask(mask, where)
        check_mask_shapes(tensors, {m: tuple(f.B.shape) for m, f in adapter.factors().items()}, where)
        out[name] = tensors
    return out


def _check_increments(increments: dict[str, str], names: list[str]) -> dict[str, str]:
    unknown = sorted({n for pair in increments.items() for n in pair} - set(names))
    if unknown:
        raise ConfigError(f"report: increments name unknown adapters {unknown}; adapters: {names}")
    return increments


def adapter_info(a: Adapter) -> dict:
    """Identity fields of an adapter for the report."""
    return {"path": str(a.path) if a.path else None, "method": a.method, "rank": a.config.get("r"),
            "base_fingerprint": a.fingerprint, "n_modules": len(a.modules())}


def write_report(report: dict, out_dir: Path) -> dict:
    """Write the PNGs, report.md, report.html and report.json (last) into ``out_dir``. Returns ``files``."""
    # Imported here so that the analytics (and ``import workbench``) do not pull in matplotlib.
    from workbench.analytics.plots import render_all
    from workbench.analytics.render_html import render_html
    from workbench.analytics.render_md import render_md

    images = render_all(report)
    for name, png in images.items():
        atomic_write_bytes(out_dir / name, png)
    files = {"json": "report.json", "md": "report.md", "html": "report.html", "images": list(images)}
    report["files"] = files
    atomic_write_text(out_dir / "report.md", render_md(report, list(images)))
    atomic_write_text(out_dir / "report.html", render_html(report, images))
    atomic_write_json(out_dir / "report.json", report)
    return files


def _training(training: dict, named: dict[str, Adapter], forg) -> list[dict]:
    """The ``training`` section; each adapter's task from its ``workbench.json``."""
    unknown = sorted(set(training) - set(named))
    if unknown:
        raise ConfigError(f"report: training losses given for unknown adapters {unknown}; adapters: {list(named)}")
    tasks = {n: a.meta.get("task") for n, a in named.items()}
    return training_section(training, tasks, forg.to_json() if forg else None)


def _data_aware(factors: dict, moments: tuple, top_k: int, groups: dict, attribute: dict | None) -> dict:
    """The ``data_aware`` section with its score-vs-forgetting points (one per earlier task and later update
    of each forgetting matrix in ``groups``) and, with ``attribute`` (the keyword arguments of
    ``attribution_section`` but the section), the attribution of the chain's first task."""
    section = data_aware_section(factors, *moments, top_k)
    if groups:
        section["score_forgetting"] = score_forgetting([pt for g, f in groups.items()
                                                         for pt in group_points(section, f, g)])
    if attribute is not None:
        found = attribution_section(data_aware=section, **attribute)
        if found is not None:
            section["attribution"] = found
    return section


def build_report(adapters, masks=None, forgetting=None, out_dir=None, *, top_k: int = 10,
                 threads: int | None = 1, increments: dict[str, str] | None = None, data=None, base=None,
                 data_limit: int | None = None, data_dir=None, moments_cache=None, training=None,
                 attribute: bool = False, forgetting_groups: dict[str, dict] | None = None) -> dict:
    """Compare adapters pairwise on every shared module and write the report.

    Args:
        adapters: Adapters or adapter directories, as a list (names from each adapter) or a dict
            ``{name: adapter}``.
        masks: optional LoRI-S masks: a list aligned with ``adapters`` or a dict by name; each a mask
            file path, an object with ``.tensors``, a dict of bool tensors keyed by lora_B keys, or None.
        forgetting: optional forgetting matrix: a JSON path or a dict (see SCHEMA.md); with ``nll``,
            ``learned_at`` and ``row_adapters`` the report opens with a paragraph per task.
        out_dir: directory for report.json, report.md, report.html and the PNG figures.
        top_k: how many of the most interfering modules to list.
        threads: torch threads while analysing (1: many tiny LAPACK calls; see ``pairs.torch_threads``).
        increments: ``{adapter: the adapter it continued}`` (both names in ``adapters``): analyse what
            that stage added, not the cumulative snapshot (see ``increments.increment``).
        data: tasks for the data-aware section (``data_aware``): task names (each adapter whose
            workbench.json records one gets a row), ``"ADAPTER=TASK"`` strings, or ``{adapter: task}``.
            Each task's input second moments are collected on the base (no adapter) and cached.
        base: the base for the input moments: a name or BaseSpec, a loaded ``(model, tokenizer)``, or
            None (the adapters' recorded base). Only used with ``data``.
        data_limit: held-out pairs per task for the input moments (None: ``data_moments.DEFAULT_LIMIT``).
        data_dir: full-data root of the tasks (default: the shipped samples or ``$WORKBENCH_DATA``).
        moments_cache: cache root for the moments (default ``$WORKBENCH_CACHE``).
        training: ``{adapter name: per-step losses}`` (a list, a train summary dict with ``trace``, or a
            ``train_summary.json`` path): per-stage loss curves, smoothed, beside the held-out NLL before
            and after the stage (from ``forgetting``'s ``row_adapters`` and ``nll``).
        attribute: with ``data`` and ``increments``: remove the last update of the first chain from the
            top-k modules by data-aware energy on the chain's first task and from k random modules, and
            measure that task's held-out NLL (``data_aware_attribution``; ``data_limit`` pairs).
        forgetting_groups: ``{group: forgetting dict}`` (e.g. one per compared method) for the data-aware
            score-vs-forgetting points; default: ``forgetting`` alone (with ``row_adapters``).

    Returns:
        The report dict exactly as written to ``report.json`` (schema in SCHEMA.md).

    Raises:
        ConfigError: no adapters, no ``out_dir``, masks that do not line up with the adapters, or an
            ``increments`` entry naming an adapter that is not given; with ``data``: an unknown task or
            adapter, or a task no adapter records.
        MismatchError: adapters from different bases, mismatched module shapes, or ill-fitting masks;
            with ``data``: a base other than the adapters'.
        FileFormatError: unreadable adapters, masks, forgetting or training losses, or a corrupt moments
            cache file.
        DataError: a ``data`` task without held-out pairs.
    """
    if out_dir is None:
        raise ConfigError("report: out_dir is required")
    named = name_adapters(adapters)
    check_same_base(list(named.values()))
    mask_tensors = prepare_masks(masks, named)
    forg = load_forgetting(forgetting) if forgetting is not None else None
    snapshots = {n: a.factors() for n, a in named.items()}
    factors, infos = dict(snapshots), {n: adapter_info(a) for n, a in named.items()}
    for name, prev in _check_increments(increments or {}, list(named)).items():
        # from the snapshots, not from earlier increments: each entry is one stage's own update
        factors[name] = increment(snapshots[name], snapshots[prev])
        infos[name]["increment_of"] = prev
    moments = attribute_args = None
    if data is not None:  # before the analysis: an unknown task or a wrong base fails fast
        limit = DEFAULT_LIMIT if data_limit is None else data_limit
        model = load_base_model(base, named)  # once: the moments and the attribution share it
        moments = collect_for_report(named, factors, data, model, moments_cache, limit, data_dir=data_dir)
        if attribute:
            attribute_args = {"model": model[0], "tokenizer": model[1], "named": named, "limit": limit,
                              "increments": increments or {}, "task": task_values(data), "data_dir": data_dir}
    curves = _training(training, named, forg) if training else None  # before the analysis: fails fast
    analysis = analyse(factors, mask_tensors, threads=threads)
    report = report_dict(analysis, infos, forg, top_k)
    if curves is not None:
        report["training"] = curves
    if moments is not None:
        groups = forgetting_groups if forgetting_groups is not None else (
            {"": forg.to_json()} if forg is not None and forg.row_adapters else {})
        report["data_aware"] = _data_aware(factors, moments, top_k, groups, attribute_args)
    write_report(report, Path(out_dir))
    return report
