"""Per-module low-rank factors: the common currency of merges and analytics.

A LoRA module's update is ``delta_W = scaling * B @ A`` with ``A: (r, in)`` and ``B: (out, r)``.
Keys: a *module key* is the module's name as in the adapter file without PEFT's wrapper prefix and the
factor suffix, e.g. ``model.layers.3.self_attn.q_proj``; a *file key* is the full tensor key in
``adapter_model.safetensors``, e.g. ``base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PEFT_PREFIX = "base_model.model."
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


def file_key(module: str, factor: str) -> str:
    """``("model.layers.0.self_attn.q_proj", "B")`` -> the key in adapter_model.safetensors."""
    return f"{PEFT_PREFIX}{module}{A_SUFFIX if factor == 'A' else B_SUFFIX}"


def module_key(key: str) -> str:
    """Inverse of :func:`file_key` for lora_A / lora_B keys (other keys are returned unchanged)."""
    for suffix in (A_SUFFIX, B_SUFFIX):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    return key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key


def projection_of(module: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``q_proj``."""
    return module.rsplit(".", 1)[-1]


def layer_of(module: str) -> int | None:
    """``model.layers.3.self_attn.q_proj`` -> 3 (None when the name has no layer index)."""
    parts = module.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


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
