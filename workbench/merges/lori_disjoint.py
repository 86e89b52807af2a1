"""``lori_disjoint``: the exact sum of LoRI-S adapters that share A and have disjoint B masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.errors import MismatchError
from workbench.merges.checks import identical, label
from workbench.merges.params import NoParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    from workbench.adapters.adapter import Adapter
    from workbench.adapters.factors import ModuleFactors


def check_disjoint(adapters: list[Adapter], weights=None, params=None) -> None:
    """Every module must have the same A in all adapters and B supports (nonzero entries) that never overlap.

    Raises:
        MismatchError: names the first module whose A differs, or the first module whose supports overlap
            and the total number of overlapping entries.
    """
    import torch

    from workbench.merges.primitives import module_order

    first = adapters[0].factors()
    others = [a.factors() for a in adapters[1:]]
    for m, f in first.items():
        for a, fs in zip(adapters[1:], others):
            if not identical(f.A, fs[m].A):
                raise MismatchError(f"lori_disjoint needs one shared A per module: module {m} has a different "
                                    f"lora_A in {label(a)} than in {label(adapters[0])}")
    overlaps, first_key = 0, None
    for m in module_order(first):
        used = torch.zeros_like(first[m].B, dtype=torch.int32)
        for fs in [first] + others:
            used += (fs[m].B != 0).int()
        n = int((used > 1).sum())
        if n and first_key is None:
            first_key = m
        overlaps += n
    if overlaps:
        raise MismatchError(f"lori_disjoint needs disjoint B masks, but they overlap: first at module {first_key}, "
                            f"{overlaps} overlapping entries in all (use concat or svd for overlapping adapters)")


@register_merge("lori_disjoint", params=NoParams, reference="https://arxiv.org/abs/2504.07448", check=check_disjoint)
def lori_disjoint(factors: list[ModuleFactors], weights: list[float], params: NoParams,
                  ctx: MergeContext) -> ModuleFactors:
    """One adapter with the shared A and B = sum_i w_i B_i (exactly sum_i w_i dW_i, same rank, same sparsity).

    A weight multiplies that adapter's update (its masked part of B), as in ``concat``. Scalings that differ
    are folded into B relative to the first adapter's, which the output keeps.

    Args:
        factors: one ModuleFactors per adapter, identical A, disjoint B supports (checked beforehand).
        weights: one weight per adapter.
        params: none.
        ctx: unused.

    Returns:
        ModuleFactors(A, sum_i w_i (s_i / s_1) B_i, s_1).
    """
    from workbench.adapters.factors import ModuleFactors

    ref = factors[0].scaling or 1.0
    b = sum(f.B * (w * f.scaling / ref) for f, w in zip(factors, weights))  # (out, r)
    return ModuleFactors(factors[0].A, b, ref)
