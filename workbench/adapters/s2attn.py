"""Shifted sparse attention (S2-Attn, LongLoRA: Chen et al. 2023, arXiv:2309.12307) for training.

The sequence is cut into groups of ``G`` tokens and attention is causal *within* a group. Half of the
heads use groups shifted by ``G // 2`` tokens, so information flows between neighbouring groups through
those heads. Cost is ``O(t * G)`` instead of ``O(t^2)``; at inference the model uses full attention.

Shifted groups here are ``[0, G/2), [G/2, 3G/2), ...``: the official implementation rolls the tokens
instead, which puts the first half-group in one group with the last half-group (and so lets a causal
model's first tokens attend to the end of the sequence); padding at the ends avoids that wrap-around.
With a single group (``G >= t``) there is no neighbour to exchange with: S2-Attn is full causal attention.

The attention is registered with transformers' ``AttentionInterface`` as ``"s2attn"`` (with the SDPA mask
builder, so padded and packed batches keep their masks); a module in eval mode falls back to SDPA.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NAME = "s2attn"


def group_size(t: int, size: int | None = None, ratio: float = 0.25) -> int:
    """Tokens per group: ``size`` if given, else ``ceil(ratio * t)`` (LongLoRA uses 1/4), at least 1."""
    return max(1, int(size) if size else math.ceil(ratio * t))


def s2_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, mask: torch.Tensor | None = None,
                 scale: float | None = None, dropout: float = 0.0) -> torch.Tensor:
    """Grouped causal attention with half the heads shifted by half a group.

    Args:
        q, k, v: ``(b, h, t, d)`` (k and v already repeated to ``h`` heads).
        group: tokens per group.
        mask: optional ``(b|1, 1, t, t)`` bool, True = may attend (padding, packed sequences); it is
            intersected with the group pattern.
        scale, dropout: as for ``F.scaled_dot_product_attention``.

    Returns:
        ``(b, h, t, d)``.
    """
    b, h, t, d = q.shape
    if group >= t:  # one group: full causal attention
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale,
                                              is_causal=mask is None)
    plain = h // 2  # LongLoRA shifts the second half of the heads
    out = [_grouped(q[:, :plain], k[:, :plain], v[:, :plain], group, 0, mask, scale, dropout),
           _grouped(q[:, plain:], k[:, plain:], v[:, plain:], group, group // 2, mask, scale, dropout)]
    return torch.cat(out, dim=1)


def _grouped(q, k, v, group: int, offset: int, mask, scale, dropout) -> torch.Tensor:
    b, h, t, d = q.shape
    n = math.ceil((t + offset) / group)
    tail = n * group - t - offset
    # Pad `offset` tokens in front and `tail` behind so that groups start at -offset: (b, h, n*G, d).
    qp, kp, vp = (F.pad(x, (0, 0, offset, tail)) for x in (q, k, v))
    allowed = _block_mask(mask, t, group, offset, tail, n, q.device)  # (b|1, n, G, G)
    allowed = allowed[:, None].expand(allowed.shape[0], h, n, group, group).reshape(-1, h * n, group, group)
    # (b, h, n*G, d) -> (b, h*n, G, d): each group is its own attention problem.
    o = F.scaled_dot_product_attention(*(x.reshape(b, h * n, group, d) for x in (qp, kp, vp)),
                                       attn_mask=allowed, dropout_p=dropout, scale=scale)
    return o.reshape(b, h, n * group, d)[:, :, offset:offset + t]


def _block_mask(mask, t: int, group: int, offset: int, tail: int, n: int, device) -> torch.Tensor:
    size = n * group
    eye = torch.eye(group, dtype=torch.bool, device=device)
    if mask is None:
        real = torch.zeros(size, dtype=torch.bool, device=device)
        real[offset:offset + t] = True
        causal = torch.ones(group, group, dtype=torch.bool, device=device).tril()
        blocks = (causal & real.view(n, 1, group))[None]  # (1, n, G, G): causal, real keys only
    else:
        full = mask if mask.dtype == torch.bool else mask == 0  # additive float mask: 0 = attend
        full = F.pad(full[:, 0], (offset, tail, offset, tail), value=False)  # (b, size, size)
        blocks = full.view(-1, n, group, n, group).diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2)
    # Padding queries attend to themselves only, so no softmax row is empty; their outputs are dropped.
    return blocks | eye


def s2attn_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """transformers attention function (``AttentionInterface``): S2-Attn in training, SDPA in eval.

    ``query`` is ``(b, h, t, d)``, ``key``/``value`` ``(b, kv_heads, t, d)``; returns ``((b, t, h, d), None)``.
    The group is ``module.s2_group_size`` tokens if set, else ``module.s2_group_ratio`` (default 1/4) of t.
    """
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    t = query.shape[2]
    if not module.training or key.shape[2] != t:  # inference (or a KV cache): standard attention
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    g = group_size(t, getattr(module, "s2_group_size", None), getattr(module, "s2_group_ratio", 0.25))
    out = s2_attention(query, key, value, g, mask=attention_mask, scale=scaling, dropout=dropout)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Register ``"s2attn"`` with transformers (attention function and SDPA's mask builder); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, s2attn_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_s2attn(model, group_size: int | None = None, ratio: float = 0.25) -> None:
    """Switch ``model`` (a transformers model, before PEFT wraps it) to S2-Attn for training."""
    register()
    model.set_attn_implementation(NAME)
    for mod in model.modules():
        if hasattr(mod, "num_key_value_groups"):  # the attention modules
            mod.s2_group_size, mod.s2_group_ratio = group_size, ratio


def use_standard_attention(model, implementation: str = "sdpa") -> None:
    """Switch back to a standard attention implementation (eval mode already uses SDPA)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(implementation)
