"""The contract every adapter method implements; the built-in methods subclass :class:`Method`."""

from __future__ import annotations


import torch
from torch import nn

from workbench.adapters.adapter import Adapter
from workbench.adapters.factors import file_key
from workbench.adapters.init import seeded_a
from workbench.adapters.peft_config import lora_config
from workbench.adapters.spec import AdapterSpec
from workbench.errors import ConfigError, MismatchError


class Method:
    """A LoRA-family method on top of PEFT's LoRA layers.

    Subclasses set ``name``, ``train_a`` and ``uses_mask`` and may override :meth:`peft_config`,
    :meth:`param_groups` and :meth:`on_step`.
    """

    name = "method"
    train_a = True
    uses_mask = False

    def peft_config(self, spec: AdapterSpec, base_name: str | None = None):
        return lora_config(rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules,
                           dropout=spec.dropout, use_rslora=spec.use_rslora, base_model=base_name)

    def attach(self, model, spec: AdapterSpec, init: Adapter | None = None,
               mask: dict[str, torch.Tensor] | None = None, base_name: str | None = None):
        """Wrap ``model`` (in place) with PEFT LoRA layers initialised for this method.

        Args:
            model: a transformers causal LM.
            spec: the adapter settings.
            init: an adapter to continue (its A and B are loaded; continual learning).
            mask: lora_B file key -> bool tensor of trainable entries (methods with ``uses_mask``).

        Raises:
            ConfigError: a mask given to a method that takes none, or missing for one that needs it.
            MismatchError: ``init`` does not fit the model or the spec.
        """
        from peft import get_peft_model

        if mask is not None and not self.uses_mask:
            raise ConfigError(f"method '{self.name}' takes no mask (use lori_s)")
        if mask is None and self.uses_mask:
            raise ConfigError(f"method '{self.name}' needs a mask (calibrate one from a lori_d adapter)")
        pm = get_peft_model(model, self.peft_config(spec, base_name))
        self.init_weights(pm, spec, init)
        self.set_trainable(pm, spec, mask)
        return pm

    def init_weights(self, pm, spec: AdapterSpec, init: Adapter | None) -> None:
        """A from the spec's seed (bit-reproducible), B zero; or both from ``init``."""
        with torch.no_grad():
            for key, layer in lora_layers(pm).items():
                a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
                if init is None:
                    a.copy_(seeded_a(spec.a_seed, key, a.shape[0], a.shape[1]).to(a.dtype))
                    b.zero_()
                else:
                    a.copy_(_init_tensor(init, key, "A", a.shape))
                    b.copy_(_init_tensor(init, key, "B", b.shape))

    def set_trainable(self, pm, spec: AdapterSpec, mask) -> None:
        for layer in lora_layers(pm).values():
            layer.lora_A["default"].weight.requires_grad_(self.train_a)
            layer.lora_B["default"].weight.requires_grad_(True)

    def param_groups(self, pm, spec: AdapterSpec, lr: float, weight_decay: float) -> list[dict]:
        params = [p for p in pm.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]

    def on_train_start(self, pm, total_steps: int) -> None:
        """Called once the loop knows its number of optimizer steps (AdaLoRA's budget schedule needs it)."""

    def loss_extra(self, pm) -> torch.Tensor | None:
        """A per-step term added to the training loss (AdaLoRA's orthogonality regulariser), or None."""
        return None

    def on_step(self, pm, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared (AdaLoRA's rank allocation
        reads them)."""


def lora_layers(pm) -> dict[str, nn.Module]:
    """Module key (``model.layers.0.self_attn.q_proj``) -> PEFT LoraLayer, for the default adapter."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, mod in pm.named_modules():
        # AdaLoRA's layers hold bare Parameters (SVD triplets), not A/B Linear modules: not LoRA factors.
        if isinstance(mod, LoraLayer) and "default" in mod.lora_A and isinstance(mod.lora_A["default"], nn.Module):
            out[name[len("base_model.model."):] if name.startswith("base_model.model.") else name] = mod
    return out


def _init_tensor(init: Adapter, module: str, factor: str, shape) -> torch.Tensor:
    key = file_key(module, factor)
    where = init.path or init.name
    if key not in init.tensors:
        raise MismatchError(f"{where}: adapter to continue has no tensor '{key}' (different target modules?)")
    t = init.tensors[key]
    if tuple(t.shape) != tuple(shape):
        raise MismatchError(f"{where}: '{key}' has shape {tuple(t.shape)}, the model needs {tuple(shape)} (different rank or base?)")
    return t
