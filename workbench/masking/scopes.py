"""Calibration scopes: which lora_B tensors share one magnitude threshold.

A scope maps a lora_B *file key* to the name of its group; calibration keeps the top fraction of |B|
inside each group separately. ``global`` (one group for every layer and projection) is the LoRI paper's
default (arXiv:2504.07448, Sec. 3.2). The same groupings label rows in ``workbench masks show``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from workbench.keys import layer_of, module_key, projection_of
from workbench.registry import Registry

SCOPES: Registry[Callable[[str], str]] = Registry("mask scope")

# Parent-module names that mark attention or MLP blocks across common decoder architectures.
_ATTENTION_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward")


@SCOPES.register("global", reference="arXiv:2504.07448")
def global_group(key: str) -> str:
    """One group: a single threshold across every layer and projection."""
    return "all"


@SCOPES.register("module")
def module_group(key: str) -> str:
    """``attention`` or ``mlp`` from the projection's parent module (its own parent name otherwise)."""
    parts = module_key(key).split(".")
    parent = parts[-2].lower() if len(parts) > 1 else ""
    if any(w in parent for w in _ATTENTION_WORDS):
        return "attention"
    if any(w in parent for w in _MLP_WORDS):
        return "mlp"
    return parent or "other"


@SCOPES.register("projection")
def projection_group(key: str) -> str:
    """The projection name: ``q_proj``, ``k_proj``, ..., ``down_proj``."""
    return projection_of(module_key(key))


@SCOPES.register("layer")
def layer_group(key: str) -> str:
    """The decoder layer index as text (``other`` for modules outside ``layers.N``)."""
    layer = layer_of(module_key(key))
    return "other" if layer is None else str(layer)


@SCOPES.register("matrix")
def matrix_group(key: str) -> str:
    """Each lora_B tensor alone."""
    return key


def group_keys(keys: Iterable[str], scope: str) -> dict[str, list[str]]:
    """Group file keys by ``scope``; each group's keys are sorted (this order defines flat indices).

    Raises:
        ConfigError: unknown scope (with the valid names).
    """
    label = SCOPES.get(scope)
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(keys):
        groups[label(key)].append(key)
    return dict(groups)
