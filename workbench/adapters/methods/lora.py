"""``lora``: plain LoRA (Hu et al. 2021, arXiv:2106.09685), PEFT's LoraLayer; A and B both trained.

A is initialised from the adapter seed (PEFT's kaiming-uniform distribution) so runs are reproducible.
"""

from workbench.adapters.method import Method
from workbench.adapters.registry import register_method


class Lora(Method):
    name = "lora"
    train_a = True


register_method(Lora(), reference="https://arxiv.org/abs/2106.09685")
