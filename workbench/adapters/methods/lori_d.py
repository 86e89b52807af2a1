"""``lori_d``: LoRI with a dense B (Zhang et al. 2025, arXiv:2504.07448).

A is a frozen random projection drawn from the adapter's seed (a per-task seed puts different tasks in
nearly orthogonal input subspaces); only B is trained. This is LoRA-FA with a per-task seeded A; its B
magnitudes are then calibrated into a sparse mask for LoRI-S. PEFT provides the layers; the seeded frozen
A is ours.
"""

from workbench.adapters.method import Method
from workbench.adapters.registry import register_method


class LoriD(Method):
    name = "lori_d"
    train_a = False


register_method(LoriD(), reference="https://arxiv.org/abs/2504.07448")
