"""Registered names (methods, merge strategies, tasks, mask scopes, stage kinds) for validation.

The registries live in other packages; validation imports them when it first checks a name (each
registry module, and the modules that register its built-ins, import no torch). A module that fails to
import is an error, not a skipped check: a broken method module must not turn "unknown method" off.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

# what -> (registry module, attribute, modules whose import registers the built-ins)
SOURCES = {
    "method": ("workbench.adapters.registry", "METHODS", ("workbench.adapters.methods",)),
    "merge strategy": ("workbench.merges.registry", "MERGES", ("workbench.merges",)),
    "task": ("workbench.data.registry", "TASKS", ()),  # the registry module registers the built-in tasks
    "mask scope": ("workbench.masking.scopes", "SCOPES", ()),
    "stage kind": ("workbench.pipeline.kinds", "STAGE_KINDS", ("workbench.stages.registry",)),
}


@lru_cache(maxsize=None)
def registry(what: str):
    """The registry object for ``what`` (a key of :data:`SOURCES`), built-ins registered.

    Raises:
        ImportError: a registry module or a built-in module fails to import (a real error).
    """
    module, attr, builtins = SOURCES[what]
    reg = getattr(importlib.import_module(module), attr)
    for b in builtins:
        importlib.import_module(b)
    return reg


def known_names(what: str) -> list[str]:
    """Sorted registered names of ``what`` (plugins loaded so far included)."""
    return registry(what).names()


def params_model(what: str, name: str):
    """The pydantic params model registered with ``name`` (e.g. a merge strategy's), or None."""
    reg = registry(what)
    if name not in reg:
        return None
    params = reg.entry(name).params
    from pydantic import BaseModel

    return params if isinstance(params, type) and issubclass(params, BaseModel) else None


def uses_mask(method: str) -> bool | None:
    """Whether a registered method trains inside a mask (its ``Method.uses_mask``); None when unknown."""
    reg = registry("method")
    return bool(reg.get(method).uses_mask) if method in reg else None
