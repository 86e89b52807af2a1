"""Builders of random adapters for tests and benchmarks (no model needed)."""

from __future__ import annotations

import torch

from workbench.adapters.adapter import Adapter
from workbench.adapters.peft_config import config_dict, lora_config
from workbench.keys import file_key

LLAMA3_8B = dict(layers=32, hidden=4096, intermediate=14336, kv_dim=1024)
TINY = dict(layers=2, hidden=64, intermediate=128, kv_dim=32)


def llama_shapes(layers: int, hidden: int, intermediate: int, kv_dim: int) -> dict[str, tuple[int, int]]:
    """Module key -> (out, in) for the 7 Llama projections of every layer."""
    per_layer = {
        "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv_dim, hidden),
        "self_attn.v_proj": (kv_dim, hidden), "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (intermediate, hidden), "mlp.up_proj": (intermediate, hidden),
        "mlp.down_proj": (hidden, intermediate),
    }
    return {f"model.layers.{i}.{k}": v for i in range(layers) for k, v in per_layer.items()}


def random_adapter(shapes: dict[str, tuple[int, int]] | None = None, rank: int = 4, alpha: float = 8.0,
                   seed: int = 0, b_scale: float = 0.02, dtype=torch.float32, name: str = "random",
                   **config_kw) -> Adapter:
    """A PEFT-format adapter with random A and B (B non-zero, unlike a fresh LoRA)."""
    shapes = shapes or llama_shapes(**TINY)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m, (out_f, in_f) in shapes.items():
        tensors[file_key(m, "A")] = (torch.rand(rank, in_f, generator=g, dtype=torch.float32) * 2 - 1).div(in_f ** 0.5).to(dtype)
        tensors[file_key(m, "B")] = (torch.randn(out_f, rank, generator=g, dtype=torch.float32) * b_scale).to(dtype)
    projections = sorted({m.rsplit(".", 1)[-1] for m in shapes})
    cfg = config_dict(lora_config(rank=rank, alpha=alpha, target_modules=projections, **config_kw))
    return Adapter(tensors=tensors, config=cfg, meta={"name": name, "method": "lora"})
