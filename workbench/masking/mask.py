"""The mask value: which entries of each lora_B are trainable (LoRI-S, arXiv:2504.07448).

A :class:`Mask` is immutable: its tensor and metadata mappings are read-only views, and every operation
(union, a new meta field) returns a new Mask. Keys are the adapter's lora_B *file keys*
(``base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight``); each tensor is bool with B's shape
``(out, r)``; True marks a trainable entry.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Iterable, Mapping

import numpy as np
import torch

from workbench.errors import ConfigError, MismatchError
from workbench.masking.scopes import SCOPES

META_FIELDS = ("sparsity", "scope", "source_adapter_hash", "base_fingerprint", "excluded")


@dataclass(frozen=True, eq=False)
class Mask:
    """Bool tensors keyed by lora_B file keys (True = trainable) plus metadata.

    ``meta`` holds ``sparsity`` (float), ``scope`` (str), ``source_adapter_hash``, ``base_fingerprint``
    (str or None) and ``excluded`` (list of content hashes of the masks it was made disjoint from).
    """

    tensors: Mapping[str, torch.Tensor]
    meta: Mapping = field(default_factory=dict)

    def __post_init__(self):
        tensors = {k: self.tensors[k] for k in sorted(self.tensors)}
        for key, t in tensors.items():
            if t.dtype != torch.bool:
                raise ConfigError(f"mask tensor '{key}' has dtype {t.dtype}; mask tensors must be bool")
        # Read-only views: a Mask is a value and may be shared between stages and cached by hash.
        object.__setattr__(self, "tensors", MappingProxyType(tensors))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    def kept(self) -> int:
        """Number of trainable (True) entries."""
        return sum(int(t.sum()) for t in self.tensors.values())

    def total(self) -> int:
        """Number of entries over all tensors."""
        return sum(t.numel() for t in self.tensors.values())

    def density(self) -> float:
        """Fraction of entries that are trainable (1 - sparsity); 0.0 for an empty mask."""
        total = self.total()
        return self.kept() / total if total else 0.0

    def content_hash(self) -> str:
        """SHA-256 over sorted keys, shapes and packed bits; independent of metadata."""
        return self._content_hash

    @cached_property
    def _content_hash(self) -> str:
        h = hashlib.sha256(b"workbench-mask/1\n")
        for key, t in self.tensors.items():
            h.update(f"{key}:{tuple(t.shape)}\n".encode())
            h.update(np.packbits(t.detach().cpu().reshape(-1).numpy()).tobytes())
        return h.hexdigest()

    def with_meta(self, **updates) -> "Mask":
        """A new Mask with the same tensors and ``meta`` updated."""
        return Mask(dict(self.tensors), {**self.meta, **updates})

    def __eq__(self, other) -> bool:
        return isinstance(other, Mask) and self.content_hash() == other.content_hash()

    def __hash__(self) -> int:
        return hash(self.content_hash())


@dataclass(frozen=True)
class Overlap:
    """Entries trainable in both masks: ``per_key`` counts, their ``total``, and the Jaccard index."""

    per_key: dict[str, int]
    total: int
    union: int

    @property
    def jaccard(self) -> float:
        return self.total / self.union if self.union else 0.0


def _check_same_layout(a: Mask, b: Mask, what: str) -> None:
    if set(a.tensors) != set(b.tensors):
        diff = sorted(set(a.tensors) ^ set(b.tensors))
        raise MismatchError(f"{what}: masks have different keys (first difference: {diff[0]})")
    for key, t in a.tensors.items():
        if t.shape != b.tensors[key].shape:
            raise MismatchError(f"{what}: tensor '{key}' has shape {tuple(t.shape)} in one mask and "
                                f"{tuple(b.tensors[key].shape)} in the other")


def union(masks: Iterable[Mask]) -> Mask:
    """Entries trainable in any of ``masks``; meta records ``union_of`` (their content hashes).

    Raises:
        MismatchError: masks with different keys or shapes.
        ConfigError: no masks given.
    """
    masks = list(masks)
    if not masks:
        raise ConfigError("union of masks: no masks given")
    for m in masks[1:]:
        _check_same_layout(masks[0], m, "union of masks")
    tensors = {k: torch.stack([m.tensors[k] for m in masks]).any(dim=0) for k in masks[0].tensors}
    return Mask(tensors, {"union_of": [m.content_hash() for m in masks]})


def overlap(a: Mask, b: Mask) -> Overlap:
    """Count entries trainable in both ``a`` and ``b`` (per key and in total), and in either.

    Raises:
        MismatchError: masks with different keys or shapes.
    """
    _check_same_layout(a, b, "mask overlap")
    per_key = {k: int((t & b.tensors[k]).sum()) for k, t in a.tensors.items()}
    either = sum(int((t | b.tensors[k]).sum()) for k, t in a.tensors.items())
    return Overlap(per_key, sum(per_key.values()), either)


def natural_key(text: str) -> list:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def density_by(mask: Mask, group: str = "layer") -> dict[str, float]:
    """Density of each group (``layer``, ``projection``, ``module``, or any scope name), naturally sorted.

    Raises:
        ConfigError: unknown group name.
    """
    label = SCOPES.get(group)
    kept: dict[str, int] = {}
    total: dict[str, int] = {}
    for key, t in mask.tensors.items():
        g = label(key)
        kept[g] = kept.get(g, 0) + int(t.sum())
        total[g] = total.get(g, 0) + t.numel()
    return {g: kept[g] / total[g] for g in sorted(total, key=natural_key)}


def density_table(mask: Mask) -> dict[str, dict[str, float]]:
    """``{layer: {projection: density}}`` for the layer x projection display (layers naturally sorted)."""
    layer, projection = SCOPES.get("layer"), SCOPES.get("projection")
    counts: dict[str, dict[str, list[int]]] = {}
    for key, t in mask.tensors.items():
        cell = counts.setdefault(layer(key), {}).setdefault(projection(key), [0, 0])
        cell[0] += int(t.sum())
        cell[1] += t.numel()
    return {row: {p: k / n for p, (k, n) in counts[row].items()} for row in sorted(counts, key=natural_key)}
