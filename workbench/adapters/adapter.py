"""The in-memory adapter value: PEFT-format tensors + config + workbench sidecar."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.adapters.factors import ModuleFactors

from workbench.errors import FileFormatError, MismatchError
from workbench.io.adapter_dir import read_adapter_dir, resolve_adapter_dir, write_adapter_dir
from workbench.keys import file_key, module_key


@dataclass
class Adapter:
    """An adapter as files see it. ``tensors`` uses PEFT's keys; ``meta`` is workbench.json ({} for plain PEFT)."""

    tensors: dict[str, torch.Tensor]
    config: dict
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.meta.get("name") or (self.path.name if self.path else "adapter")

    @property
    def fingerprint(self) -> str | None:
        return self.meta.get("base_fingerprint")

    @property
    def method(self) -> str:
        return self.meta.get("method", "peft_lora")

    def modules(self) -> list[str]:
        """Module keys (``model.layers.0.self_attn.q_proj``) in sorted order."""
        return sorted({module_key(k) for k in self.tensors if k.endswith(".lora_A.weight")})

    def b_keys(self) -> list[str]:
        return sorted(k for k in self.tensors if k.endswith(".lora_B.weight"))

    def scaling(self, module: str) -> float:
        """PEFT's scaling for one module: alpha / r (alpha / sqrt(r) with rsLoRA), honouring patterns."""
        r = _pattern_value(self.config.get("rank_pattern") or {}, module, self.config.get("r", 8))
        alpha = _pattern_value(self.config.get("alpha_pattern") or {}, module, self.config.get("lora_alpha", 8))
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def factors(self) -> dict[str, ModuleFactors]:
        """Per-module ``ModuleFactors`` (float32 copies are not made; dtypes are as stored)."""
        out = {}
        for m in self.modules():
            a, b = self.tensors.get(file_key(m, "A")), self.tensors.get(file_key(m, "B"))
            if a is None or b is None:
                raise FileFormatError(f"{self.path or self.name}: module {m} lacks lora_A or lora_B")
            out[m] = ModuleFactors(a, b, self.scaling(m))
        return out

    def save(self, path, overwrite: bool = False) -> Path:
        self.path = write_adapter_dir(path, self.tensors, self.config, self.meta, overwrite=overwrite)
        return self.path


def _pattern_value(pattern: dict, module: str, default):
    # PEFT matches rank_pattern keys as regex suffixes of the module name.
    for key, value in pattern.items():
        if re.match(rf"(.*\.)?{key}$", module):
            return value
    return default


def load_adapter(path, peft_types: tuple[str, ...] = ("LORA",)) -> Adapter:
    """Read an adapter directory (workbench-made or plain PEFT) with every file check applied.

    ``peft_types``: the PEFT types the caller can use. Merges and analytics need LoRA's ``B @ A`` factors;
    loading onto a base (evaluation) takes every type a registered method saves
    (``registry.loadable_peft_types()``: AdaLoRA's SVD form too). Which tensors may be empty is the
    adapter's method's to say (:meth:`~workbench.adapters.method.Method.empty_modules`).
    """
    path = resolve_adapter_dir(path)
    tensors, config, meta = read_adapter_dir(path, empty_modules=_empty_modules)
    if config.get("peft_type", "LORA") not in peft_types:
        raise FileFormatError(f"{Path(path) / 'adapter_config.json'}: peft_type '{config.get('peft_type')}' is not "
                              f"usable here (expected {' or '.join(peft_types)})")
    return Adapter(tensors=tensors, config=config, meta=meta, path=Path(path))


def _empty_modules(config: dict, sidecar: dict) -> set[str]:
    from workbench.adapters.registry import method_of

    return method_of(Adapter(tensors={}, config=config, meta=sidecar)).empty_modules(config)


def check_same_base(adapters: list[Adapter]) -> str | None:
    """All adapters that record a base fingerprint must record the same one. Returns it (or None)."""
    seen = {(a.fingerprint, str(a.path or a.name)) for a in adapters if a.fingerprint}
    prints = {fp for fp, _ in seen}
    if len(prints) > 1:
        detail = "; ".join(f"{p}: {fp}" for fp, p in sorted(seen, key=lambda x: x[1]))
        raise MismatchError(f"adapters come from different base models ({detail})")
    return next(iter(prints), None)
