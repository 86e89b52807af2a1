"""Tensor keys of an adapter file: the one place that knows PEFT's naming.

A *module key* is a module's name as in the adapter file without PEFT's wrapper prefix and the factor
suffix, e.g. ``model.layers.3.self_attn.q_proj``; a *file key* is the full tensor key in
``adapter_model.safetensors``, e.g. ``base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight``.

Why a module of its own: io (mask and adapter files), adapters, masking, merges and analytics all parse
these keys. It sits below all of them and imports nothing (no torch), so none of them has to import a
package above it to name a tensor.
"""

from __future__ import annotations

PEFT_PREFIX = "base_model.model."
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


def file_key(module: str, factor: str) -> str:
    """The key of one factor in ``adapter_model.safetensors``.

    Args:
        module: a module key, e.g. ``model.layers.0.self_attn.q_proj``.
        factor: ``"A"`` or ``"B"``.

    Returns:
        e.g. ``base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight``.
    """
    return f"{PEFT_PREFIX}{module}{A_SUFFIX if factor == 'A' else B_SUFFIX}"


def module_key(key: str) -> str:
    """Inverse of :func:`file_key` for lora_A / lora_B keys (other keys keep their suffix).

    Args:
        key: a tensor key from an adapter file.

    Returns:
        The key without the ``.lora_A.weight`` / ``.lora_B.weight`` suffix and the PEFT prefix.
    """
    for suffix in (A_SUFFIX, B_SUFFIX):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    return key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key


def owning_module(key: str) -> str:
    """The module key of any ``lora_*`` tensor key (``lora_A``, ``lora_E``, ``lora_embedding_B``, ...).

    Args:
        key: a tensor key from an adapter file.

    Returns:
        Everything before the first ``.lora_``, without the PEFT prefix.
    """
    return key.split(".lora_")[0].removeprefix(PEFT_PREFIX)


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
