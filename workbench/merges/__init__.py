"""Merging LoRA adapters: one registered pure function per strategy (see README.md in this folder).

Importing this package registers the built-in strategies (found by scanning the package: a module that
calls ``@register_merge`` is one); the merge API (torch) is imported on first use, so listing or
validating strategy names needs no torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from workbench.merges.registry import MERGES, MergeContext, register_merge

# Modules of the package that are not strategies (their names are not registry keys).
NOT_STRATEGIES = {"api", "checks", "dora", "output", "params", "primitives", "pruned", "registry"}
_API = ("merge", "merge_adapters_into_base", "merge_into_base", "merge_to_dir", "plan_merge")

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in NOT_STRATEGIES:
        importlib.import_module(f"{__name__}.{_info.name}")


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module("workbench.merges.api"), name)
    raise AttributeError(f"module 'workbench.merges' has no attribute {name!r}")


__all__ = ["MERGES", "MergeContext", "merge", "merge_adapters_into_base", "merge_into_base", "merge_to_dir",
           "plan_merge", "register_merge"]
