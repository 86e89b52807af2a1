"""``lora_plus``: LoRA+ (Hayou et al. 2024, arXiv:2402.12354): B learns ``lr_ratio`` times faster than A.

The paper shows that with equal learning rates feature learning is inefficient in wide models; setting
``lr_B = lambda * lr_A`` (lambda around 16) fixes it at no cost. Options (``AdapterSpec.options``):

- ``lr_ratio`` (default 16): lambda.

The run's learning rate (``TrainConfig.lr``) is B's, as for every workbench method, and A gets
``lr / lr_ratio``; so switching ``lora`` -> ``lora_plus`` keeps B's step size and slows A. (PEFT's
``create_loraplus_optimizer`` takes A's rate instead; the ratio is the same.)

PEFT's: the LoRA layers. Ours: the two parameter groups (built directly, so the loop keeps its one AdamW,
its schedule and its exact resume).
"""

from workbench.adapters.method import Method, lora_layers
from workbench.adapters.registry import METHODS
from workbench.errors import ConfigError


class LoraPlus(Method):
    name = "lora_plus"
    train_a = True

    def param_groups(self, pm, spec, lr: float, weight_decay: float) -> list[dict]:
        """Two AdamW groups: A at ``lr / lr_ratio``, B (and anything else trainable) at ``lr``.

        Raises:
            ConfigError: ``lr_ratio`` is not a positive number.
        """
        ratio = spec.option("lr_ratio", 16.0)
        if not isinstance(ratio, (int, float)) or ratio <= 0:
            raise ConfigError(f"options.lr_ratio: must be a number > 0 (got {ratio!r})")
        a_ids = {id(layer.lora_A["default"].weight) for layer in lora_layers(pm).values()}
        trainable = [p for p in pm.parameters() if p.requires_grad]
        a_params = [p for p in trainable if id(p) in a_ids]
        rest = [p for p in trainable if id(p) not in a_ids]
        return [{"params": a_params, "lr": lr / ratio, "weight_decay": weight_decay, "name": "lora_A"},
                {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "lora_B"}]


METHODS.add("lora_plus", LoraPlus(), reference="https://arxiv.org/abs/2402.12354")
