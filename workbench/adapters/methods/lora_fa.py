"""``lora_fa``: LoRA-FA, LoRA with a frozen A (Zhang et al. 2023, arXiv:2308.03303).

A is drawn once (PEFT's kaiming-uniform distribution, from the adapter seed so the run is reproducible)
and never trained; only B is. Freezing A means the backward pass needs no input activations for A's
gradient, which is the memory saving the paper is after.

How it relates to LoRI: LoRI-D trains exactly these parameters; it is LoRA-FA with a *per-task* seeded A
(different tasks, different seeds, nearly orthogonal input subspaces), and LoRI-S adds a sparse mask on B.
So ``lora_fa`` and ``lori_d`` train the same way; the names say what the adapter is for.

PEFT's: the LoRA layers. Ours: the frozen seeded A. Not used: PEFT's ``LoraFAOptimizer`` (the paper's
later gradient-projection optimizer), because the workbench loop builds AdamW from :meth:`param_groups`.
"""

from workbench.adapters.method import Method
from workbench.adapters.registry import register_method


class LoraFA(Method):
    name = "lora_fa"
    train_a = False


register_method(LoraFA(), reference="https://arxiv.org/abs/2308.03303")
