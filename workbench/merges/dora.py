"""DoRA adapters in merges: only the identity merge is exact.

A DoRA module computes ``m * (W + s B A) / |W + s B A|`` with a learned magnitude ``m`` per output row;
magnitudes of different adapters do not combine with their factors, so merging several DoRA adapters is
refused (``checks.py``). One DoRA adapter with weight 1 through a strategy that returns its ``B A``
unchanged (concat, linear, task arithmetic, svd at full rank, pruning at density 1...) keeps its magnitudes
valid: the merge runs on the factors and the magnitudes are carried over after checking the delta did not move.
"""

from __future__ import annotations

import torch

from workbench.adapters.adapter import Adapter, load_adapter
from workbench.errors import ConfigError

MAGNITUDE = "lora_magnitude_vector"


def is_dora(adapter: Adapter) -> bool:
    return bool(adapter.config.get("use_dora")) or any(MAGNITUDE in k for k in adapter.tensors)


def single_dora(adapters: list, weights) -> Adapter | None:
    """The adapter when the merge is one DoRA adapter with weight 1 (else None)."""
    if len(adapters) != 1 or (weights is not None and list(weights) != [1.0]):
        return None
    a = adapters[0] if isinstance(adapters[0], Adapter) else load_adapter(adapters[0])
    return a if is_dora(a) else None


def strip_magnitudes(adapter: Adapter) -> Adapter:
    tensors = {k: v for k, v in adapter.tensors.items() if MAGNITUDE not in k}
    return Adapter(tensors=tensors, config={**adapter.config, "use_dora": False}, meta=adapter.meta, path=adapter.path)


def restore_magnitudes(merged: Adapter, source: Adapter, strategy_name: str) -> Adapter:
    """Carry the magnitudes over when every module's delta is unchanged; refuse otherwise."""
    before, after = source.factors(), merged.factors()
    for module, f in before.items():
        d0, d1 = f.delta().float(), after[module].delta().float()
        if not torch.allclose(d0, d1, rtol=1e-5, atol=1e-7 * max(1.0, float(d0.abs().max()))):
            raise ConfigError(f"{source.path or source.name}: DoRA adapter: strategy '{strategy_name}' changes the "
                              f"update of {module}, and DoRA magnitudes cannot follow; only identity merges are exact")
    merged.tensors.update({k: v for k, v in source.tensors.items() if MAGNITUDE in k})
    merged.config["use_dora"] = True
    return merged
