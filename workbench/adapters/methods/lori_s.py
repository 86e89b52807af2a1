"""``lori_s``: LoRI with a sparse B (Zhang et al. 2025, arXiv:2504.07448).

As lori_d (A frozen from the seed), but B is trained only inside a mask calibrated from a LoRI-D adapter
(global magnitude, typically 90% sparsity). Entries outside the mask stay bitwise at their initial value
(zero, or an earlier task's value when continuing an adapter): see workbench/adapters/masked.py. Ours:
PEFT has no masked B.

Masks cover the ``lora_B`` tensors of Linear layers only, so an ``embed_tokens`` target (an Embedding
LoRA layer) is refused: its factors would train outside every mask and break disjointness.
"""

from workbench.adapters.method import Method, embedding_layers, lora_layers
from workbench.adapters.registry import register_method
from workbench.errors import ConfigError, MismatchError
from workbench.keys import file_key


class LoriS(Method):
    name = "lori_s"
    train_a = False
    uses_mask = True

    def set_trainable(self, pm, spec, mask) -> None:
        """A frozen; each B re-parametrised so only its masked entries are parameters.

        Raises:
            ConfigError: an Embedding LoRA layer (``embed_tokens`` target), which no mask covers.
            MismatchError: the mask's keys are not the adapter's lora_B keys.
        """
        from workbench.adapters.masked import apply_mask

        embeddings = sorted(embedding_layers(pm))
        if embeddings:
            raise ConfigError(f"method 'lori_s' masks lora_B of Linear layers; target {embeddings[0]} is an "
                              "embedding (drop embed_tokens from target_modules)")
        layers = lora_layers(pm)
        expected = {file_key(m, "B") for m in layers}
        missing, extra = sorted(expected - set(mask)), sorted(set(mask) - expected)
        if missing or extra:
            raise MismatchError(f"mask does not fit the adapter: missing {missing[:2]}, unexpected {extra[:2]}")
        for module, layer in layers.items():
            layer.lora_A["default"].weight.requires_grad_(False)
            apply_mask(layer.lora_B["default"], mask[file_key(module, "B")])

    def sidecar(self, pm) -> dict:
        """``mask_kept``: the trained entries (the masked values), for :meth:`trainable`."""
        kept = 0
        for layer in lora_layers(pm).values():
            b = layer.lora_B["default"]
            if hasattr(b, "parametrizations"):
                kept += sum(p.values.numel() for p in b.parametrizations.weight)
        return {"mask_kept": kept}

    def trainable(self, adapter) -> int | None:
        """The masked entries of B (recorded as ``mask_kept``); None when the sidecar does not record it."""
        kept = adapter.meta.get("mask_kept")
        return int(kept) if kept is not None else None


register_method(LoriS(), reference="https://arxiv.org/abs/2504.07448")
