"""Per-module low-rank factors: the common currency of merges and analytics.

A LoRA module's update is ``delta_W = scaling * B @ A`` with ``A: (r, in)`` and ``B: (out, r)``.
Tensor keys (module keys, file keys) are named in :mod:`workbench.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModuleFactors:
    """One adapted module: ``delta_W = scaling * B @ A``; A (r, in), B (out, r)."""

    A: torch.Tensor
    B: torch.Tensor
    scaling: float

    @property
    def rank(self) -> int:
        return self.A.shape[0]

    def delta(self) -> torch.Tensor:
        """The dense update, (out, r) @ (r, in) -> (out, in). Materialise only when unavoidable."""
        return self.scaling * (self.B @ self.A)
