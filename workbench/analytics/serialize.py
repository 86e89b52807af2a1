"""Analysis dataclasses -> the ``report.json`` dict documented in SCHEMA.md (plain JSON types only)."""

from __future__ import annotations

from dataclasses import asdict

from workbench.analytics.aggregate import (
    PairSummary, global_top_modules, grid_means, pair_matrix, summarise_pair, summarise_spectra,
)
from workbench.analytics.constants import constant_metrics, constants_sentence
from workbench.analytics.forgetting import Forgetting
from workbench.analytics.overview import overview
from workbench.analytics.pairs import Analysis, ModulePair

SCHEMA_VERSION = 1
MATRIX_METRICS = {"a_mean_sq_cos": True, "b_mean_sq_cos": True, "delta_cosine": True, "interference": False,
                  "cross_energy": False, "mask_jaccard": True}
GRID_METRICS = ("interference", "b_mean_sq_cos", "a_mean_sq_cos", "abs_delta_cosine", "mask_jaccard")


def _str_keys(d: dict) -> dict:
    return {str(k): v for k, v in d.items()}


def module_pair_json(m: ModulePair) -> dict:
    """One module's pair metrics (the module key is the dict key, so it is not repeated)."""
    out = asdict(m)
    out.pop("module")
    out["reasons"] = list(m.reasons)
    mask = out.pop("mask")
    if mask is not None:
        out["mask_overlap"] = mask
        out["mask_jaccard"] = mask["jaccard"]
    return out


def summary_json(s: PairSummary) -> dict:
    """A pair summary with layer keys as strings (JSON object keys)."""
    out = asdict(s)
    out["per_layer"] = _str_keys(s.per_layer)
    return out


def adapter_json(name: str, info: dict, analysis: Analysis) -> dict:
    """One adapter's entry: identity, spectrum per module and its aggregates."""
    spectra = analysis.spectra[name]
    summary = summarise_spectra(spectra)
    summary["per_layer_effective_rank"] = _str_keys(summary["per_layer_effective_rank"])
    return dict(info, name=name, summary=summary, modules={m: asdict(s) for m, s in spectra.items()})


def report_dict(analysis: Analysis, infos: dict[str, dict], forgetting: Forgetting | None = None,
                top_k: int = 10) -> dict:
    """Build the full report dict.

    Args:
        analysis: the output of :func:`workbench.analytics.pairs.analyse`.
        infos: adapter name -> identity fields (path, method, rank, base_fingerprint).
        forgetting: optional forgetting matrix.
        top_k: how many most-interfering modules to list per pair and overall.
    """
    summaries = [summarise_pair(p, top_k) for p in analysis.pairs]
    pairs = [{"a": p.a, "b": p.b, "only_a": p.only_a, "only_b": p.only_b, "summary": summary_json(s),
              "modules": {m: module_pair_json(mp) for m, mp in sorted(p.modules.items())}}
             for p, s in zip(analysis.pairs, summaries)]
    matrices = {"names": list(analysis.names)}
    for metric, sym in MATRIX_METRICS.items():
        if metric != "mask_jaccard" or analysis.masks_given:
            matrices[metric] = pair_matrix(analysis, summaries, metric, symmetric=sym)
    grid = {}
    for metric in GRID_METRICS:
        if metric != "mask_jaccard" or analysis.masks_given:
            layers, projs, values = grid_means(analysis, metric)
            grid.update(layers=layers, projections=projs)
            grid[metric] = values
    report = {
        "schema_version": SCHEMA_VERSION, "adapters": [adapter_json(n, infos.get(n, {}), analysis) for n in analysis.names],
        "pairs": pairs, "matrices": matrices, "grid": grid, "masks_given": analysis.masks_given,
        "top_modules": global_top_modules(analysis, top_k),
        "forgetting": forgetting.to_json() if forgetting else None,
    }
    report["constants"] = constant_metrics(report)
    report["overview"] = overview(report, constants_sentence(report["constants"]))
    return report
