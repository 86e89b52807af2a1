"""``dora``: DoRA, weight-decomposed low-rank adaptation (Liu et al. 2024, arXiv:2402.09353).

Each adapted weight is split into a magnitude (one scalar per output row) and a direction:
``W' = m * (W + s B A) / ||W + s B A||_row``. LoRA adapts the direction; the magnitude vector ``m`` is a
trained parameter of its own, initialised to the row norms of ``W`` (so the adapter starts as the identity).

PEFT's: all of it (``LoraConfig(use_dora=True)``; the magnitude is saved as ``...lora_magnitude_vector``).
Ours: the seeded A (B stays zero, so PEFT's magnitude initialisation stays exact) and continuing a saved
DoRA adapter, magnitude included.

Note for merges and analytics: an adapter's ``factors()`` (B, A, scaling) are not the whole update of a
DoRA adapter; the magnitude rescales each row, so factor-space merges do not apply to it as they are.
"""

from workbench.adapters.method import Method, lora_layers
from workbench.adapters.peft_config import lora_config
from workbench.adapters.registry import register_method
from workbench.errors import MismatchError
from workbench.keys import PEFT_PREFIX


def magnitude_key(module: str) -> str:
    """``model.layers.0.self_attn.q_proj`` -> the magnitude vector's key in adapter_model.safetensors."""
    return f"{PEFT_PREFIX}{module}.lora_magnitude_vector"


class Dora(Method):
    name = "dora"
    train_a = True

    def peft_config(self, spec, base_name=None):
        return lora_config(rank=spec.rank, alpha=spec.alpha, target_modules=spec.target_modules,
                           dropout=spec.dropout, use_rslora=spec.use_rslora, use_dora=True, base_model=base_name)

    def init_weights(self, pm, spec, init) -> None:
        """A seeded and B zero as for LoRA; when continuing, the saved magnitude vectors too.

        Raises:
            MismatchError: the adapter to continue has no magnitude vector for a module (not a DoRA adapter).
        """
        import torch

        super().init_weights(pm, spec, init)
        if init is None:
            return
        with torch.no_grad():
            for module, layer in lora_layers(pm).items():
                key = magnitude_key(module)
                if key not in init.tensors:
                    raise MismatchError(f"{init.path or init.name}: no '{key}' (the adapter to continue is not DoRA)")
                layer.lora_magnitude_vector["default"].weight.copy_(init.tensors[key])

    def set_trainable(self, pm, spec, mask) -> None:
        super().set_trainable(pm, spec, mask)
        for layer in lora_layers(pm).values():
            layer.lora_magnitude_vector["default"].weight.requires_grad_(True)


register_method(Dora(), reference="https://arxiv.org/abs/2402.09353")
