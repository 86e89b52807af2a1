"""Orthogonality and interference analytics between adapter subspaces, and the report built on them.

Pure functions returning dataclasses (``module_stats``, ``subspace``, ``interference``, ``spectrum``,
``masks``, ``pairs``, ``aggregate``); rendering is kept apart (``plots``, ``tables``, ``render_md``,
``render_html``); ``report.build_report`` writes the files. Everything is computed from the low-rank
factors (QR of the r-column factors, then r x r work); ``dense`` is the materialising reference used by
the tests and the benchmark. The report.json schema is in SCHEMA.md next to this file.
"""

from workbench.analytics.interference import (
    delta_cosine, delta_inner, linear_cross_energy, projection_interference,
)
from workbench.analytics.masks import MaskOverlap, mask_overlap
from workbench.analytics.module_stats import Basis, ModuleStats, orthonormal_basis, prepare
from workbench.analytics.pairs import Analysis, ModulePair, analyse, compare_modules
from workbench.analytics.report import build_report
from workbench.analytics.spectrum import Spectrum, delta_spectrum, effective_rank
from workbench.analytics.subspace import SubspaceComparison, principal_angles, random_baseline

__all__ = [
    "Analysis", "Basis", "MaskOverlap", "ModulePair", "ModuleStats", "Spectrum", "SubspaceComparison",
    "analyse", "build_report", "compare_modules", "delta_cosine", "delta_inner", "delta_spectrum",
    "effective_rank", "linear_cross_energy", "mask_overlap", "orthonormal_basis", "prepare",
    "principal_angles", "projection_interference", "random_baseline",
]
