"""Overlap of LoRI-S sparse masks between two adapters, per module and overall.

Masks are dicts of bool tensors keyed by lora_B file keys (PEFT names, ``...q_proj.lora_B.weight``), the
shape of the B they gate. A mask file object (``workbench.masking.file.load_mask(path)``, anything with a
``.tensors`` dict) or a path to such a file is accepted and normalised to ``{module_key: bool tensor}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.errors import FileFormatError, MismatchError, WorkbenchError
from workbench.keys import module_key


@dataclass(frozen=True)
class MaskOverlap:
    """Overlap of two boolean masks: counts and Jaccard index (None when both are empty)."""

    overlap: int
    union: int
    count_a: int
    count_b: int
    jaccard: float | None
    reason: str | None = None


def load_mask_tensors(path) -> dict[str, torch.Tensor]:
    """Read a mask file through ``workbench.masking.file`` (imported here: it is optional at import time).

    Raises:
        WorkbenchError: the mask-file module is not available in this installation.
    """
    try:
        from workbench.masking.file import load_mask
    except ImportError:
        raise WorkbenchError(f"{path}: cannot read mask files (workbench.masking.file is not available)") from None
    return dict(load_mask(path).tensors)


def normalise_mask(mask, where: str) -> dict[str, torch.Tensor]:
    """``{module_key: bool tensor}`` from a path, an object with ``.tensors``, or a dict by file key.

    Raises:
        FileFormatError: a value is not a tensor.
    """
    if isinstance(mask, (str, os.PathLike)):
        where, mask = str(mask), load_mask_tensors(Path(mask))
    tensors = getattr(mask, "tensors", mask)
    if not isinstance(tensors, Mapping):
        raise FileFormatError(f"{where}: a mask must be a dict of bool tensors keyed by lora_B keys")
    out = {}
    for key, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise FileFormatError(f"{where}: mask entry '{key}' is not a tensor")
        out[module_key(key)] = t.bool()
    return out


def check_mask_shapes(mask: dict[str, torch.Tensor], b_shapes: dict[str, tuple[int, int]], where: str) -> None:
    """Every mask entry must gate a B of the same shape in the adapter it belongs to.

    Raises:
        MismatchError: a mask names a module the adapter lacks, or its shape differs from lora_B's.
    """
    for m, t in mask.items():
        if m not in b_shapes:
            raise MismatchError(f"{where}: mask has module {m} that the adapter does not adapt")
        if tuple(t.shape) != tuple(b_shapes[m]):
            raise MismatchError(f"{where}: mask for {m} has shape {tuple(t.shape)}, lora_B has {tuple(b_shapes[m])}")


def mask_overlap(a: torch.Tensor, b: torch.Tensor) -> MaskOverlap:
    """Overlap of two masks of one module; shapes must agree (else overlap 0 with a reason, Jaccard None)."""
    if a.shape != b.shape:
        reason = f"mask shapes {tuple(a.shape)} and {tuple(b.shape)} differ"
        return MaskOverlap(0, 0, int(a.sum()), int(b.sum()), None, reason)
    inter, union = int((a & b).sum()), int((a | b).sum())
    jac = inter / union if union else None
    return MaskOverlap(inter, union, int(a.sum()), int(b.sum()), jac, None if union else "both masks are empty")


def total_overlap(parts: list[MaskOverlap]) -> MaskOverlap:
    """Sum per-module overlaps into one adapter-level overlap (Jaccard of the concatenated masks)."""
    inter = sum(p.overlap for p in parts)
    union = sum(p.union for p in parts)
    return MaskOverlap(inter, union, sum(p.count_a for p in parts), sum(p.count_b for p in parts),
                       inter / union if union else None, None if union else "no overlapping mask entries")
