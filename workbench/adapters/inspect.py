"""A summary of an adapter for people: method, ranks, parameter counts, fingerprint."""

from __future__ import annotations

from workbench.adapters.adapter import Adapter

A_PARTS = ("lora_A", "lora_embedding_A")
B_PARTS = ("lora_B", "lora_embedding_B")


def _part(key: str) -> str:
    """``...q_proj.lora_A.weight`` -> ``lora_A``; ``...embed_tokens.lora_embedding_B`` -> ``lora_embedding_B``."""
    return "lora_" + key.split(".lora_", 1)[1].split(".")[0] if ".lora_" in key else ""


def describe_adapter(adapter: Adapter, model=None) -> dict:
    """Return a flat dict: method, task, rank, alpha, modules, parameter and non-zero counts, fingerprint.

    'trainable' is what the method trained, as its :meth:`~workbench.adapters.method.Method.trainable`
    computes it from the files (all of A and B for LoRA, B for LoRI-D, the masked entries of B for LoRI-S,
    magnitudes for DoRA, P, E and Q for AdaLoRA ...); "unknown" for an adapter no registered method made
    (plain PEFT, merged) or whose files do not tell.

    Args:
        adapter: the adapter (any PEFT type a registered method saves).
        model: a base to check the adapter against (``workbench inspect --base``); its fingerprint is
            reported as ``base_check``.

    Raises:
        MismatchError: ``model`` is not the base the adapter was trained on (both fingerprints named).
    """
    from workbench.adapters.registry import METHODS, load_builtin_methods

    load_builtin_methods()
    parts = {_part(k): 0 for k in adapter.tensors}
    for k, t in adapter.tensors.items():
        parts[_part(k)] += t.numel()
    a_n = sum(parts.get(p, 0) for p in A_PARTS)
    b_keys = [k for k in adapter.tensors if _part(k) in B_PARTS]
    b_n = sum(adapter.tensors[k].numel() for k in b_keys)
    b_nz = sum(int((adapter.tensors[k] != 0).sum()) for k in b_keys)
    ranks = sorted({t.shape[0] for k, t in adapter.tensors.items() if _part(k) in A_PARTS})
    trainable = METHODS.get(adapter.method).trainable(adapter) if adapter.method in METHODS else None
    info = {
        "path": str(adapter.path), "method": adapter.method, "task": adapter.meta.get("task"),
        "rank": ranks[0] if len(ranks) == 1 else ranks, "alpha": adapter.config.get("lora_alpha"),
        "modules": len({k.split(".lora_")[0] for k in adapter.tensors if _part(k) in A_PARTS}),
        "parameters": sum(v for p, v in parts.items() if p), "factor_parameters": a_n + b_n,
        "trainable": trainable if trainable is not None else "unknown",
        "nonzero_B": b_nz, "B_density": round(b_nz / b_n, 6) if b_n else 0.0,
        "a_seed": adapter.meta.get("a_seed"), "base_fingerprint": adapter.fingerprint or "unrecorded (plain PEFT)",
        "mask_hash": adapter.meta.get("mask_hash"), "parent": adapter.meta.get("parent"),
    }
    if model is not None:
        from workbench.adapters.base_check import check_base
        from workbench.models.fingerprint import base_fingerprint

        check_base(adapter, model)
        info["base_check"] = f"matches {base_fingerprint(model)}" if adapter.fingerprint else "not recorded"
    return info
