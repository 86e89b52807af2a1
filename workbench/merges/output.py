"""Turning merged per-module factors into an Adapter (config, tensors, record), and writing a merged model.

The config must make PEFT's loader reproduce each module's update: per-module ranks and scalings that
differ from the most common one go to ``rank_pattern``/``alpha_pattern`` under keys that match exactly one
module (PEFT's patterns are regex suffixes), and rsLoRA is switched off because scalings are written out.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from workbench.adapters.adapter import Adapter
from workbench.adapters.factors import ModuleFactors
from workbench.hashing import sha256_file, tensors_hash
from workbench.io.adapter_dir import SIDECAR, WEIGHTS
from workbench.io.atomic import atomic_directory, atomic_write_json
from workbench.keys import file_key
from workbench.merges.primitives import pattern_key


def _alpha(scaling: float, rank: int):
    alpha = scaling * rank
    return int(alpha) if float(alpha).is_integer() else alpha


def merged_config(template: dict, merged: dict[str, ModuleFactors]) -> dict:
    """adapter_config.json for the merged factors, from the first input's config (targets, base, task).

    Args:
        template: the first input adapter's config.
        merged: module -> output factors (each with its own rank and scaling).

    Returns:
        A config dict whose (r, lora_alpha, rank_pattern, alpha_pattern) give every module its rank and
        ``alpha / r == scaling``; use_rslora and use_dora are off.
    """
    ranks = {m: f.rank for m, f in merged.items()}
    alphas = {m: _alpha(f.scaling, f.rank) for m, f in merged.items()}
    r, alpha = Counter(zip(ranks.values(), alphas.values())).most_common(1)[0][0]
    cfg = dict(template)
    cfg.update(r=r, lora_alpha=alpha, use_rslora=False, use_dora=False, inference_mode=True,
               rank_pattern={pattern_key(m): v for m, v in sorted(ranks.items()) if v != r},
               alpha_pattern={pattern_key(m): v for m, v in sorted(alphas.items()) if v != alpha})
    return cfg


def merged_tensors(merged: dict[str, ModuleFactors], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """PEFT-keyed A and B tensors in ``dtype``, contiguous."""
    out = {}
    for m, f in merged.items():
        out[file_key(m, "A")] = f.A.to(dtype).contiguous()
        out[file_key(m, "B")] = f.B.to(dtype).contiguous()
    return out


def source_record(adapter: Adapter, weight: float) -> dict:
    """What the merged adapter records about one input: name, path, weight, and a hash of its weights."""
    rec = {"name": adapter.name, "path": str(adapter.path) if adapter.path else None, "weight": weight}
    weights_file = Path(adapter.path) / WEIGHTS if adapter.path else None
    if weights_file is not None and weights_file.is_file():
        rec["weights_sha256"] = (adapter.meta.get("files") or {}).get(WEIGHTS) or sha256_file(weights_file)
    else:
        rec["tensors_sha256"] = tensors_hash(adapter.tensors)
    return rec


def save_model_dir(model, tokenizer, out, record: dict) -> Path:
    """Write a transformers model directory (plus workbench.json) atomically (io.atomic.atomic_directory).

    Raises:
        WorkbenchError: ``out`` exists.
    """
    out = Path(out)
    with atomic_directory(out, if_exists="error") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / SIDECAR, record)
    return out
