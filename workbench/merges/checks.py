"""Checks that a set of adapters can be merged at all, before any strategy runs.

Every refusal is a WorkbenchError naming the adapter, the module or key, and the problem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import ConfigError, MismatchError, NonFiniteError
from workbench.keys import A_SUFFIX, B_SUFFIX

if TYPE_CHECKING:  # torch only at call time: strategies register their checks without importing it
    import torch

    from workbench.adapters.adapter import Adapter

SPARSE_B = 0.5  # above this fraction of exact zeros, B is taken to be a LoRI-S sparse factor


def label(adapter: Adapter) -> str:
    """How an adapter is named in messages: its path when it has one, else its name."""
    return str(adapter.path) if adapter.path else adapter.name


def check_mergeable(adapters: list[Adapter]) -> None:
    """Refuse inputs no strategy can merge.

    Raises:
        ConfigError: no adapters; DoRA adapters; keys other than lora_A/lora_B weights (bias, embeddings,
            modules_to_save).
        NonFiniteError: a tensor holds NaN or inf.
        MismatchError: different bases, module sets, or shapes.
    """
    from workbench.adapters.adapter import check_same_base
    from workbench.merges.primitives import all_finite

    if not adapters:
        raise ConfigError("merge needs at least one adapter")
    for a in adapters:
        _check_keys(a)
        bad = next((k for k in sorted(a.tensors) if not all_finite(a.tensors[k])), None)
        if bad is not None:
            raise NonFiniteError(f"{label(a)}: tensor '{bad}' has NaN or infinite values")
    check_same_base(adapters)
    _check_modules(adapters)


def _check_keys(adapter: Adapter) -> None:
    if adapter.config.get("use_dora") or any("lora_magnitude_vector" in k for k in adapter.tensors):
        raise ConfigError(f"{label(adapter)}: DoRA adapters cannot be merged (their magnitude vectors do not "
                          "combine with the A and B factors)")
    for key in sorted(adapter.tensors):
        if key.endswith((A_SUFFIX, B_SUFFIX)):
            continue
        what = "a bias key (lora_bias or bias != 'none')" if key.endswith("bias") else "not a lora_A/lora_B weight"
        raise ConfigError(f"{label(adapter)}: tensor '{key}' is {what}; merges combine only A and B factors")


def _shapes(adapter: Adapter) -> dict[str, tuple[int, int, int]]:
    """module -> (out, in, rank), checking A and B agree on the rank."""
    out = {}
    for m, f in adapter.factors().items():
        if f.A.dim() != 2 or f.B.dim() != 2 or f.A.shape[0] != f.B.shape[1]:
            raise MismatchError(f"{label(adapter)}: module {m} has lora_A {tuple(f.A.shape)} and lora_B "
                                f"{tuple(f.B.shape)}, whose ranks do not match")
        out[m] = (f.B.shape[0], f.A.shape[1], f.A.shape[0])
    return out


def _check_modules(adapters: list[Adapter]) -> None:
    first = _shapes(adapters[0])
    for other in adapters[1:]:
        shapes = _shapes(other)
        missing, extra = sorted(set(first) - set(shapes)), sorted(set(shapes) - set(first))
        if missing or extra:
            m, side = (missing[0], "lacks") if missing else (extra[0], "has extra")
            raise MismatchError(f"{label(other)} {side} module {m} compared with {label(adapters[0])} "
                                f"({len(missing) + len(extra)} modules differ): adapters must target the same modules")
        for m, (o, i, _) in first.items():
            if shapes[m][:2] != (o, i):
                raise MismatchError(f"{label(other)}: module {m} is {shapes[m][:2]} (out, in) but "
                                    f"{label(adapters[0])} has {(o, i)}")


def check_not_sparse(adapters: list[Adapter], weights=None, params=None) -> None:
    """Pruning strategies refuse LoRI-S adapters: their B is already sparse (most entries exactly zero).

    Raises:
        ConfigError: names the adapter and its fraction of zeros in B.
    """
    from workbench.merges.primitives import zero_fraction

    for a in adapters:
        frac = zero_fraction(a.tensors[k] for k in a.b_keys())
        if frac > SPARSE_B:
            raise ConfigError(f"{label(a)}: {frac:.0%} of B's entries are exactly zero (a sparse LoRI-S adapter); "
                              "pruning strategies would prune an already-sparse update: use concat, linear, svd "
                              "or lori_disjoint")


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and exactly equal values (after bringing b to a's dtype)."""
    import torch

    return a.shape == b.shape and torch.equal(a, b.to(a.dtype))
