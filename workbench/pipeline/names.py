"""Registered names (methods, merge strategies, tasks, mask scopes) for validation, imported lazily.

The registries live in other packages and import torch; validation asks for them only when it checks
a name. A registry that is absent (not built in this checkout) or empty skips its check instead of
rejecting every name.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

# what -> (registry module, attribute, modules that register the built-ins)
SOURCES = {
    "method": ("workbench.adapters.registry", "METHODS", ("workbench.adapters.methods",)),
    "merge strategy": ("workbench.merges.registry", "MERGES", ("workbench.merges.strategies",
                                                                "workbench.merges.methods")),
    "task": ("workbench.data.registry", "TASKS", ("workbench.data.tasks",)),
    "mask scope": ("workbench.masking.scopes", "SCOPES", ()),
}


def _import_optional(module: str):
    """Import ``module``; None when it (or a parent package) does not exist."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise


@lru_cache(maxsize=None)
def registry(what: str):
    """The registry object for ``what`` (a key of :data:`SOURCES`), or None when unavailable or empty."""
    module, attr, builtins = SOURCES[what]
    mod = _import_optional(module)
    reg = getattr(mod, attr, None) if mod is not None else None
    if reg is None:
        return None
    for b in builtins:
        _import_optional(b)
    return reg if reg.names() else None


def known_names(what: str) -> list[str] | None:
    """Sorted registered names, or None when the check must be skipped."""
    reg = registry(what)
    return None if reg is None else reg.names()


def params_model(what: str, name: str):
    """The pydantic params model registered with ``name`` (e.g. a merge strategy's), or None."""
    reg = registry(what)
    if reg is None or name not in reg:
        return None
    params = reg.entry(name).params
    from pydantic import BaseModel

    return params if isinstance(params, type) and issubclass(params, BaseModel) else None
