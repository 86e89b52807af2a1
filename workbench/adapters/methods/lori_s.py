"""``lori_s``: LoRI with a sparse B (Zhang et al. 2025, arXiv:2504.07448).

As lori_d (A frozen from the seed), but B is trained only inside a mask calibrated from a LoRI-D adapter
(global magnitude, typically 90% sparsity). Entries outside the mask stay bitwise at their initial value
(zero, or an earlier task's value when continuing an adapter): see workbench/adapters/masked.py. Ours:
PEFT has no masked B.
"""

from workbench.adapters.factors import file_key
from workbench.adapters.masked import apply_mask
from workbench.adapters.method import Method, lora_layers
from workbench.adapters.registry import METHODS
from workbench.errors import MismatchError


class LoriS(Method):
    name = "lori_s"
    train_a = False
    uses_mask = True

    def set_trainable(self, pm, spec, mask) -> None:
        layers = lora_layers(pm)
        expected = {file_key(m, "B") for m in layers}
        missing, extra = sorted(expected - set(mask)), sorted(set(mask) - expected)
        if missing or extra:
            raise MismatchError(f"mask does not fit the adapter: missing {missing[:2]}, unexpected {extra[:2]}")
        for module, layer in layers.items():
            layer.lora_A["default"].weight.requires_grad_(False)
            apply_mask(layer.lora_B["default"], mask[file_key(module, "B")])


METHODS.add("lori_s", LoriS(), reference="https://arxiv.org/abs/2504.07448")
