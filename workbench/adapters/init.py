"""Seeded initialisation of A (its hash, recorded as ``a_hash``, is :func:`workbench.hashing.tensors_hash`)."""

from __future__ import annotations

import hashlib
import math

import torch


def module_seed(seed: int, module: str) -> int:
    """A per-module seed derived from the adapter seed and the module key (stable across runs)."""
    return int(hashlib.sha256(f"{seed}:{module}".encode()).hexdigest()[:15], 16)


def seeded_a(seed: int, module: str, rank: int, in_features: int) -> torch.Tensor:
    """A (rank, in) drawn like PEFT's default kaiming_uniform(a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)),
    from a CPU generator seeded per module, so it is regenerated bit for bit from (seed, module, shape)."""
    g = torch.Generator(device="cpu").manual_seed(module_seed(seed, module))
    bound = 1.0 / math.sqrt(in_features)
    return (torch.rand(rank, in_features, generator=g, dtype=torch.float32) * 2.0 - 1.0) * bound

