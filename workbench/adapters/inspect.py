"""A summary of an adapter for people: method, ranks, parameter counts, fingerprint."""

from __future__ import annotations

from workbench.adapters.adapter import Adapter


def describe_adapter(adapter: Adapter) -> dict:
    """Return a flat dict: method, task, rank, alpha, modules, parameter and non-zero counts, fingerprint.

    'trainable' is what the method trained: all of A and B for LoRA, B for LoRI-D, the masked entries of
    B for LoRI-S (its ``mask_density`` is recorded in workbench.json when known).
    """
    factors = adapter.factors()
    a_n = sum(f.A.numel() for f in factors.values())
    b_n = sum(f.B.numel() for f in factors.values())
    b_nz = sum(int((f.B != 0).sum()) for f in factors.values())
    method = adapter.method
    trainable = {"lora": a_n + b_n, "lori_d": b_n, "lora_fa": b_n}.get(method)
    if method == "lori_s":
        trainable = adapter.meta.get("mask_kept", b_nz)
    ranks = sorted({f.rank for f in factors.values()})
    return {
        "path": str(adapter.path), "method": method, "task": adapter.meta.get("task"),
        "rank": ranks[0] if len(ranks) == 1 else ranks, "alpha": adapter.config.get("lora_alpha"),
        "modules": len(factors), "parameters": a_n + b_n, "trainable": trainable if trainable is not None else "unknown",
        "nonzero_B": b_nz, "B_density": round(b_nz / b_n, 6) if b_n else 0.0,
        "a_seed": adapter.meta.get("a_seed"), "base_fingerprint": adapter.fingerprint or "unrecorded (plain PEFT)",
        "mask_hash": adapter.meta.get("mask_hash"), "parent": adapter.meta.get("parent"),
    }
