"""Checks that a mask fits its adapter, that masks are disjoint, and that a density is what was asked.

Each raises a one-line :class:`~workbench.errors.MismatchError` naming where the mask came from and the
first offending key.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from workbench.errors import MismatchError


def _tensors(mask) -> Mapping[str, torch.Tensor]:
    return mask.tensors if hasattr(mask, "tensors") and not isinstance(mask, Mapping) else mask


def _b_tensors(adapter_or_b_tensors) -> Mapping[str, torch.Tensor]:
    if hasattr(adapter_or_b_tensors, "b_keys"):  # an Adapter
        return {k: adapter_or_b_tensors.tensors[k] for k in adapter_or_b_tensors.b_keys()}
    return adapter_or_b_tensors


def _listed(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def check_mask_matches(mask, adapter_or_b_tensors, where: str) -> None:
    """The mask has exactly the adapter's lora_B keys, the same shapes, and bool dtype.

    Args:
        mask: a :class:`~workbench.masking.mask.Mask` or a mapping of key -> tensor.
        adapter_or_b_tensors: an Adapter (its lora_B tensors are used) or a mapping key -> B tensor.
        where: what to name in the error (the mask file's path).

    Raises:
        MismatchError: missing or unexpected keys (listed), a shape or dtype that differs (first key).
    """
    tensors, b = _tensors(mask), _b_tensors(adapter_or_b_tensors)
    missing, extra = sorted(set(b) - set(tensors)), sorted(set(tensors) - set(b))
    if missing or extra:
        parts = ([f"missing keys {_listed(missing)}"] if missing else []) + \
                ([f"unexpected keys {_listed(extra)}"] if extra else [])
        raise MismatchError(f"{where}: mask does not match the adapter's lora_B tensors: " + "; ".join(parts))
    for key in sorted(b):
        t = tensors[key]
        if tuple(t.shape) != tuple(b[key].shape):
            raise MismatchError(f"{where}: tensor '{key}' has shape {tuple(t.shape)} but the adapter's "
                                f"lora_B has shape {tuple(b[key].shape)}")
        if t.dtype != torch.bool:
            raise MismatchError(f"{where}: tensor '{key}' has dtype {t.dtype}; mask tensors must be bool")


def check_disjoint(masks: Sequence, names: Sequence[str]) -> None:
    """No entry is trainable in two of ``masks`` (same keys and shapes assumed; check them first).

    Raises:
        MismatchError: names the first overlapping pair, the first shared key, and the shared count.
    """
    masks = [_tensors(m) for m in masks]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            _check_pair(masks[i], masks[j], names[i], names[j])


def _check_pair(a, b, name_a: str, name_b: str) -> None:
    first = None
    count = 0
    for key in sorted(a):
        if key not in b or a[key].shape != b[key].shape:
            raise MismatchError(f"masks '{name_a}' and '{name_b}' differ in layout at '{key}'")
        shared = int((a[key] & b[key]).sum())
        if shared and first is None:
            first = key
        count += shared
    if first is not None:
        raise MismatchError(f"masks '{name_a}' and '{name_b}' overlap: {count} entries trainable in both "
                            f"(first at '{first}')")


def check_density(mask, sparsity: float, where: str, tolerance: float | None = None) -> None:
    """The mask keeps a ``1 - sparsity`` fraction of entries, up to rounding.

    Args:
        tolerance: allowed |density - (1 - sparsity)|; default: half an entry per tensor, the most
            per-group rounding can add up to.

    Raises:
        MismatchError: the density is further from ``1 - sparsity`` than ``tolerance``.
    """
    tensors = _tensors(mask)
    total = sum(t.numel() for t in tensors.values())
    kept = sum(int(t.sum()) for t in tensors.values())
    if total == 0:
        raise MismatchError(f"{where}: mask has no entries")
    tol = tolerance if tolerance is not None else 0.5 * len(tensors) / total
    density = kept / total
    if abs(density - (1.0 - sparsity)) > tol + 1e-12:
        raise MismatchError(f"{where}: mask density {density:.6f} ({kept} of {total} entries) does not match "
                            f"sparsity {sparsity} (expected density {1.0 - sparsity:.6f})")
