"""LoRI-S mask enforcement by construction.

B is re-parametrised as ``frozen.masked_scatter(mask, values)``: only ``values`` (one entry per True in the
mask) is a trainable parameter; the entries outside the mask live in a frozen tensor that no optimizer
ever sees. So they stay *bitwise* unchanged whatever the optimizer does (AdamW's decoupled weight decay,
momentum from earlier steps, gradient clipping), and optimizer state is kept only for the masked entries
(about 10% of B at 90% sparsity). Masking gradients instead would still let weight decay move them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


class MaskedB(nn.Module):
    """Parametrisation of lora_B.weight (out, r): masked entries come from ``values``; the rest are frozen."""

    def __init__(self, mask: torch.Tensor, values: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool), persistent=False)
        self.values = nn.Parameter(values.detach().clone())  # (mask.sum(),)

    def forward(self, frozen: torch.Tensor) -> torch.Tensor:
        # masked_scatter fills True positions in row-major order; False positions are frozen's own bits.
        return frozen.masked_scatter(self.mask, self.values.to(frozen.dtype))


def apply_mask(linear: nn.Linear, mask: torch.Tensor) -> MaskedB:
    """Re-parametrise ``linear.weight`` under ``mask`` (same shape, bool). Returns the parametrisation."""
    weight = linear.weight.detach()
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != B shape {tuple(weight.shape)}")
    mask = mask.to(weight.device)
    param = MaskedB(mask, weight[mask])
    parametrize.register_parametrization(linear, "weight", param, unsafe=True)
    linear.parametrizations.weight.original.requires_grad_(False)
    return param
