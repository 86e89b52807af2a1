"""``concat``: stack the factors; the merged update is exactly sum_i w_i s_i B_i A_i."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workbench.merges.params import NoParams
from workbench.merges.registry import MergeContext, register_merge

if TYPE_CHECKING:  # torch only at call time: `workbench validate` lists strategies without it
    from workbench.adapters.factors import ModuleFactors


@register_merge("concat", params=NoParams, reference="https://huggingface.co/docs/peft/developer_guides/model_merging")
def concat(factors: list[ModuleFactors], weights: list[float], params: NoParams, ctx: MergeContext) -> ModuleFactors:
    """Concatenate: A = [A_1; ...; A_n], B = [w_1 s_1 B_1 | ... | w_n s_n B_n]; rank = sum of ranks.

    A weight multiplies that adapter's update and nothing else: no cross terms B_i A_j, no dense delta.
    The result equals PEFT's ``cat`` combination.

    Args:
        factors: one ModuleFactors per adapter (any ranks).
        weights: one weight per adapter.
        params: none.
        ctx: unused.

    Returns:
        ModuleFactors of rank sum_i r_i with scaling 1.
    """
    from workbench.merges.primitives import concat_factors
    return concat_factors(factors, weights)
