"""A new adapter method in one file: ``lora_fa_boost``, LoRA-FA (A frozen) with B's learning rate scaled.

As a plugin: list this file under ``plugins:`` in a pipeline (``pipeline.yaml`` here) and run with
``--allow-plugins``. As a built-in: put the same file in ``workbench/adapters/methods/`` (found by scanning,
no list to edit); ``tests/test_method_contract.py`` runs every registered method through its invariants.
"""

from pydantic import Field

import workbench
from workbench.adapters.method import Method, MethodOptions


class BoostOptions(MethodOptions):
    b_lr_scale: float = Field(2.0, gt=0, description="B's learning rate is the run's lr times this")


class LoraFaBoost(Method):
    name = "lora_fa_boost"
    train_a = False  # A stays at its seeded init (as lora_fa / lori_d)
    Options = BoostOptions  # validated by `workbench validate` and `workbench train`: options.b_lr_scale

    def param_groups(self, pm, spec, lr: float, weight_decay: float) -> list[dict]:
        scale = self.options(spec).b_lr_scale
        params = [p for p in pm.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr * scale, "weight_decay": weight_decay, "name": "lora_B"}]


workbench.register_method(LoraFaBoost(), reference="examples/extending/method_plugin.py")
