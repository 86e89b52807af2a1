"""A stable fingerprint of a base model, recorded in every adapter so adapters from different bases are
never silently mixed (PEFT loads an adapter onto any same-shaped base without complaint).

The fingerprint hashes the architecture, every parameter's name and logical shape, and a sample of values
from the parameters bitsandbytes never quantizes (embeddings, norms). Values are rounded to bf16 first,
so the same base loaded in fp32, bf16 or nf4 has one fingerprint.
"""

from __future__ import annotations

import hashlib

import torch

ARCH_FIELDS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
               "num_attention_heads", "num_key_value_heads", "vocab_size")
SAMPLE = 64


def _logical_shape(p: torch.Tensor) -> tuple[int, ...]:
    # bitsandbytes' Params4bit stores packed uint8 data; its quant_state keeps the real shape.
    qs = getattr(p, "quant_state", None)
    return tuple(qs.shape) if qs is not None else tuple(p.shape)


def _sample_bytes(p: torch.Tensor) -> bytes:
    flat = p.detach().reshape(-1)
    n = min(SAMPLE, flat.numel())
    # integer spacing: a float linspace rounds past the end for tensors of ~2**24+ elements
    idx = torch.arange(n, dtype=torch.long) * (flat.numel() - 1) // max(n - 1, 1)
    return flat[idx].float().to(torch.bfloat16).view(torch.int16).numpy().tobytes()


def base_fingerprint(model) -> str:
    """Return ``"<model_type>-<16 hex>"`` for a transformers model (quantized or not).

    Args:
        model: a ``PreTrainedModel`` or a PEFT-wrapped one (the base is used either way).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = base.config
    h = hashlib.sha256()
    for f in ARCH_FIELDS:
        h.update(f"{f}={getattr(cfg, f, None)};".encode())
    for name, p in sorted(base.named_parameters(), key=lambda kv: kv[0]):
        if "lora_" in name or "modules_to_save" in name or ".ranknum." in name:  # adapter parameters (AdaLoRA's ranknum)
            continue
        # PEFT's wrappers rename the wrapped module's weights (LoRA layers, modules_to_save copies).
        name = name.replace(".base_layer", "").replace(".original_module", "")
        h.update(f"{name}:{_logical_shape(p)};".encode())
        if p.is_floating_point() and getattr(p, "quant_state", None) is None and ("embed" in name or "norm" in name):
            h.update(_sample_bytes(p))
    return f"{cfg.model_type}-{h.hexdigest()[:16]}"
