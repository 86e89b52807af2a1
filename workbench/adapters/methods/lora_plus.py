"""``lora_plus``: LoRA+ (Hayou et al. 2024, arXiv:2402.12354): B learns ``lr_ratio`` times faster than A.

The paper shows that with equal learning rates feature learning is inefficient in wide models; setting
``lr_B = lambda * lr_A`` (lambda around 16) fixes it at no cost. Options (``AdapterSpec.options``):

- ``lr_ratio`` (default 16): lambda.

The run's learning rate (``TrainConfig.lr``) is B's, as for every workbench method, and A gets
``lr / lr_ratio``; so switching ``lora`` -> ``lora_plus`` keeps B's step size and slows A. (PEFT's
``create_loraplus_optimizer`` takes A's rate instead; the ratio is the same.) An embedding target's A
(``lora_embedding_A``) is an A too: it is in the slow group.

PEFT's: the LoRA layers. Ours: the two parameter groups (built directly, so the loop keeps its one AdamW,
its schedule and its exact resume).
"""

from pydantic import Field

from workbench.adapters.method import Method, MethodOptions, factor_pairs
from workbench.adapters.registry import register_method


class LoraPlusOptions(MethodOptions):
    lr_ratio: float = Field(16.0, gt=0, description="B's learning rate over A's (lambda)")


class LoraPlus(Method):
    name = "lora_plus"
    train_a = True
    Options = LoraPlusOptions

    def param_groups(self, pm, spec, lr: float, weight_decay: float) -> list[dict]:
        """Two AdamW groups: every A at ``lr / lr_ratio``, B (and anything else trainable) at ``lr``.

        Raises:
            ConfigError: ``lr_ratio`` is not a number > 0.
        """
        ratio = self.options(spec).lr_ratio
        a_ids = {id(a) for a, _, _ in factor_pairs(pm).values()}
        trainable = [p for p in pm.parameters() if p.requires_grad]
        a_params = [p for p in trainable if id(p) in a_ids]
        rest = [p for p in trainable if id(p) not in a_ids]
        return [{"params": a_params, "lr": lr / ratio, "weight_decay": weight_decay, "name": "lora_A"},
                {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "lora_B"}]


register_method(LoraPlus(), reference="https://arxiv.org/abs/2402.12354")
